package dev.poniard.bridge;

import dev.poniard.scheduler.Scheduler;
import dev.poniard.scheduler.Scope;
import dev.poniard.scheduler.TaskFailedException;
import dev.poniard.scheduler.TaskHandle;
import dev.poniard.scheduler.TaskOptions;
import dev.poniard.scheduler.comm.Algorithm;
import dev.poniard.scheduler.comm.CommAbortedException;
import dev.poniard.scheduler.comm.CommException;
import dev.poniard.scheduler.comm.Communicator;
import dev.poniard.scheduler.comm.ReduceOp;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Map;
import java.util.Objects;
import java.util.Queue;
import java.util.Set;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.CompletionException;
import java.util.concurrent.ConcurrentLinkedQueue;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicLong;
import java.util.function.Function;
import java.util.function.Supplier;
import org.agrona.BufferUtil;
import org.nd4j.autodiff.functions.DifferentialFunction;
import org.nd4j.autodiff.samediff.SDVariable;
import org.nd4j.autodiff.samediff.SameDiff;
import org.nd4j.autodiff.samediff.TrainingConfig;
import org.nd4j.autodiff.samediff.api.OutAndGrad;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;
import org.nd4j.linalg.learning.config.IUpdater;

/**
 * Pipeline (model-parallel) training of a SameDiff graph: the ops are cut into S contiguous stages balanced by
 * their ops' times on the sample batch, then by parameter memory ({@link SameDiffDag#partition}), each stage runs on
 * its own scheduler processor, and every step's global batch is split into M micro-batches that flow through the
 * stages under a GPipe or 1F1B (PipeDream-Flush) schedule. The stages live in one process, or on several ranks of a
 * {@link Communicator} (stage s on rank s mod size by default), in which case activations and their gradients travel
 * between ranks as tagged point-to-point messages. After each step the parameters equal {@code sd.fit} on the whole
 * batch.
 *
 * <pre>{@code
 * try (SameDiffPipeline p = SameDiffPipeline.launch(new SameDiffPipeline.Context().sameDiff(sd)
 *         .stages(2).microBatches(8).schedule(SameDiffPipeline.Schedule.ONE_F_ONE_B).sample(sampleBatch))) {
 *     double loss = p.step(Map.of("in", x, "label", y));
 *     SameDiffPipeline.StepStats st = p.lastStep();      // measured bubble, peak activation bytes
 * }
 * // Across ranks (SPMD: every rank runs this with the same graph, context and batches):
 * SameDiffPipeline.launch(new SameDiffPipeline.Context().sameDiff(sd).communicator(comm).sample(sampleBatch));
 * }</pre>
 *
 * <p><b>Implementation overview.</b> At launch the graph is imported, timed op by op on the sample batch
 * ({@link SameDiffDag#timeCosts}) and partitioned, and each stage becomes a {@link StageGraph}: a pruned duplicate
 * whose received activations are placeholders and whose backward is SameDiff's gradient of Σ losses +
 * Σ sum(output ⊙ ∂L/∂output), with ∂L/∂output seeded rather than differentiated. One step spawns, per stage s and
 * micro-batch m, a forward task F(s,m) and a backward task B(s,m), all scoped to stage s's processor:
 * <ul>
 *   <li>F(s,m) runs the stage's forward ops (the last stage's too: its loss) and keeps the values its gradient ops
 *       read; B(s,m) runs only the gradient ops on them and drops them, so each stage costs one forward and one
 *       backward per micro-batch. With {@link Context#recomputeForward(boolean)}, or for a stage whose gradient holds an
 *       op the bridge cannot run outside SameDiff, F keeps only the outputs and B recomputes the forward
 *       (activation checkpointing: a non-last stage then costs two forwards, which unbalances the pipeline).</li>
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
 * <p><b>Across ranks</b> (SPMD, as DESIGN §2): every rank imports the same graph and builds the same stage list; the
 * ranks first check that they agree (graph fingerprint, S, M, schedule, placement) and take rank 0's cut points, since
 * cost estimates are timed and may differ. A rank builds stage graphs, updater state and scheduler processors only for
 * its own stages. Every activation handed from a stage on one rank to a stage on another is an <i>edge</i>; at the
 * start of a step each rank posts, for each of its incoming edges and micro-batches, a non-blocking receive of the
 * message header (dtype, shape, sender, step), and when a header arrives it is validated against what the receiving
 * stage expects and a receive of the payload is posted straight into a freshly allocated array. These receives are
 * async scheduler tasks that F (activations) or B (gradients) depend on, so a stage's processor is never held while
 * data is in flight and 1F1B's forwards and backwards overlap with the transfers. F and B send their outputs with
 * non-blocking sends; the step waits for the sends, then all-reduces the loss (which also ends the step on every rank
 * together). Tags: {@code tagBase + ((((step mod 2)·2 + direction)·M + m)·E + edge)·2 + part}.
 * <p>Failures never hang: a task that fails, a header that does not match, or a receive that fails (a peer lost)
 * aborts the communicator with a reason, so every rank's pending receives fail and its step throws; the step then
 * reports the original cause (a local error before a failure passed on by a peer). A pipeline whose step failed
 * refuses further steps.
 * <p>Activation memory is accounted as the bytes of stage outputs alive on this rank between the forward that
 * produced (or received) them and the last local backward that consumed them, and separately with the forward values
 * kept from F(s,m) to B(s,m) added ({@link StepStats#peakHeldBytes()}); their peaks and the measured bubble (idle
 * share of this rank's stage processors between the step's first task start and last task end) are reported per
 * step. Between steps, {@link #rebalance()} may re-cut the stages from the stage times measured in the last steps,
 * rebuilding the stages whose ops changed from the caller's graph, which then holds every parameter (across ranks,
 * after a gather); updater state moves with its parameter, across ranks by a broadcast from the rank that held it.
 * Each parameter must belong to one stage (no weight tying across stages). An instance is used by one thread at a
 * time; the caller's graph is the source of parameters at launch and receives its own stages' parameters after every
 * step ({@link #gatherParameters()} brings every rank all of them).
 */
public final class SameDiffPipeline implements SameDiffTraining, AutoCloseable {
    /** The order in which a stage runs its micro-batches' forward and backward tasks. */
    public enum Schedule {
        /** All forwards, then all backwards (Huang et al., 2019). */
        GPIPE,
        /** One forward, one backward in steady state, flushing at the end of each step (PipeDream-Flush, Narayanan et al., 2021). */
        ONE_F_ONE_B
    }

    /**
     * Configuration; defaults from system properties {@code poniard.pipeline.stages} (2 in one process, the
     * communicator's size across ranks), {@code .microBatches} (4), {@code .tagBase} (0x20000000).
     */
    public static final class Context {
        private SameDiff sameDiff;
        private int stages = Integer.getInteger("poniard.pipeline.stages", 2);
        private boolean stagesSet = System.getProperty("poniard.pipeline.stages") != null;
        private int microBatches = Integer.getInteger("poniard.pipeline.microBatches", 4);
        private Schedule schedule = Schedule.ONE_F_ONE_B;
        private Map<String, INDArray> sample;
        private boolean trace;
        private LossReduction lossReduction = LossReduction.MEAN;
        private Set<String> unsharded = Set.of();
        private Communicator communicator;
        private int[] placement;
        private int tagBase = Integer.getInteger("poniard.pipeline.tagBase", 0x2000_0000);
        private boolean recomputeForward = Boolean.getBoolean("poniard.pipeline.recomputeForward");
        private int rebalanceEvery = Integer.getInteger("poniard.pipeline.rebalanceEvery", 0);
        private int[] cut;
        private Function<DifferentialFunction, String> refuseOp = OpRunner::unsupportedReason;

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

