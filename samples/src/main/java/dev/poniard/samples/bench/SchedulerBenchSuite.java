package dev.poniard.samples.bench;

import dev.poniard.scheduler.Scheduler;
import dev.poniard.scheduler.TaskHandle;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Random;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.ForkJoinPool;
import java.util.concurrent.TimeUnit;
import java.util.function.Consumer;
import java.util.function.LongSupplier;

/**
 * {@code ./poniard bench scheduler}: the scheduler's per-task overhead and load balance against the JDK's
 * executors, measured in the same run (issue #2). Each case alternates ours and the baseline over the same
 * number of repetitions after a warm-up, and reports medians.
 */
public final class SchedulerBenchSuite implements BenchSuite {
    private static final long SEED = 42;

    @Override
    public String name() {
        return "scheduler";
    }

    @Override
    public String description() {
        return "per-task overhead (independent, chain, random DAG, fan-out/in) and load balance (imbalanced work)";
    }

    @Override
    public List<BenchResult> run(BenchOptions options, Consumer<BenchResult> progress) throws Exception {
        int workers = Runtime.getRuntime().availableProcessors();
        int reps = options.quick() ? 3 : 7;
        List<BenchResult> results = new ArrayList<>();
        try (Scheduler s = Scheduler.launch(new Scheduler.Context().name("bench").workers(workers))) {
            ForkJoinPool fjp = new ForkJoinPool(workers);
            ExecutorService exec = Executors.newFixedThreadPool(workers, r -> {
                Thread t = new Thread(r, "bench-baseline");
                t.setDaemon(true);
                return t;
            });
            try {
                int n = 1_000_000;
                double[] us = pairedMedianUs(reps, n, () -> independentOurs(s, n), () -> independentFjp(fjp, n));
                add(results, progress, BenchResult.lowerIsBetter("independent_1m", "us_per_task", "us",
                        us[0], "ForkJoinPool.execute", us[1]));

                int chain = 100_000;
                us = pairedMedianUs(reps, chain, () -> chainOurs(s, chain), () -> chainCf(exec, chain));
                add(results, progress, BenchResult.lowerIsBetter("chain_100k", "us_per_task", "us",
                        us[0], "CompletableFuture.thenApplyAsync", us[1]));

                int dag = 100_000;
                int[][] graph = randomDag(dag, new Random(SEED));
                long expected = dagSequential(graph);
                us = pairedMedianUs(reps, dag, () -> check(expected, dagOurs(s, graph)),
                        () -> check(expected, dagCf(exec, graph)));
                add(results, progress, BenchResult.lowerIsBetter("random_dag_100k", "us_per_task", "us",
                        us[0], "CompletableFuture.allOf+thenApplyAsync", us[1]));

                int fan = 10_000;
                us = pairedMedianUs(reps * 5, fan + 2, () -> check(fan * 2L, fanOurs(s, fan)),
                        () -> check(fan * 2L, fanCf(exec, fan)));
                add(results, progress, BenchResult.lowerIsBetter("fan_out_in", "us_per_task", "us",
                        us[0], "CompletableFuture.allOf+thenApplyAsync", us[1]));

                int tasks = options.quick() ? 2_000 : 10_000;
                double ours = imbalanced(tasks, workers, (durations, times) -> imbalancedOurs(s, durations, times));
                double base = imbalanced(tasks, workers, (durations, times) -> imbalancedFjp(fjp, durations, times));
                add(results, progress, BenchResult.lowerIsBetter("imbalanced_work", "makespan_over_lower_bound", "x",
                        ours, "ForkJoinPool.execute", base));
            } finally {
                fjp.shutdownNow();
                exec.shutdownNow();
            }
        }
        return results;
    }

    private static void add(List<BenchResult> results, Consumer<BenchResult> progress, BenchResult r) {
        results.add(r);
        progress.accept(r);
    }

    /**
     * Medians over {@code reps} runs of microseconds per task of Poniard and of the baseline, after warming both up
     * for 0.5 s each. The runs alternate, so that a disturbance of this shared machine (another process, a burst of
     * fresh-page faults while the heap grows: ~13 us per page on these VMs) falls on both sides alike.
     */
    private static double[] pairedMedianUs(int reps, int tasksPerRun, LongSupplier ours, LongSupplier baseline) {
        warm(ours);
        warm(baseline);
        double[] a = new double[reps], b = new double[reps];
        for (int i = 0; i < reps; i++) {
            a[i] = ours.getAsLong() / 1e3 / tasksPerRun;
            b[i] = baseline.getAsLong() / 1e3 / tasksPerRun;
        }
        Arrays.sort(a);
        Arrays.sort(b);
        return new double[] {a[reps / 2], b[reps / 2]};
    }

