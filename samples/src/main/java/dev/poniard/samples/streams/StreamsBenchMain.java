package dev.poniard.samples.streams;

import dev.poniard.samples.bench.BenchOptions;
import dev.poniard.samples.bench.BenchReport;
import dev.poniard.samples.bench.BenchResult;
import java.nio.file.Path;
import java.util.List;

/**
 * The streams benchmark without the rest of the command line, for the GPU bundle (which carries only the
 * scheduler, this jar and JCuda, not DL4J):
 * {@code StreamsBenchMain [--quick] [--gpu-only] [--json FILE] [--timelines DIR]}.
 * Same cases and JSON as {@code ./poniard bench streams}.
 */
public final class StreamsBenchMain {
    private StreamsBenchMain() {
    }

    public static void main(String[] args) throws Exception {
        boolean quick = false, gpuOnly = false;
        Path json = null;
        Path timelines = null;
        for (int i = 0; i < args.length; i++) {
            switch (args[i]) {
                case "--quick":
                    quick = true;
                    break;
                case "--gpu-only":
                    gpuOnly = true;
                    break;
                case "--json":
                    if (i + 1 == args.length) {
                        usage("--json needs a FILE");
                    }
                    json = Path.of(args[++i]);
                    break;
                case "--timelines":
                    if (i + 1 == args.length) {
                        usage("--timelines needs a DIR");
                    }
                    timelines = Path.of(args[++i]);
                    break;
                default:
                    usage("unknown option '" + args[i] + "'");
            }
        }
        StreamsBenchSuite suite = new StreamsBenchSuite(!gpuOnly, true);
        System.out.println("bench streams" + (quick ? " (quick)" : "") + ": " + suite.description());
        System.out.println(BenchReport.header());
        List<BenchResult> results = suite.run(new BenchOptions(quick, 1, timelines),
                r -> System.out.println(BenchReport.row(r)));
        if (json != null) {
            BenchReport.writeJson(suite.name(), results, json);
            System.out.println("wrote " + json);
        }
    }

    private static void usage(String problem) {
        System.err.println("streams bench: " + problem + "; usage: StreamsBenchMain [--quick] [--gpu-only]"
                + " [--json FILE] [--timelines DIR]");
        System.exit(2);
    }
}
