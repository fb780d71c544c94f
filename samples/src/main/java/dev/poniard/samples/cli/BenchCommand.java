package dev.poniard.samples.cli;

import dev.poniard.samples.bench.BenchOptions;
import dev.poniard.samples.bench.BenchReport;
import dev.poniard.samples.bench.BenchResult;
import dev.poniard.samples.bench.BenchSuite;
import dev.poniard.samples.bench.SchedulerBenchSuite;
import dev.poniard.samples.comm.CommBenchSuite;
import dev.poniard.samples.linalg.LinalgBenchSuite;
import dev.poniard.samples.moe.MoeBenchSuite;
import dev.poniard.samples.streams.StreamsBenchSuite;
import dev.poniard.samples.sim.SimBenchSuite;
import dev.poniard.samples.trainer.TrainerBenchSuite;
import java.io.PrintWriter;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.concurrent.Callable;
import picocli.CommandLine;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;
import picocli.CommandLine.Parameters;

/** {@code ./poniard bench <suite> [--quick] [--json FILE]}: runs a benchmark suite against its baselines. */
@Command(name = "bench", mixinStandardHelpOptions = true,
        description = {"Runs a benchmark suite; every case runs Poniard and its baseline side by side.",
                "ratio = ours over the baseline in the metric's better direction (> 1: Poniard is better)."})
public final class BenchCommand implements Callable<Integer> {
    /** Suites by name, in the order `--help` lists them. */
    static Map<String, BenchSuite> suites() {
        Map<String, BenchSuite> m = new LinkedHashMap<>();
        for (BenchSuite s : List.<BenchSuite>of(new SchedulerBenchSuite(), new CommBenchSuite(), new LinalgBenchSuite(), new StreamsBenchSuite(), new TrainerBenchSuite(),
                new MoeBenchSuite(), new SimBenchSuite(), new dev.poniard.samples.pipeline.PipelineBenchSuite())) {
            m.put(s.name(), s);
        }
        return m;
    }

    @Parameters(index = "0", paramLabel = "SUITE", description = "Suite to run: ${COMPLETION-CANDIDATES}",
            completionCandidates = SuiteNames.class)
    String suite;

    @Option(names = "--quick", description = "Smaller sizes and fewer repetitions (CI, a first look).")
    boolean quick;

    @Option(names = "--json", paramLabel = "FILE", description = "Also write the results as JSON to FILE.")
    Path json;

    @Option(names = "--ranks", paramLabel = "N", defaultValue = "2",
            description = "Ranks for suites that start their own processes (default: ${DEFAULT-VALUE}).")
    int ranks;

    @Option(names = "--timelines", paramLabel = "DIR",
            description = "Write the timelines a suite keeps to DIR (streams: the device's streams in its tile cases).")
    Path timelines;

    @CommandLine.Spec
    CommandLine.Model.CommandSpec spec;

    static final class SuiteNames extends ArrayList<String> {
        private static final long serialVersionUID = 1L;

        SuiteNames() {
            super(suites().keySet());
        }
    }

    @Override
    public Integer call() throws Exception {
        Map<String, BenchSuite> all = suites();
        BenchSuite s = all.get(suite);
        if (s == null) {
            throw new CommandLine.ParameterException(spec.commandLine(),
                    "unknown suite '" + suite + "'; available: " + String.join(", ", all.keySet()));
        }
        if (ranks < 1) {
            throw new CommandLine.ParameterException(spec.commandLine(), "--ranks must be >= 1, got " + ranks);
        }
        PrintWriter out = spec.commandLine().getOut();
        out.printf(Locale.ROOT, "bench %s%s: %s%n", s.name(), quick ? " (quick)" : "", s.description());
        out.println(header());
        out.flush();
        List<BenchResult> results = s.run(new BenchOptions(quick, ranks, timelines), r -> {
            out.println(row(r));
            out.flush();
        });
        if (json != null) {
            writeJson(s.name(), results, json);
            out.println("wrote " + json);
        }
        return 0;
    }

    static String header() {
        return BenchReport.header();
    }

    static String row(BenchResult r) {
        return BenchReport.row(r);
    }

    static void writeJson(String suite, List<BenchResult> results, Path file) throws java.io.IOException {
        BenchReport.writeJson(suite, results, file);
    }
}