        /** Number of pipeline stages S, one scheduler processor each (default: 2, or one per rank with a communicator). */
        public Context stages(int value) {
            stages = value;
            stagesSet = true;
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

        /**
         * A batch of every placeholder, used at launch to learn shapes and to time each op for the partition
         * ({@link SameDiffDag#timeCosts}): give it the rows of one micro-batch so that the stages balance at the
         * run's sizes (a smaller sample balances the ops' fixed costs, which dominate only on small layers).
         */
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

        public Communicator communicator() {
            return communicator;
        }

        /**
         * Spreads the stages over the ranks of {@code value} (null: one process). Every rank must launch with the same
         * graph and context and call {@link #step} with the same batches (at least the placeholders its stages read).
         */
        public Context communicator(Communicator value) {
            communicator = value;
            return this;
        }

        /** The rank of every stage, or null for the default: stage s on rank s mod size. */
        public int[] placement() {
            return placement == null ? null : placement.clone();
        }

        /** Puts stage s on rank {@code ranks[s]}; a rank may hold several stages, or none. */
        public Context placement(int... ranks) {
            placement = ranks == null ? null : ranks.clone();
            return this;
        }

        public int tagBase() {
            return tagBase;
        }

        /** The first point-to-point tag the pipeline uses on the communicator (keep other traffic below it). */
        public Context tagBase(int value) {
            tagBase = value;
            return this;
        }

        public boolean recomputeForward() {
            return recomputeForward;
        }

        /**
         * Activation checkpointing: keep only the activations handed between stages and recompute each stage's forward
         * in its backward (about one more forward of compute per micro-batch, for the memory of the values the
         * backward reads). Default false (system property {@code poniard.pipeline.recomputeForward}): the forward keeps
         * those values and the backward runs only the gradient ops.
         */
        public Context recomputeForward(boolean value) {
            recomputeForward = value;
            return this;
        }

        public int[] cut() {
            return cut == null ? null : cut.clone();
        }

        /**
         * Cuts the graph at these op indices (topological order, {@link SameDiffDag#ops()}) instead of by the ops'
         * timed costs: stage s holds ops {@code [bounds[s], bounds[s+1])}, from 0 to the number of ops; sets
         * {@link #stages(int)} to {@code bounds.length - 1}. A cut that separates two ops reading one parameter is
         * refused at launch ({@link SameDiffDag#cuttable()}). Null (the default): balanced by cost.
         */
        public Context cut(int... bounds) {
            cut = bounds == null ? null : bounds.clone();
            if (cut != null) {
                stages(cut.length - 1);
            }
            return this;
        }

        public int rebalanceEvery() {
            return rebalanceEvery;
        }

        /**
         * Re-cuts the stages from measured times ({@link SameDiffPipeline#rebalance()}) after every {@code steps}
         * steps on one cut; 0 (the default; system property {@code poniard.pipeline.rebalanceEvery}) never does on its
         * own. Across ranks every rank must set the same value.
         */
        public Context rebalanceEvery(int steps) {
            rebalanceEvery = steps;
            return this;
        }

        /** Test hook: why an op of a stage's gradient function must run inside SameDiff (null: it need not). */
        Context refuseOp(Function<DifferentialFunction, String> value) {
            refuseOp = Objects.requireNonNull(value, "refuseOp");
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
            if (communicator != null && !stagesSet) {
                stages = placement != null ? placement.length : communicator.size();
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
                throw new IllegalArgumentException("sample must be set: a micro-batch of every placeholder, to learn shapes "
                        + "and time the ops for the partition");
            }
            int size = communicator == null ? 1 : communicator.size();
            if (placement != null) {
                if (placement.length != stages) {
                    throw new IllegalArgumentException("placement names " + placement.length + " ranks but there are "
                            + stages + " stages: give one rank per stage, got " + Arrays.toString(placement));
                }
                for (int r : placement) {
                    if (r < 0 || r >= size) {
                        throw new IllegalArgumentException("placement names rank " + r + " but the ranks are 0.." + (size - 1)
                                + (communicator == null ? " (no communicator: one process is rank 0)" : "") + ", got "
                                + Arrays.toString(placement));
                    }
                }
            }
            if (tagBase < 0) {
                throw new IllegalArgumentException("tagBase must be >= 0, got " + tagBase);
            }
            if (cut != null && cut.length - 1 != stages) {
                throw new IllegalArgumentException("cut " + Arrays.toString(cut) + " makes " + (cut.length - 1)
                        + " stages but stages is " + stages + ": give stages + 1 bounds, or set stages before cut");
            }
            if (rebalanceEvery < 0) {
                throw new IllegalArgumentException("rebalanceEvery must be >= 0 (0: never), got " + rebalanceEvery);
            }
            return this;
        }
    }

    /**
     * What one step measured (on this rank's stages).
     *
     * @param bubbleFraction      idle share of the stage processors between the first task start and the last task end
     * @param theoreticalBubble   (S−1)/(M+S−1) for this step's S and M
     * @param peakActivationBytes the most bytes of stage outputs alive at once
     * @param makespanNs          first F start to last B end
     * @param microBatches        micro-batches actually used
     * @param peakHeldBytes       the most bytes held between tasks at once: the stage outputs of
     *                            {@code peakActivationBytes} plus the forward values kept for backward (none with
     *                            {@link Context#recomputeForward(boolean)})
     * @param replayedBubble      the bubble of this step's schedule replayed with its measured task times and no time
     *                            between tasks: what the tasks' own times cost (stages of unequal cost, and tasks that
     *                            other threads slowed down), so that {@code bubbleFraction} minus it is the time between
     *                            tasks (hand-offs, wake-ups); NaN when the stages span ranks
     * @param stageBusyNs         per stage, the time its forward and backward tasks ran in this step (0 for a stage on
     *                            another rank): unequal figures are stages of unequal cost, or processors of unequal
     *                            speed
     */
    public record StepStats(double bubbleFraction, double theoreticalBubble, long peakActivationBytes, long makespanNs,
                            int microBatches, long peakHeldBytes, double replayedBubble, long[] stageBusyNs) {
        public StepStats {
            stageBusyNs = stageBusyNs.clone();
        }

        @Override
        public long[] stageBusyNs() {
            return stageBusyNs.clone();
        }
    }

    /** An activation handed from stage {@code producer} to stage {@code consumer} on another rank. */
    private record Edge(int id, String activation, int producer, int consumer) {
    }

    /** Timed passes over the sample for the partition; the budget bounds them on large graphs. */
    private static final int TIMING_PASSES = 15;
    private static final java.time.Duration TIMING_BUDGET = java.time.Duration.ofMillis(500);
    private static final int FORWARD = 0;
    private static final int BACKWARD = 1;
    /** "PNPP" */
    private static final int MAGIC = 0x504E5050;
    private static final int MAX_RANK = 8;
    private static final int HEADER_BYTES = 32 + 8 * MAX_RANK;
    /** Steps of stage times {@link #rebalance()} looks back at, and the fewest it needs on a cut. */
    static final int HISTORY = 16;
    static final int MIN_STEPS_ON_CUT = 3;
    /** How much faster the slowest stage must be predicted to get for {@link #rebalance()} to re-cut. */
    static final double MIN_GAIN = 0.05;

    private final Context ctx;
    private final SameDiff master;
    private final List<String> losses;
    /** The graph, its ops costed; its cut into stages may change between steps ({@link #rebalance()}). */
    private final SameDiffDag dag;
    // What follows down to the edges derives from the cut: applyCut sets it, between steps only.
    private List<Stage> stages;
    /** Stage graphs of this rank's stages; null for stages on other ranks. */
    private StageGraph[] graphs;
    private ParameterUpdater[] updaters;
    /** Per local stage: each parameter's gradient sum over a step's micro-batches (null for other ranks' stages). */
    private Map<String, INDArray>[] gradAccumulators;
    private final Scheduler scheduler;
    private final Communicator comm;
    private final int rank;
    private final int[] stageRank;
    /** Stage → this rank's scheduler processor, or -1 for a stage on another rank. */
    private final int[] processorOf;
    private final int[] localStages;
    /** Per stage: the activations it receives from earlier stages, and the parameters its ops read. */
    private List<List<String>> received;
    private List<List<String>> readParams;
    /** For every handed-over activation: the stage that produces it and the stages that receive it. */
    private Map<String, Integer> producerStage;
    private Map<String, List<Integer>> consumerStages;
    /** Shapes seen in the sample (first dimension free), the reference for checking received arrays. */
    private Map<String, long[]> sampleShape;
    private List<Edge> edges;
    /** Per stage, the busy time of its tasks in each of the last {@link #HISTORY} steps (a ring, by step). */
    private final long[][] busyHistory;
    /** Steps run on the current cut. */
    private int stepsOnCut;
    /** The largest stage time measured on each cut tried ({@link #rebalance()} does not go back to a worse one). */
    private final Map<String, Double> measuredCuts = new HashMap<>();
    /** The cut {@link #rebalance()} left last, until the new one has been measured; null otherwise. */
    private int[] previousCut;
    /** Each op's forward + backward cost as rank 0 timed it: every rank re-cuts from the same numbers. */
    private final double[] cutCosts;
    /** Where a cut may fall without splitting a parameter's readers. */
    private final boolean[] cuttable;
    private int rebalances;
    private StepStats lastStep;
    private long steps;
    private RuntimeException failure;
    private boolean closed;

