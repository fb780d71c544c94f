package dev.poniard.samples.cli;

import dev.poniard.scheduler.DataDeps;
import dev.poniard.scheduler.Scheduler;
import dev.poniard.scheduler.TaskOptions;
import java.io.PrintWriter;
import java.nio.file.Path;
import java.util.Random;
import java.util.concurrent.Callable;
import picocli.CommandLine;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;

/**
 * {@code ./poniard demo}: a blocked matrix multiply written as a data-dependency region on the scheduler,
 * checked against a plain triple loop, with the run's summary and an optional timeline.
 */
@Command(name = "demo", mixinStandardHelpOptions = true,
        description = "Runs a tiled matrix multiply as a DataDeps region on the scheduler and prints its summary.")
public final class DemoCommand implements Callable<Integer> {
    @Option(names = "--n", defaultValue = "768", description = "Matrix size (default: ${DEFAULT-VALUE}).")
    int n;

    @Option(names = "--tile", defaultValue = "128", description = "Tile size (default: ${DEFAULT-VALUE}).")
    int tile;

    @Option(names = "--workers", description = "Worker threads (default: one per core).")
    Integer workers;

    @Option(names = "--trace", paramLabel = "FILE", description = "Write a Chrome trace (open in Perfetto).")
    Path trace;

    @CommandLine.Spec
    CommandLine.Model.CommandSpec spec;

    @Override
    public Integer call() throws Exception {
        if (n < 1 || tile < 1) {
            throw new CommandLine.ParameterException(spec.commandLine(), "--n and --tile must be >= 1");
        }
        PrintWriter out = spec.commandLine().getOut();
        int t = (n + tile - 1) / tile;
        Random rnd = new Random(1);
        double[][][] a = tiles(t, rnd), b = tiles(t, rnd), c = new double[t * t][][];
        for (int i = 0; i < c.length; i++) {
            c[i] = new double[][] {new double[tileRows(i / t) * tileRows(i % t)]};
        }
        Scheduler.Context ctx = new Scheduler.Context().name("demo").trace(true);
        if (workers != null) {
            ctx.workers(workers);
        }
        try (Scheduler s = Scheduler.launch(ctx)) {
            TaskOptions gemm = TaskOptions.named("gemm");
            try (DataDeps region = s.dataDeps()) {
                for (int i = 0; i < t; i++) {
                    for (int j = 0; j < t; j++) {
                        for (int k = 0; k < t; k++) {
                            int ri = tileRows(i), rj = tileRows(j), rk = tileRows(k);
                            region.spawn(gemm, args -> {
                                multiplyAdd((double[]) args[0], (double[]) args[1], (double[]) args[2], ri, rk, rj);
                                return null;
                            }, DataDeps.in(a[i * t + k][0]), DataDeps.in(b[k * t + j][0]), DataDeps.inout(c[i * t + j][0]));
                        }
                    }
                }
            }
            double err = maxError(a, b, c, t);
            out.printf("tiled multiply n=%d tile=%d: %d tasks, max error vs. a plain loop %.2e%n", n, tile, t * t * t, err);
            out.print(s.summary());
            if (trace != null) {
                s.trace().writeChromeJson(trace);
                out.println("trace written to " + trace + " (open it in https://ui.perfetto.dev)");
            }
            return err < 1e-9 * n ? 0 : 1;
        }
    }

    private int tileRows(int i) {
        return Math.min(tile, n - i * tile);
    }

    private double[][][] tiles(int t, Random rnd) {
        double[][][] m = new double[t * t][][];
        for (int i = 0; i < t; i++) {
            for (int j = 0; j < t; j++) {
                double[] d = new double[tileRows(i) * tileRows(j)];
                for (int k = 0; k < d.length; k++) {
                    d[k] = rnd.nextDouble() - 0.5;
                }
                m[i * t + j] = new double[][] {d};
            }
        }
        return m;
    }

    /** c (m×n) += a (m×k) · b (k×n), row-major tiles. */
    private static void multiplyAdd(double[] a, double[] b, double[] c, int m, int k, int n) {
        for (int i = 0; i < m; i++) {
            for (int p = 0; p < k; p++) {
                double x = a[i * k + p];
                int bo = p * n, co = i * n;
                for (int j = 0; j < n; j++) {
                    c[co + j] += x * b[bo + j];
                }
            }
        }
    }

    private double maxError(double[][][] a, double[][][] b, double[][][] c, int t) {
        double worst = 0;
        Random pick = new Random(2);
        for (int sample = 0; sample < 200; sample++) {
            int r = pick.nextInt(n), col = pick.nextInt(n);
            double expect = 0;
            for (int k = 0; k < n; k++) {
                expect += at(a, t, r, k) * at(b, t, k, col);
            }
            worst = Math.max(worst, Math.abs(expect - at(c, t, r, col)));
        }
        return worst;
    }

    private double at(double[][][] m, int t, int r, int c) {
        int ti = r / tile, tj = c / tile;
        return m[ti * t + tj][0][(r % tile) * tileRows(tj) + (c % tile)];
    }
}
