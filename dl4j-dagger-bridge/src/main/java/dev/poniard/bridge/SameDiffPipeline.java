package dev.poniard.bridge;

import dev.poniard.scheduler.Scheduler;
import dev.poniard.scheduler.Scope;
import dev.poniard.scheduler.TaskHandle;
import dev.poniard.scheduler.TaskOptions;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Objects;
import java.util.Set;
import java.util.concurrent.atomic.AtomicLong;
import org.nd4j.autodiff.samediff.SameDiff;
import org.nd4j.autodiff.samediff.TrainingConfig;
import org.nd4j.autodiff.samediff.api.OutAndGrad;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.dataset.api.DataSet;
import org.nd4j.linalg.dataset.api.MultiDataSet;

/**
 * Pipeline (model-parallel) training of a SameDiff graph: the ops are cut into S contiguous stages balanced by
 * estimated time and parameter memory ({@link SameDiffDag#partition}), each stage runs on its own scheduler
 * processor, and every step's global batch is split into M micro-batches that flow through the stages under a
 * GPipe or 1F1B (PipeDream-Flush) schedule. Activations and their gradients pass between stages in-process. After
 * each step the parameters equal {@code sd.fit} on the whole batch.
 *
 * <pre>{@code
 * try (SameDiffPipeline p = SameDiffPipeline.launch(new SameDiffPipeline.Context().sameDiff(sd)
 *         .stages(2).microBatches(8).schedule(SameDiffPipeline.Schedule.ONE_F_ONE_B).sample(sampleBatch))) {
 *     double loss = p.step(Map.of("in", x, "label", y));
 *     SameDiffPipeline.StepStats st = p.lastStep();      // measured bubble, peak activation bytes
 * }
 * }</pre>
 *
 * <p><b>Implementation overview.</b> At launch the graph is imported and costed on the sample batch, partitioned, and
 * each stage becomes a {@link StageGraph}: a pruned duplicate whose received activations are placeholders and whose
 * backward is SameDiff's gradient of Σ losses + Σ sum(output ⊙ ∂L/∂output). One step spawns, per stage s and
 * micro-batch m, a forward task F(s,m) and a backward task B(s,m), all scoped to stage s's processor:
 * <ul>
 *   <li>F(s,m) reads the micro-batch's placeholders and the outputs of F(t,m) for every earlier stage t that hands
 *       it an activation; B(s,m) reads ∂L/∂output from B(t,m) for every later stage t that received one (summed when
 *       several did) and returns ∂L/∂input for its received activations.</li>
 *   <li>Each stage's tasks are chained in schedule order (each waits for its predecessor on the stage), which is what
 *       makes the schedule: GPipe runs F(s,0..M-1) then B(s,M-1..0); 1F1B runs min(S-s-1, M) warm-up forwards, then
 *       alternates one forward and one backward, then drains the remaining backwards, so a stage holds at most S-s
 *       micro-batches' activations instead of M.</li>
 *   <li>B(s,m) adds w_m·∂L_m/∂θ into the stage's gradient accumulators (w_m = n_m/N for mean losses), in micro-batch
 *       order fixed by the schedule. After a stage's last backward, its update task applies the
 *       {@link ParameterUpdater} (as {@code sd.fit} would) to the stage's own parameter copies and copies them back
 *       into the caller's graph.</li>
 * </ul>
 * Activation memory is accounted as the bytes of stage outputs alive between the forward that produced them and the
 * last backward that consumed them; its peak and the measured bubble (idle share of the stage processors between the
 * step's first task start and last task end) are reported per step. Each parameter must belong to one stage (no
 * weight tying across stages). An instance is used by one thread at a time; the caller's graph is the source of
 * parameters at launch and receives them after every step.
 */
public final class SameDiffPipeline implements AutoCloseable {
    /** The order in which a stage runs its micro-batches' forward and backward tasks. */
    public enum Schedule {
        /** All forwards, then all backwards (Huang et al., 2019). */
        GPIPE,
        /** One forward, one backward in steady state, flushing at the end of each step (PipeDream-Flush, Narayanan et al., 2021). */
        ONE_F_ONE_B
    }