    private SameDiffPipeline(Context ctx) {
        this.ctx = ctx;
        this.master = ctx.sameDiff();
        this.comm = ctx.communicator();
        this.rank = comm == null ? 0 : comm.rank();
        int size = comm == null ? 1 : comm.size();
        int nStages = ctx.stages();
        this.stageRank = new int[nStages];
        for (int s = 0; s < nStages; s++) {
            stageRank[s] = ctx.placement() != null ? ctx.placement()[s] : s % size;
        }
        SameDiffDag full = SameDiffDag.importGraph(master);
        full.requireDifferentiable();
        this.losses = List.copyOf(master.getLossVariables());
        SameDiffDag dag = full.timeCosts(ctx.sample(), TIMING_PASSES, TIMING_BUDGET);
        if (comm != null) {
            agree(dag);
        }
        List<Stage> cut = ctx.cut() != null ? dag.stagesAt(ctx.cut()) : dag.partition(nStages);
        if (comm != null) {
            // Costs are timed, so ranks may cut differently: everyone takes rank 0's cut points.
            int[] bounds = new int[nStages + 1];
            for (int s = 0; s < nStages; s++) {
                bounds[s] = cut.get(s).firstOp();
            }
            bounds[nStages] = dag.ops().size();
            comm.broadcast(bounds, 0);
            cut = dag.stagesAt(bounds);
        }
        double[] costs = new double[dag.ops().size()];
        for (int i = 0; i < costs.length; i++) {
            costs[i] = dag.ops().get(i).trainingNanos();
        }
        if (comm != null) {
            comm.broadcast(costs, 0);
        }
        this.cutCosts = costs;
        this.cuttable = dag.cuttable();
        this.dag = dag;
        this.processorOf = new int[nStages];
        List<Integer> local = new ArrayList<>();
        for (int s = 0; s < nStages; s++) {
            processorOf[s] = stageRank[s] == rank ? local.size() : -1;
            if (stageRank[s] == rank) {
                local.add(s);
            }
        }
        this.localStages = local.stream().mapToInt(Integer::intValue).toArray();
        this.busyHistory = new long[nStages][HISTORY];
        applyCut(cut, Map.of());
        this.scheduler = Scheduler.launch(new Scheduler.Context()
                .name(comm == null ? "samediff-pipeline" : "samediff-pipeline-rank" + rank)
                .workers(Math.max(1, localStages.length)).trace(ctx.trace())
                .workerStart(NativeThreads::oneThreadPerWorker));
    }

    /**
     * Makes {@code cut} the pipeline's stages: works out what each stage receives and hands on, and builds this rank's
     * stage graphs from the caller's graph (which holds every parameter between steps), reusing those whose ops did
     * not change. A parameter's updater state moves with it from the stage that held it in this process, or starts
     * from {@code carried} (state broadcast by the rank that held it). Nothing changes if this throws.
     */
    private void applyCut(List<Stage> cut, Map<String, INDArray> carried) {
        List<List<String>> received = new ArrayList<>();
        List<List<String>> readParams = new ArrayList<>();
        Map<String, Integer> producerStage = new HashMap<>();
        Map<String, List<Integer>> consumerStages = new HashMap<>();
        Map<String, long[]> sampleShape = new HashMap<>();
        List<Edge> edges = new ArrayList<>();
        Map<String, Integer> paramStage = new HashMap<>();
        for (Stage st : cut) {
            List<String> params = parametersOf(st);
            List<String> acts = new ArrayList<>();
            for (String in : st.inputs()) {
                if (dag.variable(in).kind() == SameDiffDag.VarKind.ACTIVATION) {
                    acts.add(in);
                }
            }
            for (String p : params) {
                Integer other = paramStage.put(p, st.index());
                if (other != null) {
                    throw new UnsupportedGraphException(null, "parameter '" + p + "' is read by ops in stage " + other
                            + " and stage " + st.index() + "; the pipeline keeps each parameter in one stage (no weight "
                            + "tying across stages): use fewer stages or untie the weight");
                }
            }
            readParams.add(params);
            received.add(acts);
            for (String o : st.outputs()) {
                producerStage.put(o, st.index());
            }
        }
        for (int c = 0; c < cut.size(); c++) {
            for (String x : received.get(c)) {
                consumerStages.computeIfAbsent(x, k -> new ArrayList<>()).add(c);
                int p = producerStage.get(x);
                if (stageRank[p] != stageRank[c]) {
                    edges.add(new Edge(edges.size(), x, p, c));
                }
                long[] shape = dag.shape(x);
                if (shape != null) {
                    shape = shape.clone();
                    shape[0] = -1;
                    sampleShape.put(x, shape);
                }
            }
        }
        long lastTag = ctx.tagBase() + 8L * ctx.microBatches() * Math.max(1, edges.size());
        if (lastTag > Integer.MAX_VALUE) {
            throw new IllegalArgumentException("tags " + ctx.tagBase() + ".." + lastTag + " do not fit in an int: lower "
                    + "tagBase or microBatches (" + ctx.microBatches() + " micro-batches, " + edges.size() + " cross-rank "
                    + "activations)");
        }

        StageGraph[] graphs = new StageGraph[cut.size()];
        ParameterUpdater[] updaters = new ParameterUpdater[cut.size()];
        @SuppressWarnings("unchecked")
        Map<String, INDArray>[] accumulators = new Map[cut.size()];
        for (int s : localStages) {
            Stage st = cut.get(s);
            if (stages != null && stages.get(s).firstOp() == st.firstOp() && stages.get(s).endOp() == st.endOp()) {
                graphs[s] = this.graphs[s];
                updaters[s] = this.updaters[s];
                accumulators[s] = gradAccumulators[s];
                continue;
            }
            StageGraph g = StageGraph.build(dag, st, losses, ctx.recomputeForward(), ctx.refuseOp);
            if (!new LinkedHashSet<>(g.receivedActivations).equals(new LinkedHashSet<>(received.get(s)))) {
                throw new IllegalStateException("stage " + s + " receives " + g.receivedActivations + " but the DAG says "
                        + received.get(s));
            }
            graphs[s] = g;
            updaters[s] = new ParameterUpdater(g.sd, g.parameters, this.updaters, carried);
            accumulators[s] = new HashMap<>();
        }
        this.stages = cut;
        this.received = received;
        this.readParams = readParams;
        this.producerStage = producerStage;
        this.consumerStages = consumerStages;
        this.sampleShape = sampleShape;
        this.edges = edges;
        this.graphs = graphs;
        this.updaters = updaters;
        this.gradAccumulators = accumulators;
        this.stepsOnCut = 0;
    }

    /** The trainable parameters the ops of {@code st} read, in the order they first read them. */
    private List<String> parametersOf(Stage st) {
        Set<String> seen = new LinkedHashSet<>();
        for (int i = st.firstOp(); i < st.endOp(); i++) {
            for (String in : dag.ops().get(i).inputs()) {
                if (dag.variable(in).kind() == SameDiffDag.VarKind.PARAMETER) {
                    seen.add(in);
                }
            }
        }
        return new ArrayList<>(seen);
    }

    /**
     * Imports, costs and partitions the graph, builds this rank's stage graphs and a scheduler with one worker per
     * local stage. With a communicator this is collective: every rank must launch.
     */
    public static SameDiffPipeline launch(Context ctx) {
        ctx.conclude();
        try {
            return new SameDiffPipeline(ctx);
        } catch (RuntimeException e) {
            Communicator c = ctx.communicator();
            if (c != null && c.failure() == null && !(e instanceof CommException)) {
                // The other ranks may wait in a collective of the launch: let them fail with this reason.
                c.abort("rank " + c.rank() + " could not launch the pipeline: " + e.getMessage());
            }
            throw e;
        }
    }

    /** Checks that every rank runs the same graph with the same pipeline settings (collective). */
    private void agree(SameDiffDag dag) {
        long fp = 0xcbf29ce484222325L;
        for (SameDiffDag.OpNode op : dag.ops()) {
            for (byte b : (op.name() + '\u0000' + op.type() + '\u0001').getBytes(StandardCharsets.UTF_8)) {
                fp = (fp ^ b) * 0x100000001b3L;
            }
        }
        long[] mine = {fp >>> 1, dag.ops().size(), ctx.stages(), ctx.microBatches(), ctx.schedule().ordinal(),
            Arrays.hashCode(stageRank), ctx.tagBase(), ctx.lossReduction().ordinal(), ctx.rebalanceEvery()};
        String[] what = {"graph (op names and types)", "number of ops", "stages", "microBatches", "schedule", "placement",
            "tagBase", "lossReduction", "rebalanceEvery"};
        int k = mine.length;
        long[] both = new long[2 * k];
        for (int i = 0; i < k; i++) {
            both[i] = mine[i];
            both[k + i] = -mine[i];
        }
        comm.allReduce(both, ReduceOp.MAX);
        for (int i = 0; i < k; i++) {
            if (both[i] != mine[i] || -both[k + i] != mine[i]) {
                throw new IllegalStateException("the ranks disagree on the pipeline's " + what[i] + " (rank " + rank
                        + " has " + mine[i] + ", the ranks range from " + -both[k + i] + " to " + both[i] + "): every rank "
                        + "must launch SameDiffPipeline with the same graph and Context");
            }
        }
    }