    private static void warm(LongSupplier run) {
        long warm = 0;
        for (int i = 0; i < 2 || warm < 500_000_000L; i++) {
            warm += run.getAsLong();
        }
    }

    private static long check(long expected, long[] nanosAndValue) {
        if (nanosAndValue[1] != expected) {
            throw new IllegalStateException("benchmark computed " + nanosAndValue[1] + ", expected " + expected);
        }
        return nanosAndValue[0];
    }

    // ---- independent_1m -------------------------------------------------------------------------

    private static long independentOurs(Scheduler s, int n) {
        long start = System.nanoTime();
        for (int i = 0; i < n; i++) {
            s.spawn(() -> null);
        }
        if (!s.awaitQuiescence(Duration.ofMinutes(5))) {
            throw new IllegalStateException("independent_1m did not finish");
        }
        return System.nanoTime() - start;
    }

    private static long independentFjp(ForkJoinPool fjp, int n) {
        Runnable noop = () -> { };
        long start = System.nanoTime();
        for (int i = 0; i < n; i++) {
            fjp.execute(noop);
        }
        awaitQuiescent(fjp, "independent_1m");
        return System.nanoTime() - start;
    }

    /**
     * Waits like {@link Scheduler#awaitQuiescence}: polling with back-off. {@code ForkJoinPool.awaitQuiescence}
     * would make the waiting thread run tasks too — a third busy thread on two workers, which would flatter
     * the baseline's throughput and inflate its measured task times.
     */
    private static void awaitQuiescent(ForkJoinPool fjp, String caseName) {
        long deadline = System.nanoTime() + TimeUnit.MINUTES.toNanos(5);
        long pause = 10_000;
        while (!fjp.isQuiescent()) {
            if (System.nanoTime() > deadline) {
                throw new IllegalStateException(caseName + " baseline did not finish");
            }
            java.util.concurrent.locks.LockSupport.parkNanos(pause);
            pause = Math.min(pause * 2, 1_000_000);
        }
    }

    // ---- chain_100k -----------------------------------------------------------------------------

    private static long chainOurs(Scheduler s, int n) {
        long start = System.nanoTime();
        TaskHandle<Long> h = s.spawn(() -> 0L);
        for (int i = 0; i < n - 1; i++) {
            h = s.spawn((Long x) -> x + 1, h);
        }
        long v = h.join();
        long t = System.nanoTime() - start;
        return check(n - 1, new long[] {t, v});
    }

    private static long chainCf(ExecutorService exec, int n) {
        long start = System.nanoTime();
        CompletableFuture<Long> f = CompletableFuture.supplyAsync(() -> 0L, exec);
        for (int i = 0; i < n - 1; i++) {
            f = f.thenApplyAsync(x -> x + 1, exec);
        }
        long v = f.join();
        long t = System.nanoTime() - start;
        return check(n - 1, new long[] {t, v});
    }

    // ---- random_dag_100k ------------------------------------------------------------------------

    /** Each task has 0..4 inputs among the 64 tasks before it (so the DAG has parallelism to find). */
    private static int[][] randomDag(int n, Random rnd) {
        int[][] inputs = new int[n][];
        for (int i = 0; i < n; i++) {
            int k = i == 0 ? 0 : rnd.nextInt(Math.min(i, 4) + 1);
            inputs[i] = new int[k];
            for (int j = 0; j < k; j++) {
                inputs[i][j] = i - 1 - rnd.nextInt(Math.min(i, 64));
            }
        }
        return inputs;
    }

    private static long mix(long a, long b) {
        return a * 31 + (b ^ (b >>> 7));
    }

    private static long dagSequential(int[][] g) {
        long[] v = new long[g.length];
        long sum = 0;
        for (int i = 0; i < g.length; i++) {
            long x = i;
            for (int d : g[i]) {
                x = mix(x, v[d]);
            }
            v[i] = x;
            sum += x;
        }
        return sum;
    }

    private static long[] dagOurs(Scheduler s, int[][] g) {
        long start = System.nanoTime();
        @SuppressWarnings("unchecked")
        TaskHandle<Long>[] h = new TaskHandle[g.length];
        for (int i = 0; i < g.length; i++) {
            Object[] args = new Object[g[i].length + 1];
            args[0] = (long) i;
            for (int j = 0; j < g[i].length; j++) {
                args[j + 1] = h[g[i][j]];
            }
            h[i] = s.spawnN(a -> {
                long x = (Long) a[0];
                for (int j = 1; j < a.length; j++) {
                    x = mix(x, (Long) a[j]);
                }
                return x;
            }, args);
        }
        long sum = 0;
        for (TaskHandle<Long> t : h) {
            sum += t.join();
        }
        return new long[] {System.nanoTime() - start, sum};
    }