    /** Configuration; defaults from system properties {@code poniard.pipeline.stages} (2), {@code .microBatches} (4). */
    public static final class Context {
        private SameDiff sameDiff;
        private int stages = Integer.getInteger("poniard.pipeline.stages", 2);
        private int microBatches = Integer.getInteger("poniard.pipeline.microBatches", 4);
        private Schedule schedule = Schedule.ONE_F_ONE_B;
        private Map<String, INDArray> sample;
        private boolean trace;
        private LossReduction lossReduction = LossReduction.MEAN;
        private Set<String> unsharded = Set.of();

        public SameDiff sameDiff() {
            return sameDiff;
        }

        /** The graph to train (training config and loss variables set); it receives the parameters after every step. */
        public Context sameDiff(SameDiff value) {
            sameDiff = value;
            return this;
        }

        public int stages() {
            return stages;
        }

        /** Number of pipeline stages S, one scheduler processor each. */
        public Context stages(int value) {
            stages = value;
            return this;
        }

        public int microBatches() {
            return microBatches;
        }

        /** Micro-batches M per step (fewer when a batch has fewer examples). */
        public Context microBatches(int value) {
            microBatches = value;
            return this;
        }

        public Schedule schedule() {
            return schedule;
        }

        public Context schedule(Schedule value) {
            schedule = value;
            return this;
        }

        public Map<String, INDArray> sample() {
            return sample;
        }

        /** A small batch of every placeholder, used once at launch to learn shapes and estimate op costs. */
        public Context sample(Map<String, INDArray> value) {
            sample = value;
            return this;
        }

        public boolean trace() {
            return trace;
        }

        /** Records a scheduler trace of the F/B/update tasks. */
        public Context trace(boolean value) {
            trace = value;
            return this;
        }

        public LossReduction lossReduction() {
            return lossReduction;
        }

        public Context lossReduction(LossReduction value) {
            lossReduction = value;
            return this;
        }

        public Set<String> unsharded() {
            return unsharded;
        }

        /** Placeholders given whole to every micro-batch (no batch dimension). */
        public Context unsharded(String... placeholders) {
            unsharded = Set.of(placeholders);
            return this;
        }

        /** Validates the context, naming the bad value. */
        public Context conclude() {
            if (sameDiff == null) {
                throw new IllegalArgumentException("sameDiff must be set: new SameDiffPipeline.Context().sameDiff(sd)");
            }
            TrainingConfig tc = sameDiff.getTrainingConfig();
            if (tc == null || tc.getUpdater() == null) {
                throw new IllegalArgumentException("the graph has no training config with an updater: call "
                        + "sd.setTrainingConfig(TrainingConfig.builder().updater(...)...build()) before launch");
            }
            if (stages < 1) {
                throw new IllegalArgumentException("stages must be >= 1, got " + stages);
            }
            if (microBatches < 1) {
                throw new IllegalArgumentException("microBatches must be >= 1, got " + microBatches);
            }
            Objects.requireNonNull(schedule, "schedule");
            Objects.requireNonNull(lossReduction, "lossReduction");
            if (sample == null || sample.isEmpty()) {
                throw new IllegalArgumentException("sample must be set: a small batch of every placeholder, to learn shapes "
                        + "and estimate op costs for the partition");
            }
            return this;
        }
    }

    /**
     * What one step measured.
     *
     * @param bubbleFraction      idle share of the S stage processors between the first task start and the last task end
     * @param theoreticalBubble   (S−1)/(M+S−1) for this step's S and M
     * @param peakActivationBytes the most bytes of stage outputs alive at once
     * @param makespanNs          first F start to last B end
     * @param microBatches        micro-batches actually used
     */
    public record StepStats(double bubbleFraction, double theoreticalBubble, long peakActivationBytes, long makespanNs,
                            int microBatches) {
    }