    public List<Stage> stages() {
        return stages;
    }

    /** The rank each stage lives on. */
    public int[] placement() {
        return stageRank.clone();
    }

    /** The stages this rank holds, ascending. */
    public int[] localStages() {
        return localStages.clone();
    }

    public Scheduler scheduler() {
        return scheduler;
    }

    /** This rank's graph of stage {@code s}, or null (a test hook). */
    StageGraph graph(int s) {
        return graphs[s];
    }

    /** Measurements of the last step, or null before the first. */
    public StepStats lastStep() {
        return lastStep;
    }

    public long steps() {
        return steps;
    }

    @Override
    public SameDiff sameDiff() {
        return master;
    }

    /** How many times {@link #rebalance()} has re-cut the stages. */
    public int rebalances() {
        return rebalances;
    }

    /**
     * Re-cuts the stages, between steps, by their measured times: each op's cost (timed at launch) is scaled by how
     * much longer its stage's tasks ran in the last steps than the stage's ops were costed at, and the ops are cut
     * again to minimise the slowest stage ({@link SameDiffDag#partition}'s cut). It re-cuts only if that is predicted
     * to make the slowest stage at least {@link #MIN_GAIN} faster, and never to a cut already tried that measured no
     * better; a re-cut whose stages then measure no better than those it left is undone by the next call. On a machine
     * whose cores change speed from second to second it chases that noise: use it for imbalance that lasts (costs
     * timed on a sample of another size, a slower processor). The parameters and their updater state move with their
     * ops, across ranks too, so training continues exactly as {@code sd.fit} would. Needs {@link #MIN_STEPS_ON_CUT}
     * steps on the current cut. Across ranks it is collective: every rank calls it after the same step, and they all
     * decide alike from the stage times they all-reduce and the op costs rank 0 timed.
     *
     * @return whether the stages changed
     * @throws CommException when a peer failed (the pipeline then refuses further steps)
     */
    public boolean rebalance() {
        if (closed || failure != null) {
            throw new IllegalStateException("this SameDiffPipeline is " + (closed ? "closed" : "failed"));
        }
        int n = Math.min(stepsOnCut, HISTORY);
        if (n < MIN_STEPS_ON_CUT || stages.size() < 2) {
            return false;
        }
        double[] measured = new double[stages.size()];
        for (int s = 0; s < measured.length; s++) {
            long[] b = Arrays.copyOf(busyHistory[s], n);
            Arrays.sort(b);
            measured[s] = b[n / 2];
        }
        try {
            if (comm != null) {
                comm.allReduce(measured, ReduceOp.SUM); // each stage's time comes from its own rank, the others add 0
            }
            return rebalance(measured);
        } catch (RuntimeException e) {
            failure = e;
            if (comm != null && comm.failure() == null && !(e instanceof CommException)) {
                comm.abort("rank " + rank + " could not re-cut the pipeline: " + e.getMessage());
            }
            throw e;
        }
    }

    /** {@link #rebalance()} on these stage times (median nanoseconds per step, by stage). */
    boolean rebalance(double[] measured) {
        int[] bounds = new int[stages.size() + 1];
        for (Stage st : stages) {
            bounds[st.index() + 1] = st.endOp();
        }
        double slowest = Arrays.stream(measured).max().orElse(0);
        measuredCuts.put(Arrays.toString(bounds), slowest);
        int[] left = previousCut;
        previousCut = null;
        if (left != null && slowest >= measuredCuts.get(Arrays.toString(left))) {
            // The last re-cut measured no better than the cut it left (a wrong prediction, or the machine's noise):
            // go back. The cut stays on record, so the prediction that chose it cannot take the pipeline there again.
            moveTo(left);
            rebalances++;
            return true;
        }
        int[] next = rebalancedCut(cutCosts, bounds, measured, MIN_GAIN, cuttable);
        Double before = next == null ? null : measuredCuts.get(Arrays.toString(next));
        if (next == null || before != null && before >= slowest * (1 - MIN_GAIN)) {
            return false;
        }
        moveTo(next);
        previousCut = bounds;
        rebalances++;
        return true;
    }

    /**
     * Makes the stages {@code [bounds[s], bounds[s+1])}. Across ranks every rank first gets every parameter
     * ({@link #gatherParameters()}), and each parameter whose stage moves to another rank has its updater state
     * broadcast by its old rank, for the new one to continue from.
     */
    private void moveTo(int[] bounds) {
        List<Stage> cut = dag.stagesAt(bounds);
        Map<String, INDArray> carried = new HashMap<>();
        if (comm != null) {
            gatherParameters();
            Map<String, Integer> oldStage = new HashMap<>();
            for (int s = 0; s < readParams.size(); s++) {
                for (String p : readParams.get(s)) {
                    oldStage.put(p, s);
                }
            }
            IUpdater config = master.getTrainingConfig().getUpdater();
            for (Stage st : cut) {
                for (String p : parametersOf(st)) {
                    int from = stageRank[oldStage.get(p)];
                    int to = stageRank[st.index()];
                    INDArray arr = master.getArrForVarName(p);
                    long size = config.stateSize(arr.length());
                    if (from == to || size == 0) {
                        continue;
                    }
                    INDArray buf = rank == from ? updaters[oldStage.get(p)].state(p).dup('c')
                            : Nd4j.createUninitialized(arr.dataType(), 1, size);
                    comm.broadcast(buf.data().address(), size * arr.dataType().width(), from, Algorithm.AUTO);
                    if (rank == to) {
                        carried.put(p, buf);
                    }
                }
            }
        }
        applyCut(cut, carried);
    }

