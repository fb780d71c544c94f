package dev.poniard.samples.moe;

import dev.poniard.moe.ExpertExecutor;
import dev.poniard.moe.ExpertJob;
import dev.poniard.samples.bench.BenchOptions;
import dev.poniard.samples.bench.BenchResult;
import dev.poniard.samples.bench.BenchSuite;
import dev.poniard.samples.sim.Studies;
import dev.poniard.scheduler.sim.Workloads;
import java.util.ArrayList;
import java.util.List;
import java.util.function.Consumer;
import org.nd4j.linalg.activations.Activation;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;

/**
 * {@code ./poniard bench moe} (issue #8): one MoE layer's expert work — forward and backward of T = 4096 tokens,
 * d = 256, d_ff = 1024, E = 8, top-2, routing drawn with Zipf skew s before timing — as (expert, chunk) tasks on
 * a 2-worker Poniard scheduler, against the lower bound max(total task time / workers, longest task) measured in
 * the same run and against the static schedule (expert e pinned to worker e mod P, unsplit) run alternately with
 * it; plus the simulator's MoE family at 8 and 16 devices.
 */
public final class MoeBenchSuite implements BenchSuite {
    static final int TOKENS = 4096;
    static final int D = 256;
    static final int D_FF = 1024;
    static final int EXPERTS = 8;
    static final int K = 2;
    static final int WORKERS = 2;
    /** As the MoE layer cuts its expert work by default ({@code MoeLayer.Builder.chunksPerWorker}). */
    static final int CHUNKS_PER_WORKER = 4;
    static final long SEED = 42;

    @Override
    public String name() {
        return "moe";
    }

    @Override
    public String description() {
        return "MoE expert work (T=4096, d=256, d_ff=1024, E=8, k=2) on 2 workers: makespan vs lower bound, "
                + "speed-up over static expert placement; simulated at 8/16 devices";
    }

    @Override
    public List<BenchResult> run(BenchOptions options, Consumer<BenchResult> progress) throws Exception {
        int rounds = options.quick() ? 4 : 8;
        List<BenchResult> results = new ArrayList<>();
        try (ExpertExecutor exec = ExpertExecutor.launch(WORKERS, "moe-bench")) {
            Measured uniform = measure(exec, 0, rounds, false);
            add(results, progress, BenchResult.standalone("makespan_e8k2_s0", "makespan_over_lower_bound", "x",
                    uniform.dynamicOverBound()));
            Measured skewed = measure(exec, 1.2, rounds, true);
            add(results, progress, BenchResult.standalone("makespan_e8k2_s1.2", "makespan_over_lower_bound", "x",
                    skewed.dynamicOverBound()));
            double speedup = skewed.staticNs / skewed.dynamicNs;
            add(results, progress, new BenchResult("speedup_vs_static_e8k2_s1.2", "speedup", "x", speedup,
                    "static: expert e on worker e mod P", 1.0, speedup));
        }
        for (int devices : new int[] {8, 16}) {
            Studies.MoeRun r = Studies.moe(devices, 16, 1);
            add(results, progress, BenchResult.lowerIsBetter("sim_p" + devices + "_e16k2_s1.2",
                    "makespan_over_lower_bound", "x", r.dynamicNs() / r.lowerBoundNs(), "static (simulated)",
                    r.staticNs() / r.lowerBoundNs()));
        }
        return results;
    }

    private static void add(List<BenchResult> results, Consumer<BenchResult> progress, BenchResult r) {
        results.add(r);
        progress.accept(r);
    }

    /** Best dynamic round (its makespan and its own lower bound) and best static round. */
    record Measured(double dynamicNs, double boundNs, double staticNs) {
        double dynamicOverBound() {
            return dynamicNs / boundNs;
        }
    }

    /** Runs one warm-up and {@code rounds} timed rounds of the dynamic (and, if asked, static) schedule. */
    static Measured measure(ExpertExecutor exec, double skew, int rounds, boolean withStatic) {
        int[] counts = Workloads.zipfRouting(TOKENS, EXPERTS, K, skew, SEED);
        List<ExpertJob> jobs = jobs(counts, SEED);
        double bestDyn = Double.MAX_VALUE;
        double boundAtBest = 0;
        double bestStatic = Double.MAX_VALUE;
        for (int round = 0; round <= rounds; round++) {
            ExpertExecutor.Plan dyn = ExpertExecutor.plan(jobs, exec.workers(), 64, CHUNKS_PER_WORKER);
            long t0 = System.nanoTime();
            exec.forwardBackward(dyn, false);
            double makespan = System.nanoTime() - t0;
            double bound = lowerBound(dyn.taskNs(), exec.workers());
            dyn.release();
            if (round > 0 && makespan < bestDyn) {
                bestDyn = makespan;
                boundAtBest = bound;
            }
            if (withStatic) {
                ExpertExecutor.Plan st = ExpertExecutor.plan(jobs, Integer.MAX_VALUE);
                t0 = System.nanoTime();
                exec.forwardBackward(st, true);
                double s = System.nanoTime() - t0;
                st.release();
                if (round > 0) {
                    bestStatic = Math.min(bestStatic, s);
                }
            }
        }
        return new Measured(bestDyn, boundAtBest, withStatic ? bestStatic : Double.NaN);
    }

    /** max(total task time / workers, longest task). */
    static double lowerBound(long[] taskNs, int workers) {
        double total = 0;
        double longest = 0;
        for (long t : taskNs) {
            total += t;
            longest = Math.max(longest, t);
        }
        return Math.max(total / workers, longest);
    }

    /** One job per expert with its routed rows, random weights, gates and upstream gradients (float). */
    static List<ExpertJob> jobs(int[] counts, long seed) {
        Nd4j.getRandom().setSeed(seed);
        List<ExpertJob> jobs = new ArrayList<>();
        DataType f = DataType.FLOAT;
        for (int e = 0; e < counts.length; e++) {
            int m = counts[e];
            INDArray w1 = Nd4j.randn(f, D, D_FF).muli(1 / Math.sqrt(D));
            INDArray w2 = Nd4j.randn(f, D_FF, D).muli(1 / Math.sqrt(D_FF));
            ExpertJob job = new ExpertJob("e" + e, w1, Nd4j.zeros(f, 1, D_FF), w2, Nd4j.zeros(f, 1, D),
                    Activation.RELU.getActivationFunction(), Nd4j.randn(f, m, D), Nd4j.rand(f, m, 1),
                    Nd4j.zeros(f, m, D));
            job.gradients(Nd4j.randn(f, m, D), Nd4j.zeros(f, m, D), new double[m], Nd4j.zeros(f, D, D_FF),
                    Nd4j.zeros(f, 1, D_FF), Nd4j.zeros(f, D_FF, D), Nd4j.zeros(f, 1, D));
            jobs.add(job);
        }
        return jobs;
    }
}