    private final Context ctx;
    private final SameDiff master;
    private final List<String> losses;
    private final List<Stage> stages;
    private final List<StageGraph> graphs = new ArrayList<>();
    private final ParameterUpdater[] updaters;
    private final Scheduler scheduler;
    /** For every handed-over activation: the stage that produces it and the stages that receive it. */
    private final Map<String, Integer> producerStage = new HashMap<>();
    private final Map<String, List<Integer>> consumerStages = new HashMap<>();
    private StepStats lastStep;
    private long steps;
    private boolean closed;

    private SameDiffPipeline(Context ctx) {
        this.ctx = ctx;
        this.master = ctx.sameDiff();
        SameDiffDag full = SameDiffDag.importGraph(master);
        full.requireDifferentiable();
        this.losses = List.copyOf(master.getLossVariables());
        SameDiffDag dag = full.estimateCosts(ctx.sample());
        this.stages = dag.partition(ctx.stages());
        Map<String, Integer> paramStage = new HashMap<>();
        for (Stage st : stages) {
            StageGraph g = StageGraph.build(dag, st, losses);
            for (String p : g.parameters) {
                Integer other = paramStage.put(p, st.index());
                if (other != null) {
                    throw new UnsupportedGraphException(null, "parameter '" + p + "' is read by ops in stage " + other
                            + " and stage " + st.index() + "; the pipeline keeps each parameter in one stage (no weight "
                            + "tying across stages): use fewer stages or untie the weight");
                }
            }
            graphs.add(g);
            for (String o : g.outputs) {
                producerStage.put(o, st.index());
            }
        }
        for (StageGraph g : graphs) {
            for (String x : g.receivedActivations) {
                consumerStages.computeIfAbsent(x, k -> new ArrayList<>()).add(g.stage.index());
            }
        }
        this.updaters = new ParameterUpdater[graphs.size()];
        for (int s = 0; s < graphs.size(); s++) {
            updaters[s] = new ParameterUpdater(graphs.get(s).sd, graphs.get(s).parameters);
        }
        this.scheduler = Scheduler.launch(new Scheduler.Context().name("samediff-pipeline").workers(graphs.size())
                .trace(ctx.trace()).workerStart(NativeThreads::oneThreadPerWorker));
    }

    /** Imports, costs and partitions the graph, builds the stage graphs and a scheduler with one worker per stage. */
    public static SameDiffPipeline launch(Context ctx) {
        return new SameDiffPipeline(ctx.conclude());
    }

    public List<Stage> stages() {
        return stages;
    }

    public Scheduler scheduler() {
        return scheduler;
    }

    /** Measurements of the last step, or null before the first. */
    public StepStats lastStep() {
        return lastStep;
    }

    public long steps() {
        return steps;
    }

    /** One step on a {@code DataSet} mapped by the training config; returns the loss before the step. */
    public double fit(DataSet batch) {
        return fit(batch.toMultiDataSet());
    }

    public double fit(MultiDataSet batch) {
        return step(Batches.placeholders(master, batch));
    }

    /** The order of (forward?, micro-batch) pairs stage {@code s} of {@code S} runs for {@code m} micro-batches. */
    static List<int[]> order(Schedule schedule, int s, int S, int m) {
        List<int[]> seq = new ArrayList<>(2 * m);
        if (schedule == Schedule.GPIPE) {
            for (int i = 0; i < m; i++) {
                seq.add(new int[] {1, i});
            }
            for (int i = m - 1; i >= 0; i--) {
                seq.add(new int[] {0, i});
            }
            return seq;
        }
        int warmup = Math.min(S - s - 1, m);
        int f = 0;
        int b = 0;
        for (; f < warmup; f++) {
            seq.add(new int[] {1, f});
        }
        while (f < m) {
            seq.add(new int[] {1, f++});
            seq.add(new int[] {0, b++});
        }
        while (b < m) {
            seq.add(new int[] {0, b++});
        }
        return seq;
    }

