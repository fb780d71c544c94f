package dev.poniard.bridge;

import dev.poniard.scheduler.Scheduler;
import dev.poniard.scheduler.Scope;
import dev.poniard.scheduler.TaskHandle;
import dev.poniard.scheduler.TaskOptions;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collections;
import java.util.IdentityHashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Objects;
import java.util.Set;
import org.nd4j.autodiff.samediff.SDVariable;
import org.nd4j.autodiff.samediff.SameDiff;
import org.nd4j.autodiff.samediff.TrainingConfig;
import org.nd4j.autodiff.samediff.VariableType;
import org.nd4j.autodiff.samediff.api.OutAndGrad;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;
import org.nd4j.linalg.indexing.NDArrayIndex;

/**
 * Synchronous data-parallel training of a SameDiff graph on in-process replicas, run as tasks on the Poniard
 * scheduler (DESIGN §4, §6). After every step all replicas hold the parameters that {@code sd.fit} would have
 * produced on the whole global batch with the same updater.
 *
 * <pre>{@code
 * sd.setTrainingConfig(TrainingConfig.builder().updater(new Adam(1e-3))
 *         .dataSetFeatureMapping("in").dataSetLabelMapping("label").build());
 * try (SameDiffDataParallel dp = SameDiffDataParallel.launch(new SameDiffDataParallel.Context().sameDiff(sd).workers(2))) {
 *     dp.fit(trainIterator, 3);          // or dp.step(Map.of("in", x, "label", y)) per batch
 * }
 * }</pre>
 *
 * <p><b>Implementation overview.</b> Each replica is a {@link StageGraph} of the whole graph (a pruned {@code dup()}
 * whose forward and gradient ops run one by one through {@link OpRunner}, as a pipeline stage's do, and whose arrays
 * are freed as soon as they are used: SameDiff 1.0.0-M2.1's {@code calculateGradientsAndOutputs} turns its array cache
 * off and leaves every intermediate to the garbage collector, ~15 MB per step on a 7-layer MLP at 512 examples, which
 * made the first ~100 steps 3x slower while the native heap grew onto fresh pages). Replica {@code i}'s tasks are
 * scoped to scheduler processor {@code i}, so each replica is touched by one thread at a time. The caller's graph holds
 * the parameters; the replicas copy them when an update has made theirs stale. One step:
 * <ol>
 *   <li>The global batch (the leading dimension of every sharded placeholder) is cut into W contiguous shards as
 *       evenly as possible: sizes differ by at most one, and workers beyond the example count idle.</li>
 *   <li>Gradient task per replica: copy the caller's parameters if the last update made the replica's stale, slice
 *       its shard, run the forward keeping what the gradient ops read, then the gradient ops, for the trainable
 *       parameters and the loss variables.</li>
 *   <li>Reduce tasks, one per bucket of parameters (about equal element counts, one bucket per worker): write the
 *       bucket's slice of one flat buffer with the replicas' gradients, each scaled by its example count nᵢ
 *       (SameDiff's losses are means, so the full-batch gradient is Σ (nᵢ/N)·gᵢ), added in replica order.</li>
 *   <li>Exchange task: the buffer's last two slots get the weighted loss and Σ nᵢ; the {@link GradientExchange} sums
 *       the buffer over ranks; everything is divided by the global N. The fixed order makes the result the same run to
 *       run and on every rank.</li>
 *   <li>Update tasks, one per bucket, on the caller's graph's parameters: exactly what SameDiff's
 *       {@code TrainingSession} does after a gradient — regularization before the updater, the {@code GradientUpdater}
 *       (one instance per parameter, created from {@code getTrainingConfig().getUpdater()}), regularization after,
 *       then {@code param -= update} (or {@code +=} when the config maximises) — and the training config's iteration
 *       count goes up by one.</li>
 * </ol>
 * The updater state lives here, not in the graph: calling {@code sd.fit} afterwards starts from a fresh updater state.
 * An instance is used by one thread at a time.
 */
public final class SameDiffDataParallel implements SameDiffTraining, AutoCloseable {
    /**
     * Configuration. Defaults come from system properties: {@code poniard.bridge.workers} (default 2),
     * {@code poniard.bridge.seed} (default 0).
     */
    public static final class Context {
        private SameDiff sameDiff;
        private int workers = Integer.getInteger("poniard.bridge.workers", 2);
        private long seed = Long.getLong("poniard.bridge.seed", 0L);
        private boolean trace;
        private GradientExchange exchange = GradientExchange.singleRank();
        private LossReduction lossReduction = LossReduction.MEAN;
        private Set<String> unsharded = Set.of();

