package dev.poniard.samples.sim;

import dev.poniard.samples.bench.BenchOptions;
import dev.poniard.samples.bench.BenchResult;
import dev.poniard.samples.bench.BenchSuite;
import dev.poniard.scheduler.PlacementPolicy;
import dev.poniard.scheduler.Scheduler;
import dev.poniard.linalg.DType;
import dev.poniard.linalg.DistributedMatrix;
import dev.poniard.linalg.TileAlgebra;
import dev.poniard.scheduler.Scope;
import dev.poniard.scheduler.Trace;
import dev.poniard.scheduler.comm.Algorithm;
import dev.poniard.scheduler.comm.CostModel;
import dev.poniard.scheduler.comm.DataType;
import dev.poniard.scheduler.comm.LocalCluster;
import dev.poniard.scheduler.comm.ReduceOp;
import dev.poniard.scheduler.sim.LinkSpec;
import dev.poniard.scheduler.sim.SimDag;
import dev.poniard.scheduler.sim.Simulator;
import dev.poniard.scheduler.sim.SimResult;
import dev.poniard.scheduler.sim.VirtualCluster;
import dev.poniard.scheduler.sim.Workloads;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.time.Duration;
import java.util.HashMap;
import java.util.Map;
import java.util.ArrayList;
import java.util.Arrays;
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
        r = validateCholesky(options.quick() ? 1536 : 3072, 256);
        results.add(r);
        progress.accept(r);
        r = validateAllReduce(options.quick() ? 4 << 20 : 16 << 20);
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

    /**
     * Factors an SPD matrix with the tile Cholesky on 2 workers, fits each kernel's time from the run's own
     * trace (the learned-cost-model way), then predicts the makespan of the same DAG on a virtual 2-core
     * node with the same policy and critical-path priorities.
     */
    static BenchResult validateCholesky(int n, int tile) {
        double bestMeasured = Double.MAX_VALUE, predictedAtBest = 0;
        try (TileAlgebra algebra = TileAlgebra.launch(new TileAlgebra.Context().workers(2).trace(true))) {
            for (int round = 0; round < 3; round++) {
                try (DistributedMatrix a = DistributedMatrix.spd(DType.F64, n, tile, 7)) {
                    algebra.scheduler().resetStats();
                    algebra.cholesky(a);
                    Trace trace = algebra.scheduler().trace();
                    double measured = trace.makespanNs();
                    Map<String, double[]> perKernel = new HashMap<>();
                    for (Trace.TaskRecord rec : trace.records()) {
                        String kernel = rec.name().replaceAll("[^a-z].*$", "");
                        double[] sumCount = perKernel.computeIfAbsent(kernel, x -> new double[2]);
                        sumCount[0] += rec.durationNs();
                        sumCount[1]++;
                    }
                    Workloads.CholeskyKernels kernels = new Workloads.CholeskyKernels(mean(perKernel, "potrf"),
                            mean(perKernel, "trsm"), mean(perKernel, "syrk"), mean(perKernel, "gemm"));
                    SimDag dag = Workloads.tileCholesky(n, tile, kernels, 0, (i, j) -> Scope.any());
                    double predicted = Studies.simulate(VirtualCluster.cpuNode(2), PlacementPolicy.eft(), dag, true,
                            false).makespanNs();
                    if (measured < bestMeasured) {
                        bestMeasured = measured;
                        predictedAtBest = predicted;
                    }
                }
            }
        }
        return BenchResult.standalone("validate_cholesky_1proc", "predicted_over_measured", "x",
                predictedAtBest / bestMeasured);
    }

    private static double mean(Map<String, double[]> perKernel, String kernel) {
        double[] sc = perKernel.get(kernel);
        if (sc == null) {
            throw new IllegalStateException("the Cholesky trace has no " + kernel + " task: " + perKernel.keySet());
        }
        return sc[0] / sc[1];
    }

    /**
     * Times a 2-rank ring all-reduce over Aeron IPC in this process and predicts it with the simulator. The link the
     * simulator prices is fitted, as t = α + β·m, to the median times of simultaneous exchanges of a quarter to all of
     * a ring step's bytes (half the all-reduce's), timed interleaved with the all-reduces, so that both see the same
     * state of this shared machine: timed apart, each moved by ±30% between rounds. γ is the reduction cost the
     * communicator measures (on the receive path). The intercept α is a large message's fixed cost (its handshake and
     * first chunk), not an 8-byte round trip: the all-reduce's two steps pay it twice. Nine rounds; the median ratio
     * is reported.
     * The ranks' shared-memory all-reduce is off: the simulator prices message passing over α-β links, which is what
     * ranks on different hosts run.
     */
    static BenchResult validateAllReduce(int bytes) {
        final int rounds = 9;
        final int reps = 9;
        // exchanges of 1/4, 2/4, 3/4 and 4/4 of a ring step (half the all-reduce's bytes), in units of `unit` bytes
        final int unit = bytes / 8;
        final int[] parts = {1, 2, 3, 4};
        double[] ratios = new double[rounds];
        try (LocalCluster cluster = LocalCluster.launch(2, ctx -> ctx.sharedMemoryMinBytes(-1))) {
            for (int round = 0; round < rounds; round++) {
                List<double[]> results = cluster.run(comm -> {
                    ByteBuffer buf = ByteBuffer.allocateDirect(bytes).order(ByteOrder.nativeOrder());
                    ByteBuffer in = ByteBuffer.allocateDirect(bytes / 2).order(ByteOrder.nativeOrder());
                    ByteBuffer data = buf.duplicate().order(ByteOrder.nativeOrder());
                    data.limit(bytes);
                    for (int i = 0; i < 3; i++) {
                        comm.allReduce(data, DataType.FLOAT32, ReduceOp.SUM, Algorithm.RING);
                    }
                    double gamma = comm.measureCostModel().gamma();
                    int peer = 1 - comm.rank();
                    long[] allReduce = new long[reps];
                    long[][] exchange = new long[parts.length][reps];
                    for (int r = 0; r < reps; r++) {
                        comm.barrier();
                        long t0 = System.nanoTime();
                        comm.allReduce(data, DataType.FLOAT32, ReduceOp.SUM, Algorithm.RING);
                        allReduce[r] = System.nanoTime() - t0;
                        for (int k = 0; k < parts.length; k++) {
                            ByteBuffer out = buf.duplicate();
                            out.limit(parts[k] * unit);
                            ByteBuffer into = in.duplicate();
                            into.limit(parts[k] * unit);
                            comm.barrier();
                            t0 = System.nanoTime();
                            java.util.concurrent.CompletableFuture<Long> got = comm.irecv(into, peer, 7);
                            comm.isend(out, peer, 7).join();
                            got.join();
                            exchange[k][r] = System.nanoTime() - t0;
                        }
                    }
                    double[] row = new double[2 + parts.length];
                    row[0] = median(allReduce);
                    row[1] = gamma;
                    for (int k = 0; k < parts.length; k++) {
                        row[2 + k] = median(exchange[k]);
                    }
                    return row;
                });
                double measured = Math.max(results.get(0)[0], results.get(1)[0]);
                // an exchange ends when both ranks have sent and received: the slower rank's medians
                double[] t = new double[parts.length];
                for (int k = 0; k < parts.length; k++) {
                    t[k] = Math.max(results.get(0)[2 + k], results.get(1)[2 + k]);
                }
                double[] fit = CostModel.fitLine(parts, t);
                double alphaNs = Math.max(0, fit[0]);
                // noisy medians could make the slope tiny or negative: never below half the 4 MiB average
                double nsPerByte = Math.max(fit[1], 0.5 * t[parts.length - 1] / parts[parts.length - 1]) / unit;
                LinkSpec link = new LinkSpec(alphaNs / 1e3, 1 / nsPerByte);
                ratios[round] = Simulator.collectiveNs(SimDag.Collective.ALL_REDUCE, Algorithm.RING, 2, bytes, link,
                        results.get(0)[1] * 1e9) / measured;
            }
        }
        Arrays.sort(ratios);
        return BenchResult.standalone("validate_allreduce_n2", "predicted_over_measured", "x", ratios[rounds / 2]);
    }

    private static double median(long[] v) {
        long[] s = v.clone();
        Arrays.sort(s);
        return s[s.length / 2];
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