    /** Per-step state shared by the step's tasks (each stage's fields are only touched by that stage's processor). */
    private final class StepState {
        final List<Map<String, INDArray>> micro = new ArrayList<>();
        final double[] weight;
        final Map<String, INDArray>[] gradSums;
        final double[] lossSums;
        final long[] busyNs;
        final AtomicLong firstStart = new AtomicLong(Long.MAX_VALUE);
        final AtomicLong lastEnd = new AtomicLong(Long.MIN_VALUE);
        final AtomicLong liveBytes = new AtomicLong();
        final AtomicLong peakBytes = new AtomicLong();

        @SuppressWarnings({"unchecked", "rawtypes"})
        StepState(Map<String, INDArray> batch, long[] bounds, long n) {
            int m = bounds.length - 1;
            weight = new double[m];
            for (int i = 0; i < m; i++) {
                micro.add(Batches.slice(batch, ctx.unsharded(), bounds[i], bounds[i + 1]));
                weight[i] = ctx.lossReduction() == LossReduction.MEAN ? (bounds[i + 1] - bounds[i]) / (double) n : 1.0;
            }
            gradSums = new Map[graphs.size()];
            for (int s = 0; s < gradSums.length; s++) {
                gradSums[s] = new LinkedHashMap<>();
            }
            lossSums = new double[graphs.size()];
            busyNs = new long[graphs.size()];
        }

        void timed(int s, long start, long end) {
            busyNs[s] += end - start;
            firstStart.accumulateAndGet(start, Math::min);
            lastEnd.accumulateAndGet(end, Math::max);
        }

        void allocate(long bytes) {
            peakBytes.accumulateAndGet(liveBytes.addAndGet(bytes), Math::max);
        }
    }

    /**
     * One synchronous step on a global batch (placeholders by name, split along the first dimension into
     * micro-batches). Returns the loss of the batch at the parameters before the step, as {@code sd.fit} reports it.
     */
    public double step(Map<String, INDArray> batch) {
        if (closed) {
            throw new IllegalStateException("this SameDiffPipeline is closed");
        }
        long n = Batches.rows(master, batch, ctx.unsharded());
        long[] bounds = Batches.bounds(n, ctx.microBatches());
        int m = bounds.length - 1;
        int S = graphs.size();
        StepState st = new StepState(batch, bounds, n);

        @SuppressWarnings({"unchecked", "rawtypes"})
        TaskHandle<Map<String, INDArray>>[][] fwd = new TaskHandle[S][m];
        @SuppressWarnings({"unchecked", "rawtypes"})
        TaskHandle<Map<String, INDArray>>[][] bwd = new TaskHandle[S][m];
        List<List<int[]>> orders = new ArrayList<>();
        for (int s = 0; s < S; s++) {
            orders.add(order(ctx.schedule(), s, S, m));
        }
        // Spawn in an order that respects data dependencies: sweep the stages, spawning each stage's next task once
        // the tasks it reads have been spawned. A valid schedule always makes progress.
        int[] next = new int[S];
        TaskHandle<?>[] last = new TaskHandle<?>[S];
        int remaining = 2 * S * m;
        while (remaining > 0) {
            boolean progress = false;
            for (int s = 0; s < S; s++) {
                while (next[s] < orders.get(s).size()) {
                    int[] item = orders.get(s).get(next[s]);
                    TaskHandle<Map<String, INDArray>> h = item[0] == 1
                            ? spawnForward(st, s, item[1], last[s], fwd)
                            : spawnBackward(st, s, item[1], last[s], fwd, bwd);
                    if (h == null) {
                        break;
                    }
                    (item[0] == 1 ? fwd : bwd)[s][item[1]] = h;
                    last[s] = h;
                    next[s]++;
                    remaining--;
                    progress = true;
                }
            }
            if (!progress) {
                throw new IllegalStateException("pipeline schedule " + ctx.schedule() + " cannot make progress; "
                        + "stages wait on each other");
            }
        }
        // Per stage, after its last task: apply the update to the stage's parameters and copy them to the caller's graph.
        TrainingConfig tc = master.getTrainingConfig();
        int iteration = tc.getIterationCount();
        int epoch = tc.getEpochCount();
        List<TaskHandle<Void>> updates = new ArrayList<>();
        for (int s = 0; s < S; s++) {
            int stage = s;
            TaskOptions opt = TaskOptions.named("pp-update-s" + s).priority(2).scope(Scope.processors(s));
            updates.add(scheduler.spawn(opt, (Object after) -> {
                update(st, stage, tc, iteration, epoch);
                return null;
            }, last[s]));
        }
        for (TaskHandle<Void> u : updates) {
            SameDiffDag.join(u);
        }
        tc.incrementIterationCount();
        steps++;
        double loss = 0;
        for (double l : st.lossSums) {
            loss += l;
        }
        long makespan = st.lastEnd.get() - st.firstStart.get();
        long busy = 0;
        for (long b : st.busyNs) {
            busy += b;
        }
        double bubble = makespan <= 0 ? 0 : Math.max(0, 1 - busy / ((double) S * makespan));
        lastStep = new StepStats(bubble, (S - 1) / (double) (m + S - 1), st.peakBytes.get(), makespan, m);
        return loss;
    }

