package dev.poniard.samples.pipeline;

import dev.poniard.bridge.NativeThreads;
import dev.poniard.bridge.SameDiffDataParallel;
import dev.poniard.bridge.SameDiffPipeline;
import dev.poniard.bridge.Stage;
import dev.poniard.samples.bench.BenchOptions;
import dev.poniard.samples.bench.BenchReport;
import dev.poniard.samples.bench.BenchResult;
import dev.poniard.samples.bench.BenchSuite;
import java.lang.management.CompilationMXBean;
import java.lang.management.ManagementFactory;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Map;
import java.util.Random;
import java.util.function.Consumer;
import org.nd4j.autodiff.samediff.SDVariable;
import org.nd4j.autodiff.samediff.SameDiff;
import org.nd4j.autodiff.samediff.TrainingConfig;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;
import org.nd4j.linalg.learning.config.Adam;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * {@code ./poniard bench pipeline}: pipeline and data-parallel training of a SameDiff graph through the bridge.
 * The model is a 7-layer tanh MLP (width 256, float32) with a softmax cross-entropy loss, built in SameDiff. Its loss
 * head costs about as much as a layer (per-op costs, not flops, dominate at a micro-batch of 64 rows), so the stages,
 * cut by the ops' times on a micro-batch, get four layers and three layers with the head. The theoretical bubble
 * assumes equal stages: with six layers the best cut left the last stage 14% slower by its ops' measured times, and
 * 30% once the stages stopped differentiating their output terms. Every figure is measured in this run:
 * <ul>
 *   <li>{@code pipeline_gpipe_s2_m8}, {@code pipeline_1f1b_s2_m8}: the median, over the timed steps, of the idle
 *       share of the 2 stage processors between a step's first task start and last task end; baseline the
 *       theoretical bubble (S−1)/(M+S−1) = 1/9; ratio theoretical / measured (1.0 = as good as theory). The log also
 *       gives the median bubble of the same steps replayed with their measured task times and no time between tasks
 *       ({@code StepStats.replayedBubble}): what the tasks' own times cost, apart from hand-offs; and how many steps
 *       had the two stages busy within 5% of each other (on these 2-vCPU machines few do: the cores' speeds drift by
 *       tens of percent over seconds), with those steps' median bubble. 40 timed steps (8 with {@code --quick}).</li>
 *   <li>{@code pipeline_1f1b_peak_activations}: the most bytes held between tasks at once in a 1F1B step (stage
 *       outputs and the forward values kept for backward); baseline GPipe's on the same batch; ratio GPipe / 1F1B
 *       (M/S = 4 for stage outputs alone; above it with kept forward values, of which 1F1B's last stage holds one
 *       micro-batch's and GPipe's all M).</li>
 *   <li>{@code dp_samediff_2w}: samples/s of {@code SameDiffDataParallel} with 2 workers; baseline the same graph and
 *       batches with 1 worker, same run, timed in alternating rounds (median round of each).</li>
 * </ul>
 */
public final class PipelineBenchSuite implements BenchSuite {
    private static final Logger LOG = LoggerFactory.getLogger(PipelineBenchSuite.class);
    private static final int WIDTH = 256;
    private static final int LAYERS = 7;
    private static final int CLASSES = 10;
    private static final int STAGES = 2;
    private static final int MICRO = 8;
    /** Stages kept the same pace in a step when the less busy one was busy at least this share of the other's time. */
    private static final double EVEN = 0.95;

    @Override
    public String name() {
        return "pipeline";
    }

    @Override
    public String description() {
        return "SameDiff through the bridge: GPipe and 1F1B bubble and activation memory (S=2, M=8), data-parallel 2 vs 1 worker";
    }

    static SameDiff model(long seed) {
        Random r = new Random(seed);
        SameDiff sd = SameDiff.create();
        SDVariable x = sd.placeHolder("in", DataType.FLOAT, -1, WIDTH);
        SDVariable label = sd.placeHolder("label", DataType.FLOAT, -1, CLASSES);
        for (int l = 0; l < LAYERS; l++) {
            x = sd.nn.tanh("h" + l, sd.nn.linear("z" + l, x, sd.var("w" + l, randn(r, 1.0 / Math.sqrt(WIDTH), WIDTH, WIDTH)),
                    sd.var("b" + l, Nd4j.zeros(DataType.FLOAT, WIDTH))));
        }
        SDVariable logits = sd.nn.linear("logits", x, sd.var("wo", randn(r, 0.05, WIDTH, CLASSES)),
                sd.var("bo", Nd4j.zeros(DataType.FLOAT, CLASSES)));
        sd.loss.softmaxCrossEntropy("loss", label, logits, null);
        sd.setTrainingConfig(TrainingConfig.builder().updater(new Adam(1e-3)).dataSetFeatureMapping("in")
                .dataSetLabelMapping("label").build());
        return sd;
    }