        public SameDiff sameDiff() {
            return sameDiff;
        }

        /** The graph to train, with a training config and loss variables; it becomes replica 0 and trains in place. */
        public Context sameDiff(SameDiff value) {
            sameDiff = value;
            return this;
        }

        public int workers() {
            return workers;
        }

        /** In-process replicas, one scheduler worker each. */
        public Context workers(int value) {
            workers = value;
            return this;
        }

        public long seed() {
            return seed;
        }

        /**
         * Seeds replica {@code i}'s ND4J random stream (dropout, noise) before each gradient task with
         * {@code seed + (step·ranks + rank)·workers + i}: every shard of every step draws its own stream, and runs repeat.
         */
        public Context seed(long value) {
            seed = value;
            return this;
        }

        public boolean trace() {
            return trace;
        }

        /** Records a scheduler trace ({@link #scheduler()}{@code .trace()}); costs memory per task. */
        public Context trace(boolean value) {
            trace = value;
            return this;
        }

        public GradientExchange exchange() {
            return exchange;
        }

        /** How ranks sum their gradient buffers; default: a single rank. */
        public Context exchange(GradientExchange value) {
            exchange = value;
            return this;
        }

        public LossReduction lossReduction() {
            return lossReduction;
        }

        /** Whether the loss averages (default, as SameDiff's losses) or sums over examples. */
        public Context lossReduction(LossReduction value) {
            lossReduction = value;
            return this;
        }

        public Set<String> unsharded() {
            return unsharded;
        }

        /** Placeholders given whole to every replica (no batch dimension), e.g. a sequence mask shared by all rows. */
        public Context unsharded(String... placeholders) {
            unsharded = Set.of(placeholders);
            return this;
        }

        /** Validates the context, naming the bad value. */
        public Context conclude() {
            if (sameDiff == null) {
                throw new IllegalArgumentException("sameDiff must be set: new SameDiffDataParallel.Context().sameDiff(sd)");
            }
            TrainingConfig tc = sameDiff.getTrainingConfig();
            if (tc == null || tc.getUpdater() == null) {
                throw new IllegalArgumentException("the graph has no training config with an updater: call "
                        + "sd.setTrainingConfig(TrainingConfig.builder().updater(...)...build()) before launch");
            }
            if (workers < 1) {
                throw new IllegalArgumentException("workers must be >= 1, got " + workers);
            }
            Objects.requireNonNull(exchange, "exchange");
            Objects.requireNonNull(lossReduction, "lossReduction");
            for (String p : unsharded) {
                if (!sameDiff.hasVariable(p) || !sameDiff.getVariable(p).isPlaceHolder()) {
                    throw new IllegalArgumentException("unsharded names '" + p + "', which is not a placeholder of the graph");
                }
            }
            return this;
        }
    }

    /** What one replica computed on its shard. */
    private record ShardResult(int examples, Map<String, INDArray> gradients, double loss) {
    }

    private static final TaskOptions EXCHANGE = TaskOptions.named("dp-exchange").priority(2);

    private final Context ctx;
    private final SameDiff master;
    private final Scheduler scheduler;
    private final List<StageGraph> replicas = new ArrayList<>();
    /** The replicas' parameter arrays (updated in place, never replaced): never freed with a step's arrays. */
    private final Set<INDArray> replicaParameters = Collections.newSetFromMap(new IdentityHashMap<>());
    private final TaskOptions[] gradOptions;
    private final List<String> params;
    private final long[] offsets;
    private final List<String> losses;
    private final ParameterUpdater updater;
    private final INDArray buffer;
    /** Parameter index ranges [bucketStart[b], bucketStart[b+1]) that the reduce and update tasks of bucket b own. */
    private final int[] bucketStart;
    private final TaskOptions[] reduceOptions;
    private final TaskOptions[] updateOptions;
    /** The parameter version each replica holds; replica 0 always holds the current one. */
    private final long[] replicaVersion;
    private long version;
    private long steps;
    private boolean closed;