    private TaskHandle<Map<String, INDArray>> spawnForward(StepState st, int s, int mb, TaskHandle<?> prev,
                                                           TaskHandle<Map<String, INDArray>>[][] fwd) {
        StageGraph g = graphs.get(s);
        List<Integer> from = new ArrayList<>();
        for (String x : g.receivedActivations) {
            int p = producerStage.get(x);
            if (fwd[p][mb] == null) {
                return null;
            }
            if (!from.contains(p)) {
                from.add(p);
            }
        }
        Object[] args = new Object[from.size() + 1];
        args[0] = prev == null ? "" : prev;
        for (int k = 0; k < from.size(); k++) {
            args[k + 1] = fwd[from.get(k)][mb];
        }
        TaskOptions opt = TaskOptions.named("F s" + s + " m" + mb).scope(Scope.processors(s))
                .costHint(java.time.Duration.ofNanos(Math.max(1, (long) g.stage.costNanos())));
        return scheduler.spawnN(opt, a -> {
            long t0 = System.nanoTime();
            Map<String, INDArray> feeds = feeds(st, g, mb, a);
            Map<String, INDArray> out = g.forward(feeds);
            long bytes = 0;
            for (INDArray o : out.values()) {
                bytes += o.length() * o.dataType().width();
            }
            st.allocate(bytes);
            st.timed(s, t0, System.nanoTime());
            return out;
        }, args);
    }

    /** The stage's placeholders for micro-batch mb and its received activations from the producers' results. */
    @SuppressWarnings("unchecked")
    private Map<String, INDArray> feeds(StepState st, StageGraph g, int mb, Object[] producerResults) {
        Map<String, INDArray> feeds = new HashMap<>();
        Map<String, INDArray> micro = st.micro.get(mb);
        for (String p : g.placeholders) {
            INDArray v = micro.get(p);
            if (v == null) {
                throw new IllegalArgumentException("the batch has no value for placeholder '" + p + "', read by stage "
                        + g.stage.index());
            }
            feeds.put(p, v);
        }
        for (int k = 1; k < producerResults.length; k++) {
            Map<String, INDArray> r = (Map<String, INDArray>) producerResults[k];
            for (String x : g.receivedActivations) {
                INDArray v = r.get(x);
                if (v != null) {
                    feeds.put(x, v);
                }
            }
        }
        return feeds;
    }

