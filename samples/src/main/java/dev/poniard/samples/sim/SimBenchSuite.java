package dev.poniard.samples.sim;

import dev.poniard.samples.bench.BenchOptions;
import dev.poniard.samples.bench.BenchResult;
import dev.poniard.samples.bench.BenchSuite;
import dev.poniard.scheduler.PlacementPolicy;
import dev.poniard.scheduler.Scheduler;
import dev.poniard.scheduler.sim.SimDag;
import dev.poniard.scheduler.sim.SimResult;
import dev.poniard.scheduler.sim.VirtualCluster;
import dev.poniard.scheduler.sim.Workloads;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Random;
import java.util.function.Consumer;

/**
 * {@code ./poniard bench sim}: the simulator's predictions against runs measured on this machine in the
 * same process (issue #9), and the simulator's own speed.
 */
public final class SimBenchSuite implements BenchSuite {
    @Override
    public String name() {
        return "sim";
    }

    @Override
    public String description() {
        return "simulator predictions vs measured runs (predicted/measured, target 0.85-1.15) and events per second";
    }

    @Override
    public List<BenchResult> run(BenchOptions options, Consumer<BenchResult> progress) throws Exception {
        List<BenchResult> results = new ArrayList<>();
        BenchResult r = validateImbalancedWork(options.quick() ? 2_000 : 10_000);
        results.add(r);
        progress.accept(r);
        r = eventsPerSecond(options.quick() ? 32 : 64);
        results.add(r);
        progress.accept(r);
        return results;
    }

    /**
     * Runs heavy-tailed busy tasks on the real scheduler (2 workers), then simulates the same tasks with
     * their measured durations on a virtual 2-core node under the same policy.
     */
    static BenchResult validateImbalancedWork(int tasks) {
        int workers = 2;
        long[] durations = paretoDurations(tasks, 42);
        long[] measured = new long[tasks];
        double best = Double.MAX_VALUE;
        double predictedAtBest = 0;
        try (Scheduler s = Scheduler.launch(new Scheduler.Context().name("validate").workers(workers))) {
            for (int round = 0; round < 3; round++) {
                long start = System.nanoTime();
                for (int i = 0; i < tasks; i++) {
                    int k = i;
                    s.spawn(() -> {
                        long t0 = System.nanoTime();
                        long end = t0 + durations[k];
                        long now;
                        do {
                            now = System.nanoTime();
                        } while (now < end);
                        measured[k] = now - t0;
                        return null;
                    });
                }
                if (!s.awaitQuiescence(Duration.ofMinutes(5))) {
                    throw new IllegalStateException("validate_imbalanced_work did not finish");
                }
                double makespan = System.nanoTime() - start;
                SimDag dag = new SimDag();
                for (long m : measured) {
                    dag.task("busy", m, 0);
                }
                double predicted = Studies.simulate(VirtualCluster.cpuNode(workers), PlacementPolicy.eft(), dag, false,
                        false).makespanNs();
                if (makespan < best) {
                    best = makespan;
                    predictedAtBest = predicted;
                }
            }
        }
        return BenchResult.standalone("validate_imbalanced_work", "predicted_over_measured", "x", predictedAtBest / best);
    }

    /** Heavy-tailed task durations: Pareto(α = 1.5) with a mean of about 50 us, capped at 20 ms. */
    static long[] paretoDurations(int tasks, long seed) {
        Random rnd = new Random(seed);
        long[] d = new long[tasks];
        for (int i = 0; i < tasks; i++) {
            d[i] = (long) Math.min(17_000 / Math.pow(1 - rnd.nextDouble(), 1 / 1.5), 20_000_000);
        }
        return d;
    }

    /** Simulates the Cholesky study's DAG (N = 1024 · tiles) on 64 nodes and reports events per second. */
    static BenchResult eventsPerSecond(int tiles) {
        SimDag dag = Workloads.tileCholesky(tiles * 1024, 1024, 8, 8, 1000);
        VirtualCluster cluster = Studies.choleskyCluster(64);
        Studies.simulate(cluster, PlacementPolicy.eft(), dag, true, false); // warm up the JIT
        double best = 0;
        for (int i = 0; i < 3; i++) {
            SimResult r = Studies.simulate(cluster, PlacementPolicy.eft(), dag, true, false);
            best = Math.max(best, r.eventsPerSecond());
        }
        return BenchResult.standalone("sim_events_per_second", "events_per_second", "1/s", best);
    }
}