    private static INDArray randn(Random r, double scale, long... shape) {
        float[] d = new float[(int) Arrays.stream(shape).reduce(1, (a, b) -> a * b)];
        for (int i = 0; i < d.length; i++) {
            d[i] = (float) (r.nextGaussian() * scale);
        }
        return Nd4j.create(d, shape, 'c');
    }

    static Map<String, INDArray> batch(int n, long seed) {
        Random r = new Random(seed);
        INDArray y = Nd4j.zeros(DataType.FLOAT, n, CLASSES);
        for (int i = 0; i < n; i++) {
            y.putScalar(i, r.nextInt(CLASSES), 1.0);
        }
        return Map.of("in", randn(r, 1.0, n, WIDTH), "label", y);
    }

    /**
     * Warm-up: at least {@code steps} steps and {@code millis} of them, then on until the JIT compilers are quiet (they
     * used under {@link #QUIET_COMPILE_SHARE} of a window of {@link #QUIET_WINDOW_MS}) or {@code maxMillis} has passed.
     * SameDiff's op dispatch is a lot of code that each step runs a few hundred times: sampled per thread, C2 used
     * 10-70% of a core for the first 20-30 s of this bench, and a stage worker that shares its core with the compiler
     * stretches its tasks and idles the other stage.
     */
    private record Warmup(int steps, long millis, long maxMillis) {
        static final long QUIET_WINDOW_MS = 1_000;
        static final double QUIET_COMPILE_SHARE = 0.02;

        void run(String what, java.util.function.IntConsumer step) {
            CompilationMXBean jit = ManagementFactory.getCompilationMXBean();
            boolean timed = jit != null && jit.isCompilationTimeMonitoringSupported();
            long start = System.nanoTime();
            long windowStart = start;
            long windowCompile = timed ? jit.getTotalCompilationTime() : 0;
            boolean quiet = false;
            int s = 0;
            while (true) {
                step.accept(s++);
                long now = System.nanoTime();
                long elapsedMs = (now - start) / 1_000_000;
                if (elapsedMs >= maxMillis || s >= steps && elapsedMs >= millis && (!timed || quiet)) {
                    break;
                }
                if (timed && (now - windowStart) / 1_000_000 >= QUIET_WINDOW_MS) {
                    long compile = jit.getTotalCompilationTime();
                    quiet = compile - windowCompile < QUIET_COMPILE_SHARE * (now - windowStart) / 1e6;
                    windowStart = now;
                    windowCompile = compile;
                }
            }
            LOG.info("{}: warmed up for {} steps, {} s{}", what, s, BenchReport.fmt((System.nanoTime() - start) / 1e9),
                    !timed ? " (no JIT compilation time to watch)" : quiet ? ", until the JIT compilers were quiet"
                            : ", the JIT compilers still busy at the limit");
        }
    }

    /**
     * Median bubble, median bubble of the same steps replayed with their measured task times and no gaps, and the peak
     * activation bytes of {@code steps} timed steps after a warm-up.
     */
    private record PipelineRun(double bubble, double replayed, double theory, long peakBytes) {
    }

    private static String describe(SameDiffPipeline p) {
        StringBuilder cut = new StringBuilder();
        for (Stage st : p.stages()) {
            cut.append(cut.length() == 0 ? "" : ", ").append("ops [").append(st.firstOp()).append(", ")
                    .append(st.endOp()).append(") ").append(BenchReport.fmt(st.costNanos() / 1e6)).append(" + ")
                    .append(BenchReport.fmt(st.backwardNanos() / 1e6)).append(" ms");
        }
        return cut.toString();
    }

    private static PipelineRun pipeline(SameDiffPipeline.Schedule schedule, int batch, Warmup warmup, int steps) {
        try (SameDiffPipeline p = SameDiffPipeline.launch(new SameDiffPipeline.Context().sameDiff(model(7))
                .stages(STAGES).microBatches(MICRO).schedule(schedule).sample(batch(batch / MICRO, 1)))) {
            LOG.info("{}: stages {} (forward + backward, ops timed on a micro-batch)", schedule, describe(p));
            Map<String, INDArray> warm = batch(batch, 100);
            warmup.run(schedule.toString(), s -> p.step(warm));
            double[] bubbles = new double[steps];
            double[] replayed = new double[steps];
            long[][] busy = new long[STAGES][steps];
            long peak = 0;
            List<Double> even = new ArrayList<>();
            for (int s = 0; s < steps; s++) {
                p.step(batch(batch, 200 + s));
                bubbles[s] = p.lastStep().bubbleFraction();
                replayed[s] = p.lastStep().replayedBubble();
                peak = Math.max(peak, p.lastStep().peakHeldBytes());
                long[] b = p.lastStep().stageBusyNs();
                for (int st = 0; st < STAGES; st++) {
                    busy[st][s] = b[st];
                }
                if (Arrays.stream(b).min().orElse(0) >= EVEN * Arrays.stream(b).max().orElse(0)) {
                    even.add(bubbles[s]);
                }
            }
            even.sort(null);
            Arrays.sort(bubbles);
            Arrays.sort(replayed);
            StringBuilder stageBusy = new StringBuilder();
            for (long[] b : busy) {
                Arrays.sort(b);
                stageBusy.append(stageBusy.length() == 0 ? "" : " / ").append(BenchReport.fmt(b[steps / 2] / 1e6));
            }
            PipelineRun run = new PipelineRun(bubbles[steps / 2], replayed[steps / 2], p.lastStep().theoreticalBubble(), peak);
            if (p.rebalances() > 0) {
                LOG.info("{}: re-cut {} times by measured stage times; now {}", schedule, p.rebalances(), describe(p));
            }
            LOG.info("{}: bubble {} (median of {} steps); the same steps replayed with their measured task times and no "
                    + "time between tasks {} (what the tasks' own times cost: unequal stages, tasks slowed by other "
                    + "threads); theory {}; stage busy per step {} ms (medians)", schedule, BenchReport.fmt(run.bubble()),
                    steps, BenchReport.fmt(run.replayed()), BenchReport.fmt(run.theory()), stageBusy);
            LOG.info("{}: {} of {} steps had stages busy within {}% of each other{}", schedule, even.size(), steps,
                    Math.round(100 * (1 - EVEN)), even.isEmpty() ? "" : " (their median bubble "
                            + BenchReport.fmt(even.get(even.size() / 2)) + ")");
            return run;
        }
    }