    private SameDiffDataParallel(Context ctx) {
        this.ctx = ctx;
        this.master = ctx.sameDiff();
        SameDiffDag dag = SameDiffDag.importGraph(master);
        dag.requireDifferentiable();
        this.losses = List.copyOf(master.getLossVariables());
        if (!master.hasGradientFunction()) {
            master.createGradFunction();
        }

        // Trainable: floating-point parameters with a gradient, in the graph's variable order (the same on every rank).
        List<String> p = new ArrayList<>();
        for (SDVariable v : master.variables()) {
            if (v.getVariableType() == VariableType.VARIABLE && v.dataType().isFPType() && v.getGradient() != null) {
                p.add(v.name());
            }
        }
        if (p.isEmpty()) {
            throw new IllegalArgumentException("the graph has no trainable parameter that the loss " + losses + " depends on");
        }
        this.params = List.copyOf(p);
        DataType dt = master.getVariable(params.get(0)).dataType();
        this.offsets = new long[params.size() + 1];
        for (int i = 0; i < params.size(); i++) {
            INDArray arr = master.getArrForVarName(params.get(i));
            if (arr.dataType() != dt) {
                throw new IllegalArgumentException("parameter '" + params.get(i) + "' is " + arr.dataType() + " but '"
                        + params.get(0) + "' is " + dt + ": the bridge keeps one gradient buffer and needs one type");
            }
            offsets[i + 1] = offsets[i] + arr.length();
        }
        this.buffer = Nd4j.zeros(dt, offsets[params.size()] + 2);

        this.updater = new ParameterUpdater(master, params);
        this.bucketStart = buckets(offsets, ctx.workers());
        this.reduceOptions = new TaskOptions[bucketStart.length - 1];
        this.updateOptions = new TaskOptions[bucketStart.length - 1];
        for (int b = 0; b < reduceOptions.length; b++) {
            reduceOptions[b] = TaskOptions.named("dp-reduce-" + b).priority(2);
            updateOptions[b] = TaskOptions.named("dp-update-" + b).priority(2);
        }

        int w = ctx.workers();
        Stage whole = dag.stagesAt(new int[] {0, dag.ops().size()}).get(0);
        for (int i = 0; i < w; i++) {
            StageGraph g = StageGraph.build(dag, whole, losses);
            if (!g.parameters.containsAll(params)) {
                throw new IllegalStateException("the replica graph reads parameters " + g.parameters
                        + " but the trainable parameters are " + params);
            }
            replicas.add(g);
            for (String name : g.parameters) {
                replicaParameters.add(g.sd.getArrForVarName(name));
            }
        }
        this.replicaVersion = new long[w];
        Arrays.fill(replicaVersion, -1);
        this.gradOptions = new TaskOptions[w];
        for (int i = 0; i < w; i++) {
            gradOptions[i] = TaskOptions.named("dp-grad-" + i).scope(Scope.processors(i));
        }
        this.scheduler = Scheduler.launch(new Scheduler.Context().name("samediff-dp").workers(w).trace(ctx.trace())
                .workerStart(NativeThreads::oneThreadPerWorker));
    }

    /** Creates the replicas and a scheduler with one worker per replica. */
    public static SameDiffDataParallel launch(Context ctx) {
        return new SameDiffDataParallel(ctx.conclude());
    }

    /** The scheduler the step tasks run on (for traces and summaries). */
    public Scheduler scheduler() {
        return scheduler;
    }

    /** The trainable parameters, in buffer order. */
    public List<String> parameters() {
        return params;
    }

    /** Steps taken by this instance. */
    public long steps() {
        return steps;
    }

    @Override
    public SameDiff sameDiff() {
        return master;
    }

    // ------------------------------------------------------------------------------------------------
    // Training

    /**
     * One synchronous step on a global batch: placeholders by name; every placeholder not declared
     * {@link Context#unsharded unsharded} is split along its first dimension. Returns the loss of the batch (summed over
     * the loss variables) at the parameters before the step, as {@code sd.fit} reports it.
     */
    @Override
    public double step(Map<String, INDArray> batch) {
        TaskHandle<double[]> combined = spawnGradients(batch);
        TrainingConfig tc = master.getTrainingConfig();
        int iteration = tc.getIterationCount();
        int epoch = tc.getEpochCount();
        List<TaskHandle<Void>> updates = new ArrayList<>();
        for (int b = 0; b < updateOptions.length; b++) {
            int bucket = b;
            updates.add(scheduler.spawn(updateOptions[b], (double[] lossAndCount) -> {
                applyUpdate(bucket, tc, iteration, epoch);
                return null;
            }, combined));
        }
        double loss;
        try {
            for (TaskHandle<Void> u : updates) {
                SameDiffDag.join(u);
            }
            loss = SameDiffDag.join(combined)[0];
        } finally {
            // Even a failed update may have changed some parameters: every replica copies them next step.
            version++;
        }
        master.getTrainingConfig().incrementIterationCount();
        steps++;
        return loss;
    }