    private TaskHandle<Map<String, INDArray>> spawnBackward(StepState st, int s, int mb, TaskHandle<?> prev,
                                                            TaskHandle<Map<String, INDArray>>[][] fwd,
                                                            TaskHandle<Map<String, INDArray>>[][] bwd) {
        StageGraph g = graphs.get(s);
        List<Integer> from = new ArrayList<>();
        for (String x : g.receivedActivations) {
            int p = producerStage.get(x);
            if (!from.contains(p)) {
                from.add(p);
            }
        }
        List<Integer> gradFrom = new ArrayList<>();
        for (String o : g.outputs) {
            for (int c : consumerStages.getOrDefault(o, List.of())) {
                if (bwd[c][mb] == null) {
                    return null;
                }
                if (!gradFrom.contains(c)) {
                    gradFrom.add(c);
                }
            }
        }
        // args: [previous task on the stage, producers' forwards..., consumers' backwards...]
        Object[] args = new Object[1 + from.size() + gradFrom.size()];
        args[0] = prev == null ? "" : prev;
        for (int k = 0; k < from.size(); k++) {
            args[1 + k] = fwd[from.get(k)][mb];
        }
        for (int k = 0; k < gradFrom.size(); k++) {
            args[1 + from.size() + k] = bwd[gradFrom.get(k)][mb];
        }
        int nFrom = from.size();
        TaskOptions opt = TaskOptions.named("B s" + s + " m" + mb).scope(Scope.processors(s))
                .costHint(java.time.Duration.ofNanos(Math.max(1, (long) (3 * g.stage.costNanos()))));
        return scheduler.spawnN(opt, a -> {
            long t0 = System.nanoTime();
            Object[] producers = new Object[1 + nFrom];
            System.arraycopy(a, 0, producers, 0, 1 + nFrom);
            Map<String, INDArray> feeds = feeds(st, g, mb, producers);
            Map<String, INDArray> outGrads = new HashMap<>();
            for (int k = 1 + nFrom; k < a.length; k++) {
                @SuppressWarnings("unchecked")
                Map<String, INDArray> r = (Map<String, INDArray>) a[k];
                for (Map.Entry<String, INDArray> e : r.entrySet()) {
                    if (g.outputs.contains(e.getKey())) {
                        outGrads.merge(e.getKey(), e.getValue(), INDArray::add);
                    }
                }
            }
            OutAndGrad og = g.backward(feeds, outGrads);
            double w = st.weight[mb];
            for (String p : g.parameters) {
                INDArray grad = og.getGradients().get(p);
                if (grad == null) {
                    throw new IllegalStateException("stage " + s + " computed no gradient for parameter '" + p + "'");
                }
                INDArray scaled = grad.mul(w);
                st.gradSums[s].merge(p, scaled, INDArray::addi);
            }
            for (String l : g.losses) {
                INDArray v = og.getOutputs().get(l);
                st.lossSums[s] += w * (v.isScalar() ? v.getDouble(0) : v.sumNumber().doubleValue());
            }
            Map<String, INDArray> inGrads = new HashMap<>();
            for (String x : g.receivedActivations) {
                inGrads.put(x, og.getGradients().get(x));
            }
            // The activations this stage received for mb are no longer needed once every receiver has run backward.
            release(st, g, mb, producers);
            st.timed(s, t0, System.nanoTime());
            return inGrads;
        }, args);
    }

    private void release(StepState st, StageGraph g, int mb, Object[] producers) {
        long bytes = 0;
        for (String x : g.receivedActivations) {
            List<Integer> receivers = consumerStages.get(x);
            // Count the bytes once, at the last receiver in stage order (the last to run backward for mb is the first
            // stage, as backward runs from the last stage to the first).
            if (receivers.get(0) == g.stage.index()) {
                for (int k = 1; k < producers.length; k++) {
                    @SuppressWarnings("unchecked")
                    INDArray v = ((Map<String, INDArray>) producers[k]).get(x);
                    if (v != null) {
                        bytes += v.length() * v.dataType().width();
                    }
                }
            }
        }
        st.allocate(-bytes);
    }

    private void update(StepState st, int s, TrainingConfig tc, int iteration, int epoch) {
        StageGraph g = graphs.get(s);
        for (String p : g.parameters) {
            INDArray param = g.sd.getArrForVarName(p);
            INDArray grad = st.gradSums[s].get(p);
            updaters[s].apply(p, param, grad, tc, iteration, epoch);
            master.getArrForVarName(p).assign(param);
        }
    }

    @Override
    public void close() {
        if (!closed) {
            closed = true;
            scheduler.close();
        }
    }

    @Override
    public String toString() {
        return "SameDiffPipeline[stages=" + graphs.size() + ", microBatches=" + ctx.microBatches() + ", schedule="
                + ctx.schedule() + ", steps=" + steps + "]";
    }
}
