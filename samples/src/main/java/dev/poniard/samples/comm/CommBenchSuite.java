package dev.poniard.samples.comm;

import dev.poniard.samples.bench.BenchOptions;
import dev.poniard.samples.bench.BenchResult;
import dev.poniard.samples.bench.BenchSuite;
import dev.poniard.scheduler.comm.launch.Launcher;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import java.util.ArrayList;
import java.util.Collections;
import java.util.List;
import java.util.function.Consumer;

/**
 * {@code ./poniard bench comm}: point-to-point latency, all-reduce / all-to-all / broadcast bus bandwidth and RMA
 * put latency between rank processes on this machine (Aeron IPC and shared memory). It starts its own ranks
 * ({@link BenchOptions#ranks()}, default 2) with the {@link Launcher}; rank 0 measures and reports. Bandwidth
 * cases run memcpy of the same bytes in the same run as the baseline (ratio = ours / memcpy); latency cases have
 * no baseline. Bus bandwidth follows nccl-tests: all-reduce 2(n-1)/n x bytes / time, all-to-all (n-1)/n x bytes /
 * time, broadcast bytes / time.
 */
public final class CommBenchSuite implements BenchSuite {
    private static final Logger LOG = LoggerFactory.getLogger(CommBenchSuite.class);
    static final String PREFIX = "BENCH|";

    @Override
    public String name() {
        return "comm";
    }

    @Override
    public String description() {
        return "Aeron communication: ping-pong latency, all-reduce/all-to-all/broadcast bus bandwidth, RMA put";
    }

    @Override
    public List<BenchResult> run(BenchOptions options, Consumer<BenchResult> progress) {
        final int ranks = options.ranks() > 0 ? options.ranks() : 2;
        if (ranks < 2) {
            throw new IllegalArgumentException("the comm suite needs at least 2 ranks, got " + ranks);
        }
        final List<BenchResult> results = Collections.synchronizedList(new ArrayList<>());
        final List<String> tail = Collections.synchronizedList(new ArrayList<>());
        final Launcher.Context ctx = new Launcher.Context()
            .ranks(ranks)
            .command(Launcher.javaCommand(CommBenchRank.class.getName(), List.of(options.quick() ? "quick" : "full")))
            .output(line -> {
                final int at = line.indexOf(PREFIX);
                if (line.startsWith("[rank 0] ") && at >= 0) {
                    final BenchResult r = parse(line.substring(at + PREFIX.length()));
                    results.add(r);
                    progress.accept(r);
                } else {
                    LOG.debug("{}", line);
                    tail.add(line);
                    if (tail.size() > 40) {
                        tail.remove(0);
                    }
                }
            });
        final int status;
        try (Launcher launcher = Launcher.launch(ctx)) {
            status = launcher.waitFor();
        }
        if (status != 0) {
            throw new IllegalStateException("comm benchmark ranks failed with status " + status + ":\n"
                + String.join("\n", tail));
        }
        return new ArrayList<>(results);
    }

    static String format(BenchResult r) {
        return PREFIX + r.caseName() + "|" + r.metric() + "|" + r.unit() + "|" + r.value() + "|"
            + (r.baseline() == null ? "" : r.baseline()) + "|" + r.baselineValue();
    }

    static BenchResult parse(String s) {
        final String[] f = s.split("\\|", -1);
        if (f.length != 6) {
            throw new IllegalArgumentException("bad benchmark line: " + s);
        }
        final double value = Double.parseDouble(f[3]);
        if (f[4].isEmpty()) {
            return BenchResult.standalone(f[0], f[1], f[2], value);
        }
        return BenchResult.higherIsBetter(f[0], f[1], f[2], value, f[4], Double.parseDouble(f[5]));
    }
}