    /**
     * The full-batch gradient of the loss for every trainable parameter, computed data-parallel (and summed over ranks)
     * but not applied: equals {@code sd.calculateGradients(batch, parameters())}. The arrays are copies.
     */
    public Map<String, INDArray> calculateGradients(Map<String, INDArray> batch) {
        SameDiffDag.join(spawnGradients(batch));
        Map<String, INDArray> out = new LinkedHashMap<>();
        for (int i = 0; i < params.size(); i++) {
            INDArray param = master.getArrForVarName(params.get(i));
            out.put(params.get(i), gradientView(i).reshape(param.ordering(), param.shape()).dup(param.ordering()));
        }
        return out;
    }

    /** Spawns the gradient tasks and the combine task; the latter yields {loss, global examples}. */
    private TaskHandle<double[]> spawnGradients(Map<String, INDArray> batch) {
        if (closed) {
            throw new IllegalStateException("this SameDiffDataParallel is closed");
        }
        long[] bounds = Batches.bounds(Batches.rows(master, batch, ctx.unsharded()), replicas.size());
        Object[] shards = new Object[bounds.length - 1];
        for (int i = 0; i < shards.length; i++) {
            int replica = i;
            shards[i] = scheduler.spawn(gradOptions[i], () -> shardGradients(replica, batch, bounds[replica],
                    bounds[replica + 1]));
        }
        Object[] reduced = new Object[reduceOptions.length];
        for (int b = 0; b < reduced.length; b++) {
            int bucket = b;
            reduced[b] = scheduler.spawnN(reduceOptions[b], results -> reduce(bucket, results), shards);
        }
        return scheduler.spawnN(EXCHANGE, r -> exchange((ShardResult[]) r[0]), reduced);
    }

    /**
     * Splits the parameters into at most {@code parts} contiguous buckets of about equal element counts, so that the
     * reduction and the update run on all workers at once.
     */
    static int[] buckets(long[] offsets, int parts) {
        int p = offsets.length - 1;
        long total = offsets[p];
        List<Integer> starts = new ArrayList<>();
        starts.add(0);
        for (int i = 1; i < p && starts.size() < parts; i++) {
            if (offsets[i] >= total * starts.size() / parts) {
                starts.add(i);
            }
        }
        starts.add(p);
        return starts.stream().mapToInt(Integer::intValue).toArray();
    }

    /** Runs on processor {@code i}: refresh the replica's parameters if stale, then its shard's gradients. */
    private ShardResult shardGradients(int i, Map<String, INDArray> batch, long from, long to) {
        StageGraph g = replicas.get(i);
        refresh(i);
        long stream = (steps * ctx.exchange().worldSize() + ctx.exchange().rank()) * replicas.size() + i;
        Nd4j.getRandom().setSeed(ctx.seed() + stream);
        Map<String, INDArray> shard = Batches.slice(batch, ctx.unsharded(), from, to);
        OutAndGrad og;
        try {
            og = g.backward(shard, Map.of(), g.forwardKeeping(shard));
        } catch (UnsupportedGraphException e) {
            throw e;
        } catch (RuntimeException e) {
            throw new IllegalStateException("replica " + i + " failed to compute the gradients of examples [" + from
                    + ", " + to + ")" + (to - from == 1 ? "; this shard has a single example, and SameDiff 1.0.0-M2.1 "
                    + "fails on some graphs for one-example batches (sd.calculateGradients fails the same way): use at "
                    + "least 2 examples per worker" : "") + ": " + e, e);
        }
        double loss = 0;
        for (String l : losses) {
            INDArray v = og.getOutputs().get(l);
            loss += v.isScalar() ? v.getDouble(0) : v.sumNumber().doubleValue();
        }
        // The shard's copies of the batch and the loss values are this step's alone: freed now, not at the next GC.
        Set<INDArray> keep = Collections.newSetFromMap(new IdentityHashMap<>());
        keep.addAll(batch.values());
        keep.addAll(og.getGradients().values());
        List<INDArray> done = new ArrayList<>(shard.values());
        done.addAll(og.getOutputs().values());
        free(done, keep);
        return new ShardResult((int) (to - from), og.getGradients(), loss);
    }

    /** Copies the caller's parameters into replica {@code i} if an update has changed them since its last copy. */
    private void refresh(int i) {
        if (replicaVersion[i] != version) {
            StageGraph g = replicas.get(i);
            for (String name : g.parameters) {
                g.sd.getArrForVarName(name).assign(master.getArrForVarName(name));
            }
            replicaVersion[i] = version;
        }
    }

    /**
     * Closes each array of {@code arrays} once, unless it is in {@code keep} or is one of a replica's parameters: the
     * shards' batch slices, losses and gradients, which would otherwise wait for a garbage collection while the native
     * heap grows onto fresh pages (see the overview).
     */
    private void free(List<INDArray> arrays, Set<INDArray> keep) {
        Set<INDArray> seen = Collections.newSetFromMap(new IdentityHashMap<>());
        for (INDArray a : arrays) {
            if (a != null && seen.add(a) && !keep.contains(a) && !replicaParameters.contains(a) && a.closeable()
                    && !a.wasClosed()) {
                a.close();
            }
        }
    }