    /**
     * Samples/s of {@code SameDiffDataParallel} with 1 and with 2 workers, {@code [one, two]}: both are launched and
     * warmed up, then timed in alternating rounds of {@code steps} steps, and each gets its median round. A slow spell
     * of the machine (a vCPU of these VMs can run at half speed for seconds) then lands on both, not on one.
     */
    private static double[] dataParallel(int batch, Warmup warmup, int rounds, int steps) {
        try (SameDiffDataParallel one = launchDataParallel(1); SameDiffDataParallel two = launchDataParallel(2)) {
            Map<String, INDArray> warm = batch(batch, 100);
            warmup.run("data parallel, 1 worker", s -> one.step(warm));
            warmup.run("data parallel, 2 workers", s -> two.step(warm));
            List<Map<String, INDArray>> data = new ArrayList<>();
            for (int s = 0; s < steps; s++) {
                data.add(batch(batch, 200 + s));
            }
            double[][] rates = new double[2][rounds];
            for (int r = 0; r < rounds; r++) {
                int k = 0;
                for (SameDiffDataParallel dp : List.of(one, two)) {
                    long start = System.nanoTime();
                    data.forEach(dp::step);
                    rates[k++][r] = (double) batch * steps / ((System.nanoTime() - start) / 1e9);
                }
            }
            for (double[] r : rates) {
                Arrays.sort(r);
            }
            return new double[] {rates[0][rounds / 2], rates[1][rounds / 2]};
        }
    }

    private static SameDiffDataParallel launchDataParallel(int workers) {
        return SameDiffDataParallel.launch(new SameDiffDataParallel.Context().sameDiff(model(7)).workers(workers));
    }

    @Override
    public List<BenchResult> run(BenchOptions options, Consumer<BenchResult> progress) {
        NativeThreads.oneThreadPerWorker();
        boolean quick = options.quick();
        int batch = quick ? 256 : 512;
        Warmup warmup = quick ? new Warmup(30, 2_000, 10_000) : new Warmup(60, 4_000, 40_000);
        int steps = quick ? 8 : 40;
        List<BenchResult> results = new ArrayList<>();

        PipelineRun gpipe = pipeline(SameDiffPipeline.Schedule.GPIPE, batch, warmup, steps);
        PipelineRun f1b = pipeline(SameDiffPipeline.Schedule.ONE_F_ONE_B, batch, warmup, steps);
        add(results, progress, BenchResult.lowerIsBetter("pipeline_gpipe_s2_m8", "bubble_fraction", "fraction",
                gpipe.bubble(), "theoretical (S-1)/(M+S-1)", gpipe.theory()));
        add(results, progress, BenchResult.lowerIsBetter("pipeline_1f1b_s2_m8", "bubble_fraction", "fraction",
                f1b.bubble(), "theoretical (S-1)/(M+S-1)", f1b.theory()));
        add(results, progress, BenchResult.lowerIsBetter("pipeline_1f1b_peak_activations", "peak_activation_bytes", "bytes",
                f1b.peakBytes(), "GPipe, same batch", gpipe.peakBytes()));

        double[] dp = dataParallel(batch, warmup, quick ? 5 : 7, quick ? 4 : 6);
        add(results, progress, BenchResult.higherIsBetter("dp_samediff_2w", "samples_per_s", "samples/s", dp[1],
                "same graph, 1 worker", dp[0]));
        return results;
    }

    private static void add(List<BenchResult> results, Consumer<BenchResult> progress, BenchResult r) {
        results.add(r);
        progress.accept(r);
    }
}