    /**
     * The cut that minimises the slowest stage when each op costs {@code cost[i]} scaled by its stage's measured time
     * over the sum of its ops' costs, or null unless that is predicted at least {@code minGain} below the slowest
     * measured stage. {@code bounds} are the current cut's op bounds (0, ..., ops), {@code measured} the stages' times;
     * a cut falls only where {@code cuttable} allows ({@link SameDiffDag#cuttable()}).
     */
    static int[] rebalancedCut(double[] cost, int[] bounds, double[] measured, double minGain, boolean[] cuttable) {
        int stages = bounds.length - 1;
        double[] prefix = new double[cost.length + 1];
        for (int s = 0; s < stages; s++) {
            double sum = 0;
            for (int i = bounds[s]; i < bounds[s + 1]; i++) {
                sum += cost[i];
            }
            int ops = bounds[s + 1] - bounds[s];
            for (int i = bounds[s]; i < bounds[s + 1]; i++) {
                // an uncosted stage spreads its time evenly over its ops
                double scaled = sum > 0 ? cost[i] * measured[s] / sum : measured[s] / ops;
                prefix[i + 1] = prefix[i] + scaled;
            }
        }
        int[] next = SameDiffDag.minMaxCut(prefix, stages, prefix, Double.POSITIVE_INFINITY, cuttable);
        if (next == null) {
            return null;
        }
        double predicted = 0;
        for (int s = 0; s < stages; s++) {
            predicted = Math.max(predicted, prefix[next[s + 1]] - prefix[next[s]]);
        }
        double slowest = Arrays.stream(measured).max().orElse(0);
        return !Arrays.equals(next, bounds) && predicted <= slowest * (1 - minGain) ? next : null;
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

    /**
     * The bubble of a step replayed: each stage runs its tasks in {@code orders} (items {forward?, micro-batch}) for
     * the times in {@code taskNs} [stage][FORWARD or BACKWARD][micro-batch], each as soon as its stage is free and its
     * inputs are done (F(s, m) after F(p, m) for every producer p of s; B(s, m) after F(s, m) and B(c, m) for every
     * consumer c), with nothing between tasks. The measured run keeps the same order and precedence, so its bubble is
     * never below this one.
     */
    static double replayBubble(List<List<int[]>> orders, long[][][] taskNs, int[][] producers, int[][] consumers) {
        int stages = orders.size();
        int m = taskNs[0][FORWARD].length;
        long[][][] end = new long[stages][2][m];
        for (long[][] st : end) {
            for (long[] e : st) {
                Arrays.fill(e, -1);
            }
        }
        long[] free = new long[stages];
        int[] next = new int[stages];
        long busy = 0;
        long makespan = 0;
        int remaining = orders.stream().mapToInt(List::size).sum();
        while (remaining > 0) {
            boolean progress = false;
            for (int s = 0; s < stages; s++) {
                while (next[s] < orders.get(s).size()) {
                    int[] item = orders.get(s).get(next[s]);
                    int dir = item[0] == 1 ? FORWARD : BACKWARD;
                    int mb = item[1];
                    long ready = free[s];
                    boolean inputsDone = true;
                    for (int d : dir == FORWARD ? producers[s] : consumers[s]) {
                        long e = end[d][dir][mb];
                        inputsDone &= e >= 0;
                        ready = Math.max(ready, e);
                    }
                    if (dir == BACKWARD) {
                        inputsDone &= end[s][FORWARD][mb] >= 0;
                        ready = Math.max(ready, end[s][FORWARD][mb]);
                    }
                    if (!inputsDone) {
                        break;
                    }
                    long t = taskNs[s][dir][mb];
                    end[s][dir][mb] = free[s] = ready + t;
                    busy += t;
                    makespan = Math.max(makespan, free[s]);
                    next[s]++;
                    remaining--;
                    progress = true;
                }
            }
            if (!progress) {
                throw new IllegalStateException("the stage orders wait on each other; they cannot be replayed");
            }
        }
        return makespan == 0 ? 0 : 1 - busy / ((double) stages * makespan);
    }

    /** Per-step state shared by the step's tasks (each stage's fields are only touched by that stage's processor). */
    private final class StepState {
        final long step;
        final List<Map<String, INDArray>> micro = new ArrayList<>();
        final double[] weight;
        final Map<String, INDArray>[] gradSums;
        final double[] lossSums;
        final long[] busyNs;
        /** [stage][FORWARD or BACKWARD][micro-batch]: each task's measured time, for {@link #replayBubble}. */
        final long[][][] taskNs;
        final AtomicLong firstStart = new AtomicLong(Long.MAX_VALUE);
        final AtomicLong lastEnd = new AtomicLong(Long.MIN_VALUE);
        final AtomicLong liveBytes = new AtomicLong();
        final AtomicLong peakBytes = new AtomicLong();
        final AtomicLong liveHeldBytes = new AtomicLong();
        final AtomicLong peakHeldBytes = new AtomicLong();
        /** Pending sends, and the arrays and headers they read (kept reachable until the sends complete). */
        final Queue<CompletableFuture<Void>> sends = new ConcurrentLinkedQueue<>();
        final Queue<Object> inFlight = new ConcurrentLinkedQueue<>();
        final AtomicBoolean aborted = new AtomicBoolean();

        @SuppressWarnings({"unchecked", "rawtypes"})
        StepState(long step, Map<String, INDArray> batch, long[] bounds, long n) {
            this.step = step;
            int m = bounds.length - 1;
            weight = new double[m];
            for (int i = 0; i < m; i++) {
                micro.add(Batches.slice(batch, ctx.unsharded(), bounds[i], bounds[i + 1]));
                weight[i] = ctx.lossReduction() == LossReduction.MEAN ? (bounds[i + 1] - bounds[i]) / (double) n : 1.0;
            }
            gradSums = new Map[stages.size()];
            for (int s = 0; s < gradSums.length; s++) {
                gradSums[s] = new LinkedHashMap<>();
            }
            lossSums = new double[stages.size()];
            busyNs = new long[stages.size()];
            taskNs = new long[stages.size()][2][m];
        }

        void timed(int s, int direction, int mb, long start, long end) {
            busyNs[s] += end - start;
            taskNs[s][direction][mb] = end - start;
            firstStart.accumulateAndGet(start, Math::min);
            lastEnd.accumulateAndGet(end, Math::max);
        }

        /** Stage outputs ({@code boundary}) and forward values kept for backward ({@code kept}) now held, or released. */
        void allocate(long boundary, long kept) {
            peakBytes.accumulateAndGet(liveBytes.addAndGet(boundary), Math::max);
            peakHeldBytes.accumulateAndGet(liveHeldBytes.addAndGet(boundary + kept), Math::max);
        }

        /** Aborts the communicator once, so that no rank waits for data that will not come. */
        void abort(String reason) {
            if (comm != null && comm.failure() == null && aborted.compareAndSet(false, true)) {
                comm.abort(reason);
            }
        }
    }

    /**
     * One synchronous step on a global batch (placeholders by name, split along the first dimension into
     * micro-batches). Returns the loss of the batch at the parameters before the step, as {@code sd.fit} reports it.
     * Across ranks every rank calls it with the same batch (at least the placeholders its stages read) and gets the
     * same loss.
     *
     * @throws CommException when a peer rank failed or aborted the step (the message names it)
     */
    @Override
    public double step(Map<String, INDArray> batch) {
        if (closed) {
            throw new IllegalStateException("this SameDiffPipeline is closed");
        }
        if (failure != null) {
            throw new IllegalStateException("a previous step of this SameDiffPipeline failed (" + failure.getMessage()
                    + "); launch a new one", failure);
        }
        long n;
        try {
            n = Batches.rows(master, batch, ctx.unsharded());
        } catch (RuntimeException e) {
            if (comm != null && comm.failure() == null) {
                // The other ranks are already waiting for this rank's activations or gradients.
                comm.abort("rank " + rank + " refused the batch of step " + steps + ": " + e.getMessage());
                failure = e;
            }
            throw e;
        }
        long[] bounds = Batches.bounds(n, ctx.microBatches());
        int m = bounds.length - 1;
        int S = stages.size();
        StepState st = new StepState(steps, batch, bounds, n);
        List<TaskHandle<?>> all = new ArrayList<>();

        // Cross-rank receives, posted before any task runs; F and B depend on them as async tasks.
        @SuppressWarnings({"unchecked", "rawtypes"})
        TaskHandle<INDArray>[][] fwdIn = new TaskHandle[edges.size()][m];
        @SuppressWarnings({"unchecked", "rawtypes"})
        TaskHandle<INDArray>[][] bwdIn = new TaskHandle[edges.size()][m];
        for (Edge e : edges) {
            for (int mb = 0; mb < m; mb++) {
                if (stageRank[e.consumer()] == rank) {
                    fwdIn[e.id()][mb] = receiveTask(st, e, FORWARD, mb);
                    all.add(fwdIn[e.id()][mb]);
                }
                if (stageRank[e.producer()] == rank) {
                    bwdIn[e.id()][mb] = receiveTask(st, e, BACKWARD, mb);
                    all.add(bwdIn[e.id()][mb]);
                }
            }
        }

        @SuppressWarnings({"unchecked", "rawtypes"})
        TaskHandle<StageGraph.Kept>[][] fwd = new TaskHandle[S][m];
        @SuppressWarnings({"unchecked", "rawtypes"})
        TaskHandle<Map<String, INDArray>>[][] bwd = new TaskHandle[S][m];
        List<List<int[]>> orders = new ArrayList<>();
        for (int s = 0; s < S; s++) {
            orders.add(order(ctx.schedule(), s, S, m));
        }
        // Spawn in an order that respects data dependencies: sweep this rank's stages, spawning each stage's next task
        // once the local tasks it reads have been spawned (remote inputs are receive tasks, spawned above). A valid
        // schedule always makes progress.
        int[] next = new int[S];
        TaskHandle<?>[] last = new TaskHandle<?>[S];
        int remaining = 2 * localStages.length * m;
        while (remaining > 0) {
            boolean progress = false;
            for (int s : localStages) {
                while (next[s] < orders.get(s).size()) {
                    int[] item = orders.get(s).get(next[s]);
                    TaskHandle<?> h;
                    if (item[0] == 1) {
                        h = fwd[s][item[1]] = spawnForward(st, s, item[1], last[s], fwd, fwdIn);
                    } else {
                        h = bwd[s][item[1]] = spawnBackward(st, s, item[1], last[s], fwd, bwd, fwdIn, bwdIn);
                    }
                    if (h == null) {
                        break;
                    }
                    all.add(h);
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
        List<TaskHandle<?>> updates = new ArrayList<>();
        for (int s : localStages) {
            int stage = s;
            TaskOptions opt = TaskOptions.named("pp-update-s" + s).priority(2).scope(Scope.processors(processorOf[s]));
            updates.add(scheduler.spawn(opt, (Object after) -> guarded(st, "the update of stage " + stage, () -> {
                update(st, stage, tc, iteration, epoch);
                return null;
            }), last[s]));
        }
        all.addAll(updates);
        // Every task of this rank is upstream of its stage's update (a stage's tasks are chained, receives feed them),
        // so wait for the updates first: then the loop below finds the other tasks done and does not park. Joining the
        // tasks one by one woke this thread at each completion: a futex wake on a worker's critical path, and a third
        // runnable thread on the stage workers' cores.
        for (TaskHandle<?> u : updates) {
            try {
                u.join();
            } catch (RuntimeException e) {
                // collected with the others below
            }
        }
        // Wait for every task (a failure aborts the communicator, so none waits forever), then for the sends.
        List<Throwable> failures = new ArrayList<>();
        for (TaskHandle<?> h : all) {
            try {
                h.join();
            } catch (RuntimeException e) {
                failures.add(rootCause(e));
            }
        }
        for (CompletableFuture<Void> f : st.sends) {
            try {
                f.join();
            } catch (RuntimeException e) {
                failures.add(rootCause(e));
            }
        }
        double loss = 0;
        for (double l : st.lossSums) {
            loss += l;
        }
        if (failures.isEmpty() && comm != null) {
            // The loss lives on the last stage's rank; the all-reduce also ends the step on every rank together.
            double[] l = {loss};
            try {
                comm.allReduce(l, ReduceOp.SUM);
                loss = l[0];
            } catch (CommException e) {
                failures.add(e);
            }
        }
        if (!failures.isEmpty()) {
            failure = primary(failures);
            st.abort("rank " + rank + " failed in step " + steps + ": " + failure.getMessage());
            throw failure;
        }
        tc.incrementIterationCount();
        steps++;
        long makespan = st.lastEnd.get() - st.firstStart.get();
        long busy = 0;
        for (long b : st.busyNs) {
            busy += b;
        }
        int busyStages = Math.max(1, localStages.length);
        double bubble = makespan <= 0 ? 0 : Math.max(0, 1 - busy / ((double) busyStages * makespan));
        double replayed = Double.NaN;
        if (localStages.length == S) {
            int[][] producers = new int[S][];
            int[][] consumers = new int[S][];
            for (int s = 0; s < S; s++) {
                producers[s] = localProducers(s).stream().mapToInt(Integer::intValue).toArray();
                consumers[s] = localConsumers(s).stream().mapToInt(Integer::intValue).toArray();
            }
            replayed = replayBubble(orders, st.taskNs, producers, consumers);
        }
        lastStep = new StepStats(bubble, (S - 1) / (double) (m + S - 1), st.peakBytes.get(), Math.max(0, makespan), m,
                st.peakHeldBytes.get(), replayed, st.busyNs);
        for (int s = 0; s < S; s++) {
            busyHistory[s][stepsOnCut % HISTORY] = st.busyNs[s];
        }
        stepsOnCut++;
        if (ctx.rebalanceEvery() > 0 && stepsOnCut % ctx.rebalanceEvery() == 0) {
            rebalance();
        }
        return loss;
    }

    private static Throwable rootCause(Throwable e) {
        Throwable t = e;
        while ((t instanceof TaskFailedException || t instanceof CompletionException || t instanceof ExecutionException)
                && t.getCause() != null) {
            t = t.getCause();
        }
        return t;
    }

    /**
     * The failure to report: a local error before a communication failure, and a failure from a peer (lost, or its
     * abort) before this rank's own abort, which only passes the first one on.
     */
    private RuntimeException primary(List<Throwable> failures) {
        Throwable best = null;
        int bestScore = Integer.MAX_VALUE;
        for (Throwable t : failures) {
            int score;
            if (!(t instanceof CommException)) {
                score = 0;
            } else if (!(t instanceof CommAbortedException a) || a.originRank() != rank) {
                score = 1;
            } else {
                score = 2;
            }
            if (score < bestScore) {
                best = t;
                bestScore = score;
            }
        }
        if (best instanceof RuntimeException re) {
            return re;
        }
        return new IllegalStateException("pipeline step failed: " + best, best);
    }

    /** Runs a task body; on failure aborts the communicator (with the reason) before rethrowing. */
    private <T> T guarded(StepState st, String what, Supplier<T> body) {
        try {
            return body.get();
        } catch (RuntimeException | Error e) {
            if (!(e instanceof CommException)) {
                st.abort("rank " + rank + ": " + what + " failed: " + e);
            }
            throw e;
        }
    }

    // ------------------------------------------------------------------------------------------------
    // Cross-rank transfers

    private int tag(long step, int direction, int mb, int edge, int part) {
        long t = ((((step & 1) * 2 + direction) * ctx.microBatches() + mb) * edges.size() + edge) * 2 + part;
        return ctx.tagBase() + (int) t;
    }

    /**
     * Header of one transferred array (little-endian), followed on the next tag by the array's bytes (C order):
     * <pre>
     *   0        4        8        12       16       20       24                32
     *   +--------+--------+--------+--------+--------+--------+-----------------+------------------+
     *   | magic  | dtype  | rank r | stage  | micro  | unused | step            | dims[0..r-1] ... |
     *   | "PNPP" | ND4J   |        | sender | batch  |        | (long)          | (long each)      |
     *   +--------+--------+--------+--------+--------+--------+-----------------+------------------+
     * </pre>
     */
    private static ByteBuffer header(INDArray a, int stage, int mb, long step) {
        long[] shape = a.shape();
        if (shape.length > MAX_RANK) {
            throw new IllegalArgumentException("stage " + stage + " hands on an array of rank " + shape.length
                    + "; the pipeline sends arrays of rank <= " + MAX_RANK);
        }
        ByteBuffer h = ByteBuffer.allocateDirect(HEADER_BYTES).order(ByteOrder.LITTLE_ENDIAN);
        h.putInt(MAGIC).putInt(a.dataType().ordinal()).putInt(shape.length).putInt(stage).putInt(mb).putInt(0).putLong(step);
        for (long d : shape) {
            h.putLong(d);
        }
        h.flip();
        return h;
    }

    /** Sends {@code value} along edge {@code e} (an activation forward, its gradient backward), non-blocking. */
    private void send(StepState st, INDArray value, Edge e, int direction, int mb) {
        int from = direction == FORWARD ? e.producer() : e.consumer();
        int dest = stageRank[direction == FORWARD ? e.consumer() : e.producer()];
        if (value == null) {
            throw new IllegalStateException("stage " + from + " has no " + (direction == FORWARD ? "value" : "gradient")
                    + " of '" + e.activation() + "' to send to rank " + dest);
        }
        INDArray a = value.isView() || value.ordering() != 'c' ? value.dup('c') : value;
        ByteBuffer h = header(a, from, mb, st.step);
        st.inFlight.add(h);
        st.inFlight.add(a);
        st.sends.add(comm.isend(h, dest, tag(st.step, direction, mb, e.id(), 0)));
        long bytes = a.length() * a.dataType().width();
        if (bytes > 0) {
            long address = a.data().address() + a.offset() * a.dataType().width();
            st.sends.add(comm.isend(address, bytes, dest, tag(st.step, direction, mb, e.id(), 1)));
        }
    }

    /** An async task that yields the array arriving along {@code e} for micro-batch {@code mb}; the receive is posted now. */
    private TaskHandle<INDArray> receiveTask(StepState st, Edge e, int direction, int mb) {
        int here = direction == FORWARD ? e.consumer() : e.producer();
        int there = direction == FORWARD ? e.producer() : e.consumer();
        int source = stageRank[there];
        String what = (direction == FORWARD ? "activation '" : "gradient of '") + e.activation() + "'";
        ByteBuffer h = ByteBuffer.allocateDirect(HEADER_BYTES).order(ByteOrder.LITTLE_ENDIAN);
        CompletableFuture<INDArray> value = comm.irecv(h, source, tag(st.step, direction, mb, e.id(), 0)).thenCompose(len -> {
            INDArray arr;
            try {
                arr = decode(h, len, st.step, here, there, source, mb, what, e.activation());
            } catch (RuntimeException ex) {
                st.abort("rank " + rank + ": " + ex.getMessage());
                throw ex;
            }
            long bytes = arr.length() * arr.dataType().width();
            if (bytes == 0) {
                return CompletableFuture.completedFuture(arr);
            }
            return comm.irecv(arr.data().address(), bytes, source, tag(st.step, direction, mb, e.id(), 1)).thenApply(got -> {
                if (got != bytes) {
                    IllegalStateException ex = new IllegalStateException("stage " + here + " on rank " + rank + " received "
                            + got + " bytes of the " + what + " from rank " + source + " but its header announced " + bytes);
                    st.abort("rank " + rank + ": " + ex.getMessage());
                    throw ex;
                }
                return arr;
            });
        });
        value.whenComplete((v, ex) -> {
            if (ex != null) {
                st.abort("rank " + rank + ": stage " + here + " lost the " + what + " of micro-batch " + mb + " from rank "
                        + source + ": " + rootCause(ex));
            }
        });
        TaskOptions opt = TaskOptions.named((direction == FORWARD ? "recv s" : "recv-grad s") + here + " m" + mb + " "
                + e.activation()).scope(Scope.processors(processorOf[here]));
        return scheduler.spawnAsync(opt, a -> value);
    }

    /** Reads and checks a header against what stage {@code here} expects, and allocates the array it announces. */
    private INDArray decode(ByteBuffer h, long len, long step, int here, int there, int source, int mb, String what,
                            String activation) {
        String from = " from stage " + there + " on rank " + source;
        if (len < 32) {
            throw new IllegalStateException("stage " + here + " on rank " + rank + " got a " + len + "-byte header for the "
                    + what + from + "; expected at least 32 bytes: the ranks do not run the same pipeline");
        }
        int magic = h.getInt(0);
        int dtypeCode = h.getInt(4);
        int r = h.getInt(8);
        int stage = h.getInt(12);
        int gotMb = h.getInt(16);
        long gotStep = h.getLong(24);
        if (magic != MAGIC || r < 0 || r > MAX_RANK || len != 32 + 8L * r || dtypeCode < 0
                || dtypeCode >= DataType.values().length) {
            throw new IllegalStateException("stage " + here + " on rank " + rank + " got a malformed header for the " + what
                    + from + " (magic " + Integer.toHexString(magic) + ", rank " + r + ", " + len + " bytes): the tag range "
                    + ctx.tagBase() + "+ is used by other messages, or the ranks do not run the same pipeline");
        }
        if (stage != there || gotMb != mb || gotStep != step) {
            throw new IllegalStateException("stage " + here + " on rank " + rank + " expected the " + what + from
                    + " for micro-batch " + mb + " of step " + step + " but got stage " + stage + ", micro-batch " + gotMb
                    + ", step " + gotStep + ": the ranks are out of step");
        }
        long[] shape = new long[r];
        for (int i = 0; i < r; i++) {
            shape[i] = h.getLong(32 + 8 * i);
            if (shape[i] < 0) {
                throw new IllegalStateException("stage " + here + " on rank " + rank + " got a negative dimension in the "
                        + what + from + ": " + Arrays.toString(shape));
            }
        }
        DataType dtype = DataType.values()[dtypeCode];
        StageGraph g = graphs[here];
        SDVariable v = g.sd.hasVariable(activation) ? g.sd.getVariable(activation) : null;
        DataType wantType = v == null ? dtype : v.dataType();
        long[] wantShape = sampleShape.get(activation);
        boolean shapeOk = wantShape == null || wantShape.length == r;
        for (int i = 1; shapeOk && i < r; i++) {
            shapeOk = wantShape[i] < 0 || wantShape[i] == shape[i];
        }
        if (dtype != wantType || !shapeOk) {
            throw new IllegalStateException("stage " + here + " on rank " + rank + " expected the " + what + from + " as "
                    + wantType + " " + (wantShape == null ? "(any shape)" : Arrays.toString(wantShape))
                    + " but micro-batch " + mb + " of step " + step + " arrived as " + dtype + " " + Arrays.toString(shape)
                    + ": every rank must build the same graph (same shapes and data types)");
        }
        return Nd4j.createUninitialized(dtype, shape, 'c');
    }

    // ------------------------------------------------------------------------------------------------
    // Tasks

    /** The first stage on this rank that receives {@code x}, or -1 (where its bytes are counted and released). */
    private int firstLocalReceiver(String x) {
        for (int c : consumerStages.getOrDefault(x, List.of())) {
            if (processorOf[c] >= 0) {
                return c;
            }
        }
        return -1;
    }

    private List<Integer> localProducers(int s) {
        List<Integer> from = new ArrayList<>();
        for (String x : received.get(s)) {
            int p = producerStage.get(x);
            if (processorOf[p] >= 0 && !from.contains(p)) {
                from.add(p);
            }
        }
        return from;
    }

    /** The stages on this rank that read an output of stage {@code s}: their backwards feed its backward. */
    private List<Integer> localConsumers(int s) {
        List<Integer> to = new ArrayList<>();
        for (String o : graphs[s].outputs) {
            for (int c : consumerStages.getOrDefault(o, List.of())) {
                if (processorOf[c] >= 0 && !to.contains(c)) {
                    to.add(c);
                }
            }
        }
        return to;
    }

    private List<Edge> edgesInto(int s) {
        return edges.stream().filter(e -> e.consumer() == s).toList();
    }

    private List<Edge> edgesOutOf(int s) {
        return edges.stream().filter(e -> e.producer() == s).toList();
    }

    private TaskHandle<StageGraph.Kept> spawnForward(StepState st, int s, int mb, TaskHandle<?> prev,
                                                     TaskHandle<StageGraph.Kept>[][] fwd, TaskHandle<INDArray>[][] fwdIn) {
        StageGraph g = graphs[s];
        List<Integer> from = localProducers(s);
        for (int p : from) {
            if (fwd[p][mb] == null) {
                return null;
            }
        }
        List<Edge> in = edgesInto(s);
        List<Edge> out = edgesOutOf(s);
        // args: [previous task on the stage, local producers' forwards..., receives of remote activations...]
        Object[] args = new Object[1 + from.size() + in.size()];
        args[0] = prev == null ? "" : prev;
        for (int k = 0; k < from.size(); k++) {
            args[1 + k] = fwd[from.get(k)][mb];
        }
        for (int k = 0; k < in.size(); k++) {
            args[1 + from.size() + k] = fwdIn[in.get(k).id()][mb];
        }
        int nFrom = from.size();
        TaskOptions opt = TaskOptions.named("F s" + s + " m" + mb).scope(Scope.processors(processorOf[s]))
                .costHint(java.time.Duration.ofNanos(Math.max(1, (long) g.stage.costNanos())));
        return scheduler.spawnN(opt, a -> guarded(st, "forward of stage " + s + " micro-batch " + mb, () -> {
            long t0 = System.nanoTime();
            Map<String, INDArray> feeds = feeds(st, g, mb, a, nFrom, in);
            long bytes = 0;
            for (Edge e : in) {
                if (firstLocalReceiver(e.activation()) == s) {
                    INDArray v = feeds.get(e.activation());
                    bytes += v.length() * v.dataType().width();
                }
            }
            StageGraph.Kept result = g.forwardKeeping(feeds);
            long kept = result.bytes;
            Set<String> keptNames = result.names();
            for (Map.Entry<String, INDArray> o : result.outputs.entrySet()) {
                long b = o.getValue().length() * o.getValue().dataType().width();
                if (firstLocalReceiver(o.getKey()) >= 0) {
                    bytes += b;
                } else if (keptNames.contains(o.getKey())) {
                    kept += b;          // sent away, but held for this stage's own backward
                }
            }
            st.allocate(bytes, kept);
            for (Edge e : out) {
                send(st, result.outputs.get(e.activation()), e, FORWARD, mb);
            }
            st.timed(s, FORWARD, mb, t0, System.nanoTime());
            return result;
        }), args);
    }

    /**
     * The stage's placeholders for micro-batch mb and its received activations: {@code args[1..nFrom]} are local
     * producers' forward results, the next {@code in.size()} the arrays received along {@code in}.
     */
    @SuppressWarnings("unchecked")
    private Map<String, INDArray> feeds(StepState st, StageGraph g, int mb, Object[] args, int nFrom, List<Edge> in) {
        Map<String, INDArray> feeds = new HashMap<>();
        Map<String, INDArray> micro = st.micro.get(mb);
        for (String p : g.placeholders) {
            INDArray v = micro.get(p);
            if (v == null) {
                throw new IllegalArgumentException("the batch has no value for placeholder '" + p + "', read by stage "
                        + g.stage.index() + (comm == null ? "" : " on rank " + rank));
            }
            feeds.put(p, v);
        }
        for (int k = 1; k <= nFrom; k++) {
            Map<String, INDArray> r = ((StageGraph.Kept) args[k]).outputs;
            for (String x : g.receivedActivations) {
                INDArray v = r.get(x);
                if (v != null) {
                    feeds.put(x, v);
                }
            }
        }
        for (int k = 0; k < in.size(); k++) {
            feeds.put(in.get(k).activation(), (INDArray) args[1 + nFrom + k]);
        }
        return feeds;
    }

    private TaskHandle<Map<String, INDArray>> spawnBackward(StepState st, int s, int mb, TaskHandle<?> prev,
                                                            TaskHandle<StageGraph.Kept>[][] fwd,
                                                            TaskHandle<Map<String, INDArray>>[][] bwd,
                                                            TaskHandle<INDArray>[][] fwdIn,
                                                            TaskHandle<INDArray>[][] bwdIn) {
        StageGraph g = graphs[s];
        List<Integer> from = localProducers(s);
        List<Edge> in = edgesInto(s);
        List<Edge> out = edgesOutOf(s);
        List<Integer> gradFrom = localConsumers(s);
        for (int c : gradFrom) {
            if (bwd[c][mb] == null) {
                return null;
            }
        }
        // args: [previous task on the stage, local producers' forwards..., receives of remote activations...,
        //        own forward, local consumers' backwards..., receives of remote gradients...]
        int nFrom = from.size();
        int nIn = in.size();
        Object[] args = new Object[1 + nFrom + nIn + 1 + gradFrom.size() + out.size()];
        args[0] = prev == null ? "" : prev;
        for (int k = 0; k < nFrom; k++) {
            args[1 + k] = fwd[from.get(k)][mb];
        }
        for (int k = 0; k < nIn; k++) {
            args[1 + nFrom + k] = fwdIn[in.get(k).id()][mb];
        }
        int ownAt = 1 + nFrom + nIn;
        args[ownAt] = fwd[s][mb];
        for (int k = 0; k < gradFrom.size(); k++) {
            args[ownAt + 1 + k] = bwd[gradFrom.get(k)][mb];
        }
        int remoteAt = ownAt + 1 + gradFrom.size();
        for (int k = 0; k < out.size(); k++) {
            args[remoteAt + k] = bwdIn[out.get(k).id()][mb];
        }
        TaskOptions opt = TaskOptions.named("B s" + s + " m" + mb).scope(Scope.processors(processorOf[s]))
                .costHint(java.time.Duration.ofNanos(Math.max(1, (long) (g.stage.backwardNanos()
                        + (g.recomputes() ? g.stage.costNanos() : 0)))));
        return scheduler.spawnN(opt, a -> guarded(st, "backward of stage " + s + " micro-batch " + mb, () -> {
            long t0 = System.nanoTime();
            Map<String, INDArray> feeds = feeds(st, g, mb, a, nFrom, in);
            StageGraph.Kept ownForward = (StageGraph.Kept) a[ownAt];
            Map<String, INDArray> own = ownForward.outputs;
            Map<String, INDArray> outGrads = new HashMap<>();
            for (int k = ownAt + 1; k < remoteAt; k++) {
                @SuppressWarnings("unchecked")
                Map<String, INDArray> r = (Map<String, INDArray>) a[k];
                for (Map.Entry<String, INDArray> e : r.entrySet()) {
                    if (g.outputs.contains(e.getKey())) {
                        outGrads.merge(e.getKey(), e.getValue(), INDArray::add);
                    }
                }
            }
            for (int k = 0; k < out.size(); k++) {
                Edge e = out.get(k);
                INDArray grad = (INDArray) a[remoteAt + k];
                INDArray value = own.get(e.activation());
                if (!Arrays.equals(grad.shape(), value.shape()) || grad.dataType() != value.dataType()) {
                    throw new IllegalStateException("stage " + s + " on rank " + rank + " sent '" + e.activation() + "' as "
                            + value.dataType() + " " + Arrays.toString(value.shape()) + " for micro-batch " + mb + " but its "
                            + "gradient came back from stage " + e.consumer() + " on rank " + stageRank[e.consumer()] + " as "
                            + grad.dataType() + " " + Arrays.toString(grad.shape()) + ": every rank must build the same graph");
                }
                outGrads.merge(e.activation(), grad, INDArray::add);
            }
            long keptBytes = ownForward.bytes;
            for (String o : ownForward.outputs.keySet()) {
                if (firstLocalReceiver(o) < 0 && ownForward.names().contains(o)) {
                    INDArray v = ownForward.outputs.get(o);
                    keptBytes += v.length() * v.dataType().width();
                }
            }
            OutAndGrad og = g.backward(feeds, outGrads, ownForward);
            double w = st.weight[mb];
            for (String p : g.parameters) {
                INDArray grad = og.getGradients().get(p);
                if (grad == null) {
                    throw new IllegalStateException("stage " + s + " computed no gradient for parameter '" + p + "'");
                }
                INDArray sum = st.gradSums[s].get(p);
                if (sum == null) {
                    sum = accumulator(s, p, grad).assign(0);
                    st.gradSums[s].put(p, sum);
                }
                Accumulate.addScaled(sum, w, grad);
            }
            for (String l : g.losses) {
                INDArray v = og.getOutputs().get(l);
                st.lossSums[s] += w * (v.isScalar() ? v.getDouble(0) : v.sumNumber().doubleValue());
            }
            Map<String, INDArray> inGrads = new HashMap<>();
            for (String x : g.receivedActivations) {
                inGrads.put(x, og.getGradients().get(x));
            }
            for (Edge e : in) {
                send(st, inGrads.get(e.activation()), e, BACKWARD, mb);
            }
            List<INDArray> stillUsed = new ArrayList<>(inGrads.values());
            stillUsed.addAll(outGrads.values());
            g.releaseGradients(og, stillUsed, feeds);
            // The activations this stage received for mb are no longer needed once every local receiver ran backward.
            release(st, g, feeds, keptBytes);
            st.timed(s, BACKWARD, mb, t0, System.nanoTime());
            return inGrads;
        }), args);
    }

    /**
     * Stage {@code s}'s gradient sum for parameter {@code p}, reused every step rather than allocated on each step's
     * first backward, and laid out as the gradient is (SameDiff returns matmul weight gradients in 'f' order), so that
     * adding a micro-batch's gradient is one BLAS axpy (6 us on a 256 x 256 float weight, 155 us across layouts).
     */
    private INDArray accumulator(int s, String p, INDArray grad) {
        INDArray acc = gradAccumulators[s].get(p);
        if (acc == null || acc.ordering() != grad.ordering() || acc.dataType() != grad.dataType()
                || !Arrays.equals(acc.shape(), grad.shape())) {
            acc = Nd4j.createUninitialized(grad.dataType(), grad.shape(), grad.ordering());
            gradAccumulators[s].put(p, acc);
        }
        return acc;
    }

    private void release(StepState st, StageGraph g, Map<String, INDArray> feeds, long keptBytes) {
        long bytes = 0;
        for (String x : g.receivedActivations) {
            // Count the bytes once, at the first local receiver (the last to run backward for mb, as backward runs from
            // the last stage to the first).
            if (firstLocalReceiver(x) == g.stage.index()) {
                INDArray v = feeds.get(x);
                if (v != null) {
                    bytes += v.length() * v.dataType().width();
                }
            }
        }
        st.allocate(-bytes, -keptBytes);
    }

    private void update(StepState st, int s, TrainingConfig tc, int iteration, int epoch) {
        StageGraph g = graphs[s];
        for (String p : g.parameters) {
            INDArray param = g.sd.getArrForVarName(p);
            INDArray grad = st.gradSums[s].get(p);
            updaters[s].apply(p, param, grad, tc, iteration, epoch);
            master.getArrForVarName(p).assign(param);
        }
    }

    // ------------------------------------------------------------------------------------------------

    /**
     * Brings every stage's current parameters into the caller's graph on every rank: each stage's owner broadcasts
     * them (collective: every rank must call it). In one process the graph already holds them and nothing is sent.
     * Call it before evaluating or saving the whole model on one rank.
     */
    public void gatherParameters() {
        if (closed) {
            throw new IllegalStateException("this SameDiffPipeline is closed");
        }
        if (comm == null) {
            return;
        }
        // Every rank must agree on the bytes of each stage's parameters before any broadcast starts.
        long[] lengths = new long[2 * stages.size()];
        for (int s = 0; s < stages.size(); s++) {
            for (String p : readParams.get(s)) {
                INDArray arr = master.getArrForVarName(p);
                lengths[s] += arr.length() * arr.dataType().width();
            }
            lengths[stages.size() + s] = -lengths[s];
        }
        long[] mine = lengths.clone();
        comm.allReduce(lengths, ReduceOp.MAX);
        for (int s = 0; s < stages.size(); s++) {
            if (lengths[s] != mine[s] || -lengths[stages.size() + s] != mine[s]) {
                throw new IllegalStateException("the ranks' graphs disagree on the parameter bytes of stage " + s + " (rank "
                        + rank + " has " + mine[s] + "): every rank must build the same graph");
            }
        }
        for (int s = 0; s < stages.size(); s++) {
            int owner = stageRank[s];
            for (String p : readParams.get(s)) {
                INDArray target = master.getArrForVarName(p);
                INDArray buf = rank == owner ? graphs[s].sd.getArrForVarName(p).dup('c')
                        : Nd4j.createUninitialized(target.dataType(), target.shape(), 'c');
                long bytes = buf.length() * buf.dataType().width();
                if (bytes > 0) {
                    comm.broadcast(buf.data().address(), bytes, owner, Algorithm.AUTO);
                }
                if (rank != owner) {
                    target.assign(buf);
                }
            }
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
        return "SameDiffPipeline[stages=" + stages.size() + ", microBatches=" + ctx.microBatches() + ", schedule="
                + ctx.schedule() + (comm == null ? "" : ", rank " + rank + " of " + comm.size() + " holds stages "
                + Arrays.toString(localStages)) + ", steps=" + steps + "]";
    }
}