    /**
     * Reduce task of bucket {@code b}, after all gradient tasks: overwrites the bucket's slice of the buffer with the
     * shards' gradients weighted by their example counts, added in replica order. Returns the shard results so the
     * exchange task can add the losses; only bucket 0's result is read.
     */
    private ShardResult[] reduce(int b, Object[] results) {
        ShardResult[] shards = new ShardResult[results.length];
        for (int k = 0; k < results.length; k++) {
            shards[k] = (ShardResult) results[k];
        }
        for (int i = bucketStart[b]; i < bucketStart[b + 1]; i++) {
            INDArray param = master.getArrForVarName(params.get(i));
            // The slice as the parameter's shape and order (a view), so shards' gradients add element by element.
            INDArray slice = gradientView(i).reshape(param.ordering(), param.shape());
            slice.assign(0);
            for (ShardResult s : shards) {
                INDArray g = s.gradients().get(params.get(i));
                if (g == null) {
                    throw new IllegalStateException("SameDiff returned no gradient for parameter '" + params.get(i)
                            + "' on one replica although it has a gradient variable");
                }
                // Not scaled in place: SameDiff may hand out one array as the gradient of two variables.
                Accumulate.addScaled(slice, weight(s), g);
            }
        }
        return shards;
    }

    private double weight(ShardResult s) {
        return ctx.lossReduction() == LossReduction.MEAN ? s.examples() : 1.0;
    }

    /** After the reduce tasks: the loss and example slots, the exchange between ranks, the division by N. */
    private double[] exchange(ShardResult[] shards) {
        // Every bucket has added the shards' gradients into the buffer: they are no longer needed.
        List<INDArray> grads = new ArrayList<>();
        for (ShardResult s : shards) {
            grads.addAll(s.gradients().values());
        }
        free(grads, Collections.newSetFromMap(new IdentityHashMap<>()));
        int p = params.size();
        double loss = 0;
        double examples = 0;
        for (ShardResult s : shards) {
            loss += weight(s) * s.loss();
            examples += s.examples();
        }
        buffer.putScalar(offsets[p], loss);
        buffer.putScalar(offsets[p] + 1, examples);
        ctx.exchange().allReduceSum(buffer);
        double globalExamples = buffer.getDouble(offsets[p] + 1);
        buffer.divi(ctx.lossReduction() == LossReduction.MEAN ? globalExamples : 1.0);
        return new double[] {buffer.getDouble(offsets[p]), globalExamples};
    }

    /** Parameter {@code i}'s slice of the flat buffer: a contiguous row vector view. */
    private INDArray gradientView(int i) {
        return buffer.get(NDArrayIndex.interval(offsets[i], offsets[i + 1]));
    }

    /**
     * Update task of bucket {@code b}: the same per-parameter update as SameDiff's TrainingSession, on the combined
     * gradient, for the bucket's parameters of the caller's graph (buckets own disjoint parameters and updater states).
     */
    private void applyUpdate(int b, TrainingConfig tc, int iteration, int epoch) {
        for (int i = bucketStart[b]; i < bucketStart[b + 1]; i++) {
            INDArray param = master.getArrForVarName(params.get(i));
            // The updater overwrites the gradient: the buffer's slice itself, which the next step's reduce resets.
            INDArray grad = gradientView(i).reshape(param.ordering(), param.shape());
            updater.apply(params.get(i), param, grad, tc, iteration, epoch);
        }
    }

    // ------------------------------------------------------------------------------------------------

    /** Replica {@code i}'s graph; for tests. Its parameters may lag until its next task. */
    SameDiff replica(int i) {
        return replicas.get(i).sd;
    }

    /** Brings every replica's parameters up to date now (they otherwise refresh lazily in their next task). */
    void syncReplicas() {
        List<TaskHandle<Void>> hs = new ArrayList<>();
        for (int i = 0; i < replicas.size(); i++) {
            int r = i;
            hs.add(scheduler.spawn(TaskOptions.named("dp-sync-" + i).scope(Scope.processors(i)), () -> {
                refresh(r);
                return null;
            }));
        }
        hs.forEach(SameDiffDag::join);
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
        return "SameDiffDataParallel[workers=" + replicas.size() + ", parameters=" + params.size() + ", exchange="
                + ctx.exchange() + ", steps=" + steps + "]";
    }
}