    private static long[] dagCf(ExecutorService exec, int[][] g) {
        long start = System.nanoTime();
        @SuppressWarnings("unchecked")
        CompletableFuture<Long>[] f = new CompletableFuture[g.length];
        for (int i = 0; i < g.length; i++) {
            int[] in = g[i];
            long self = i;
            CompletableFuture<?>[] deps = new CompletableFuture<?>[in.length];
            for (int j = 0; j < in.length; j++) {
                deps[j] = f[in[j]];
            }
            f[i] = CompletableFuture.allOf(deps).thenApplyAsync(ignored -> {
                long x = self;
                for (int d : in) {
                    x = mix(x, f[d].join());
                }
                return x;
            }, exec);
        }
        long sum = 0;
        for (CompletableFuture<Long> t : f) {
            sum += t.join();
        }
        return new long[] {System.nanoTime() - start, sum};
    }

    // ---- fan_out_in -----------------------------------------------------------------------------

    private static long[] fanOurs(Scheduler s, int n) {
        long start = System.nanoTime();
        TaskHandle<Long> root = s.spawn(() -> 1L);
        Object[] leaves = new Object[n];
        for (int i = 0; i < n; i++) {
            leaves[i] = s.spawn((Long x) -> x + 1, root);
        }
        long v = s.spawnN(a -> {
            long sum = 0;
            for (Object o : a) {
                sum += (Long) o;
            }
            return sum;
        }, leaves).join();
        return new long[] {System.nanoTime() - start, v};
    }

    private static long[] fanCf(ExecutorService exec, int n) {
        long start = System.nanoTime();
        CompletableFuture<Long> root = CompletableFuture.supplyAsync(() -> 1L, exec);
        @SuppressWarnings("unchecked")
        CompletableFuture<Long>[] leaves = new CompletableFuture[n];
        for (int i = 0; i < n; i++) {
            leaves[i] = root.thenApplyAsync(x -> x + 1, exec);
        }
        long v = CompletableFuture.allOf(leaves).thenApplyAsync(ignored -> {
            long sum = 0;
            for (CompletableFuture<Long> l : leaves) {
                sum += l.join();
            }
            return sum;
        }, exec).join();
        return new long[] {System.nanoTime() - start, v};
    }

    // ---- imbalanced_work ------------------------------------------------------------------------

    interface ImbalancedRun {
        /** Runs busy-work tasks of the given durations, records each one's measured time, returns makespan. */
        long run(long[] durationsNs, long[] measuredNs);
    }

    /** Makespan over max(total measured task time / workers, longest task), median of 3 runs. */
    private static double imbalanced(int tasks, int workers, ImbalancedRun run) {
        Random rnd = new Random(SEED);
        long[] durations = new long[tasks];
        double xm = 17_000; // ns; Pareto(alpha = 1.5) has mean 3 xm, about 50 us
        for (int i = 0; i < tasks; i++) {
            double u = 1 - rnd.nextDouble();
            durations[i] = (long) Math.min(xm / Math.pow(u, 1 / 1.5), 20_000_000);
        }
        double[] ratios = new double[3];
        for (int r = 0; r < ratios.length; r++) {
            long[] measured = new long[tasks];
            long makespan = run.run(durations, measured);
            long total = 0, longest = 0;
            for (long m : measured) {
                total += m;
                longest = Math.max(longest, m);
            }
            double bound = Math.max(total / (double) workers, longest);
            ratios[r] = makespan / bound;
        }
        Arrays.sort(ratios);
        return ratios[1];
    }

    private static void busy(long ns, long[] measured, int i) {
        long start = System.nanoTime();
        long end = start + ns;
        long now;
        do {
            now = System.nanoTime();
        } while (now < end);
        measured[i] = now - start;
    }

    private static long imbalancedOurs(Scheduler s, long[] durations, long[] measured) {
        long start = System.nanoTime();
        for (int i = 0; i < durations.length; i++) {
            int k = i;
            s.spawn(() -> {
                busy(durations[k], measured, k);
                return null;
            });
        }
        if (!s.awaitQuiescence(Duration.ofMinutes(5))) {
            throw new IllegalStateException("imbalanced_work did not finish");
        }
        return System.nanoTime() - start;
    }

    private static long imbalancedFjp(ForkJoinPool fjp, long[] durations, long[] measured) {
        long start = System.nanoTime();
        for (int i = 0; i < durations.length; i++) {
            int k = i;
            fjp.execute(() -> busy(durations[k], measured, k));
        }
        awaitQuiescent(fjp, "imbalanced_work");
        return System.nanoTime() - start;
    }
}
