package dev.poniard.trainer;

import dev.poniard.bridge.NativeThreads;
import dev.poniard.scheduler.Scheduler;
import dev.poniard.scheduler.Scope;
import dev.poniard.scheduler.TaskFailedException;
import dev.poniard.scheduler.TaskHandle;
import dev.poniard.scheduler.TaskOptions;
import java.util.ArrayList;
import java.util.Collection;
import java.util.List;
import java.util.Objects;
import java.util.function.IntFunction;
import org.deeplearning4j.nn.api.Model;
import org.deeplearning4j.optimize.api.TrainingListener;
import org.nd4j.autodiff.samediff.SameDiff;
import org.nd4j.evaluation.classification.Evaluation;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.dataset.DataSet;
import org.nd4j.linalg.dataset.api.iterator.DataSetIterator;
import org.nd4j.linalg.factory.Nd4j;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * Synchronous data-parallel training of a DL4J {@code MultiLayerNetwork} or {@code ComputationGraph} (or, through
 * the bridge, a {@code SameDiff} graph: {@link Context#sameDiff}) on in-process
 * replicas, run as tasks on the Poniard scheduler. After every step all replicas hold the parameters that
 * {@code model.fit} would have produced on the whole global batch.
 *
 * <pre>{@code
 * try (ParallelTrainer t = ParallelTrainer.launch(new ParallelTrainer.Context().model(net).workers(2).batchSizePerWorker(32))) {
 *     t.fit(trainIterator, 3);
 *     System.out.println(t.evaluate(testIterator).accuracy());
 * }
 * }</pre>
 *
 * <p><b>Implementation overview.</b> Replica 0 is the caller's model itself; replicas 1..W-1 are clones, and
 * replica {@code i}'s tasks are scoped to scheduler processor {@code i}, so each DL4J model (not thread-safe) is
 * only touched by one thread at a time. One step:
 * <ol>
 *   <li>The global batch (batch size per worker × W examples, or the iterator's own batches) is cut into W shards
 *       as evenly as possible; a short last batch gives uneven shards, and replicas beyond the example count idle.</li>
 *   <li>Gradient task per replica: copy replica 0's parameters if the last update made them stale, then
 *       {@code computeGradientAndScore} on its shard. DL4J leaves the raw gradient in the model's flattened gradient
 *       view <em>summed</em> (not averaged) over the shard's examples, so adding the shards' gradients weights
 *       each shard by its example count exactly.</li>
 *   <li>Bucket tasks ({@link BucketedReduction}) add the gradients into replica 0's view, in parallel over buckets
 *       and in a fixed replica order; then the {@link GradientAllReduce} combines ranks (a no-op in one process).</li>
 *   <li>If the sum or the loss is not finite the {@link NanPolicy} decides; nothing has been changed yet.</li>
 *   <li>Update tasks, one per worker ({@link ShardedUpdate}): each runs the model's updater on its slice of the
 *       parameters with the global example count as minibatch size (DL4J's updater divides by it), then
 *       {@code params -= update}, as DL4J's {@code StochasticGradientDescent} does, and copies its slice into the
 *       other replicas; the result is bit for bit the model's own serial update. In one process these tasks follow
 *       the sums directly and skip a non-finite step themselves, so the calling thread is not between the phases
 *       (with several ranks it all-reduces the gradient in between). A model whose update is not
 *       element-wise (gradient normalisation, constraints, a custom updater) is updated by one task on replica 0,
 *       and the other replicas copy the parameters at the start of their next task.</li>
 * </ol>
 * While a step's tasks run, the calling thread reads the next batch from the iterator. Listeners attached to the
 * model are called on the calling thread as {@code model.fit} calls them: {@code onEpochStart}, {@code iterationDone}
 * (after the update, with the step's example-weighted loss set as the model's score), {@code onEpochEnd}.
 */
public final class ParallelTrainer implements AutoCloseable {
    private static final Logger LOG = LoggerFactory.getLogger(ParallelTrainer.class);

    /**
     * Configuration. Defaults come from system properties: {@code poniard.trainer.workers} (default 2),
     * {@code poniard.trainer.batchPerWorker} (default 0: the iterator's batches are the global batches).
     */
    public static final class Context {
        private Model model;
        private SameDiff sameDiff;
        private String sameDiffOutput;
        private int workers = Integer.getInteger("poniard.trainer.workers", 2);
        private int batchSizePerWorker = Integer.getInteger("poniard.trainer.batchPerWorker", 0);
        private long seed = Long.getLong("poniard.trainer.seed", 0L);
        private NanPolicy nanPolicy = NanPolicy.STOP;
        private boolean trace;
        private GradientAllReduce allReduce = GradientAllReduce.singleRank();
        private Checkpoints checkpoints;
        private int checkpointEverySteps;
        private int prefetch = Integer.getInteger("poniard.trainer.prefetch", 2);
        private long bucketSize;
        private boolean shardedUpdate = !"false".equals(System.getProperty("poniard.trainer.shardedUpdate"));

        public Model model() {
            return model;
        }

        /** The model to train (initialised); it becomes replica 0 and is trained in place. */
        public Context model(Model value) {
            model = value;
            return this;
        }

        public SameDiff sameDiff() {
            return sameDiff;
        }

        /**
         * A SameDiff graph to train instead of a DL4J model (through the bridge's {@code SameDiffDataParallel}): it
         * needs a training config (updater, feature and label mappings) and loss variables, becomes replica 0 and is
         * trained in place. DL4J listeners and checkpoints do not apply to it; its progress counts this rank's examples.
         */
        public Context sameDiff(SameDiff value) {
            sameDiff = value;
            return this;
        }

        public String sameDiffOutput() {
            return sameDiffOutput;
        }

        /** The SameDiff variable holding the class probabilities, for {@link ParallelTrainer#evaluate}. */
        public Context sameDiffOutput(String value) {
            sameDiffOutput = value;
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

        public int batchSizePerWorker() {
            return batchSizePerWorker;
        }

        /** Examples per replica per step (global batch = this × workers); 0 takes the iterator's batches as they come. */
        public Context batchSizePerWorker(int value) {
            batchSizePerWorker = value;
            return this;
        }

        public long seed() {
            return seed;
        }

        /** Seeds replica {@code i}'s ND4J random stream (dropout, noise) with {@code seed + i}. */
        public Context seed(long value) {
            seed = value;
            return this;
        }

        public NanPolicy nanPolicy() {
            return nanPolicy;
        }

        public Context nanPolicy(NanPolicy value) {
            nanPolicy = value;
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

        public GradientAllReduce allReduce() {
            return allReduce;
        }

        /** How ranks combine their gradient sums; default: a single rank. */
        public Context allReduce(GradientAllReduce value) {
            allReduce = value;
            return this;
        }

        public Checkpoints checkpoints() {
            return checkpoints;
        }

        /** Writes a checkpoint at the end of every epoch (and every {@link #checkpointEverySteps} steps); default none. */
        public Context checkpoints(Checkpoints value) {
            checkpoints = value;
            return this;
        }

        public int checkpointEverySteps() {
            return checkpointEverySteps;
        }

        /** Also checkpoints after every this many iterations (0: only at epoch ends). */
        public Context checkpointEverySteps(int value) {
            checkpointEverySteps = value;
            return this;
        }

        public int prefetch() {
            return prefetch;
        }

        /**
         * Batches read ahead on a background thread while steps run (default 2, property
         * {@code poniard.trainer.prefetch}); 0 reads the next batch on the calling thread during each step.
         */
        public Context prefetch(int value) {
            prefetch = value;
            return this;
        }

        public long bucketSize() {
            return bucketSize;
        }

        /**
         * Gradient elements per reduction bucket (each bucket is summed by its own task); 0 (default) picks two
         * buckets per worker of at least 16,384 elements.
         */
        public Context bucketSize(long value) {
            bucketSize = value;
            return this;
        }

        public boolean shardedUpdate() {
            return shardedUpdate;
        }

        /**
         * Whether each worker applies the updater to its own slice of the parameters (default true, property
         * {@code poniard.trainer.shardedUpdate}); the result is bit for bit the model's serial update. Models whose
         * update is not element-wise (gradient normalisation, constraints, custom updaters) update serially anyway.
         */
        public Context shardedUpdate(boolean value) {
            shardedUpdate = value;
            return this;
        }

        /** Validates the context, naming the bad value. */
        public Context conclude() {
            if ((model == null) == (sameDiff == null)) {
                throw new IllegalArgumentException(model == null
                        ? "model must be set: new ParallelTrainer.Context().model(net), or .sameDiff(sd) for a SameDiff graph"
                        : "set either a DL4J model or a SameDiff graph, not both");
            }
            if (model != null && model.params() == null) {
                throw new IllegalArgumentException("the model has no parameters yet: call model.init() before training");
            }
            if (sameDiff != null && sameDiff.getTrainingConfig() == null) {
                throw new IllegalArgumentException("the SameDiff graph has no training config: call"
                        + " sd.setTrainingConfig(TrainingConfig.builder().updater(...).dataSetFeatureMapping(...)"
                        + ".dataSetLabelMapping(...).build())");
            }
            if (sameDiff != null && checkpoints != null) {
                throw new IllegalArgumentException("checkpoints support MultiLayerNetwork and ComputationGraph; save a"
                        + " SameDiff graph with sd.save(file, true) instead");
            }
            if (sameDiff != null && allReduce instanceof CommGradientAllReduce c
                    && !(c.compression() instanceof GradientCompression.None)) {
                throw new IllegalArgumentException("gradient compression (" + c.compression() + ") is for DL4J models;"
                        + " a SameDiff graph's ranks exchange exact sums (GradientCompression.none())");
            }
            if (workers < 1) {
                throw new IllegalArgumentException("workers must be >= 1, got " + workers);
            }
            if (batchSizePerWorker < 0) {
                throw new IllegalArgumentException("batchSizePerWorker must be >= 0 (0: use the iterator's batches), got "
                        + batchSizePerWorker);
            }
            Objects.requireNonNull(nanPolicy, "nanPolicy");
            Objects.requireNonNull(allReduce, "allReduce");
            if (prefetch < 0) {
                throw new IllegalArgumentException("prefetch must be >= 0 (0: no read-ahead thread), got " + prefetch);
            }
            if (bucketSize < 0) {
                throw new IllegalArgumentException("bucketSize must be >= 0 (0: automatic), got " + bucketSize);
            }
            if (checkpointEverySteps < 0) {
                throw new IllegalArgumentException("checkpointEverySteps must be >= 0, got " + checkpointEverySteps);
            }
            return this;
        }
    }

    /** Where training stands, for progress reports and checkpoints. */
    public record Progress(int epoch, long stepInEpoch, long steps, long skippedSteps, long examples, double lastLoss) {
    }

    private static final TaskOptions UPDATE = TaskOptions.named("update").priority(2).scope(Scope.processors(0));

    private final Context ctx;
    /** Non-null when training a SameDiff graph; the DL4J replica machinery is then unused. */
    private final SameDiffRun sameDiffRun;
    private final Scheduler scheduler;
    private final List<ModelReplica> replicas = new ArrayList<>();
    private final TaskOptions[] gradOptions;
    private final TaskOptions[] evalOptions;
    private final TaskOptions[] updateOptions;
    /** The update cut into one slice per worker, or null when it runs serially ({@link ShardedUpdate}). */
    private ShardedUpdate shardedUpdate;
    private final BucketedReduction reduction;
    private final boolean[] seeded;
    private boolean replicasStale;
    private long stepInEpoch;
    private long steps;
    private long skipped;
    private long examples;
    private double lastLoss = Double.NaN;
    private volatile boolean closed;

    private ParallelTrainer(Context ctx) {
        this.ctx = ctx;
        NativeThreads.oneThreadPerWorker();
        if (ctx.sameDiff() != null) {
            sameDiffRun = new SameDiffRun(ctx);
            scheduler = sameDiffRun.scheduler();
            gradOptions = evalOptions = updateOptions = new TaskOptions[0];
            seeded = new boolean[0];
            reduction = null;
            return;
        }
        sameDiffRun = null;
        ModelReplica primary = ModelReplica.of(ctx.model());
        replicas.add(primary);
        for (int i = 1; i < ctx.workers(); i++) {
            replicas.add(primary.copy());
        }
        gradOptions = new TaskOptions[ctx.workers()];
        evalOptions = new TaskOptions[ctx.workers()];
        updateOptions = new TaskOptions[ctx.workers()];
        for (int i = 0; i < ctx.workers(); i++) {
            gradOptions[i] = TaskOptions.named("grad").scope(Scope.processors(i));
            evalOptions[i] = TaskOptions.named("eval").scope(Scope.processors(i));
            updateOptions[i] = TaskOptions.named("update").priority(2).scope(Scope.processors(i));
        }
        seeded = new boolean[ctx.workers()];
        this.scheduler = Scheduler.launch(new Scheduler.Context().name("train").workers(ctx.workers())
                .trace(ctx.trace()).workerStart(NativeThreads::oneThreadPerWorker));
        List<INDArray> views = new ArrayList<>();
        for (ModelReplica r : replicas) {
            views.add(r.gradientView());
        }
        this.reduction = new BucketedReduction(views, ctx.workers(), ctx.bucketSize());
        this.shardedUpdate = ctx.shardedUpdate() ? ShardedUpdate.of(replicas, ctx.workers()) : null;
        LOG.debug("trainer ready: {} replicas, {} parameters, {} reduction buckets, {} update, {}", ctx.workers(),
                primary.params().length(), reduction.buckets(),
                shardedUpdate == null ? "serial" : shardedUpdate.shards() + "-way sharded", ctx.allReduce());
    }

    /** Creates the replicas and starts the scheduler. */
    public static ParallelTrainer launch(Context ctx) {
        return new ParallelTrainer(ctx.conclude());
    }

    public Context context() {
        return ctx;
    }

    /** The scheduler running the trainer's tasks (for its summary and trace). */
    public Scheduler scheduler() {
        return scheduler;
    }

    /** The model being trained (replica 0, the caller's model); null when training a SameDiff graph. */
    public Model model() {
        return ctx.model();
    }

    /** The SameDiff graph being trained, or null for a DL4J model. */
    public SameDiff sameDiff() {
        return ctx.sameDiff();
    }

    public Progress progress() {
        if (sameDiffRun != null) {
            return sameDiffRun.progress();
        }
        ModelReplica p = replicas.get(0);
        return new Progress(p.epochCount(), stepInEpoch, steps, skipped, examples, lastLoss);
    }

    /** Trains {@code epochs} epochs over {@code iterator}, resetting it between epochs, as {@code model.fit(iterator, epochs)}. */
    public void fit(DataSetIterator iterator, int epochs) {
        Objects.requireNonNull(iterator, "iterator");
        if (epochs < 0) {
            throw new IllegalArgumentException("epochs must be >= 0, got " + epochs);
        }
        for (int e = 0; e < epochs; e++) {
            if (e > 0 || !iterator.hasNext()) {
                if (!iterator.resetSupported()) {
                    throw new TrainerException(iterator.getClass().getSimpleName() + " does not support reset(), so it"
                            + " cannot feed epoch " + (e + 1) + " of " + epochs + "; train one epoch per call or use a"
                            + " resettable iterator");
                }
                iterator.reset();
            }
            runEpoch(iterator, 0);
        }
    }

    /**
     * Trains until the model's epoch count reaches {@code totalEpochs}, taking epoch {@code e}'s data from
     * {@code epochData.apply(e)}. Continues a partly trained epoch (after {@link #restoreProgress}) by skipping
     * the global batches already trained on, so a resumed run follows the same path as an uninterrupted one when
     * {@code epochData} yields the same data in the same order for the same epoch.
     */
    public void fitToEpoch(IntFunction<DataSetIterator> epochData, int totalEpochs) {
        Objects.requireNonNull(epochData, "epochData");
        while (progress().epoch() < totalEpochs) {
            int e = progress().epoch();
            DataSetIterator it = Objects.requireNonNull(epochData.apply(e), "epochData returned null for epoch " + e);
            runEpoch(it, stepInEpoch);
        }
    }

    /** Sets the position that {@link #fitToEpoch} resumes from (used when restoring a checkpoint). */
    void restoreProgress(int epoch, int iteration, long stepInEpoch, long steps, long skipped, long examples) {
        for (ModelReplica r : replicas) {
            r.epochCount(epoch);
            r.iterationCount(iteration);
        }
        this.stepInEpoch = stepInEpoch;
        this.steps = steps;
        this.skipped = skipped;
        this.examples = examples;
        this.replicasStale = true;
    }

    /** Replicas, for checkpointing: replica 0 holds the authoritative parameters and updater state. */
    ModelReplica primary() {
        return replicas.get(0);
    }

    /** Slices the update runs in: the workers when it is sharded, else 1. */
    int updateShards() {
        return shardedUpdate == null ? 1 : shardedUpdate.shards();
    }

    /** Marks the other replicas' parameters as outdated after replica 0's were replaced. */
    void parametersReplaced() {
        replicasStale = true;
    }

    private void runEpoch(DataSetIterator iterator, long skipSteps) {
        ensureOpen();
        String name = iterator.getClass().getSimpleName();
        int target = ctx.batchSizePerWorker() * ctx.workers();
        if (ctx.prefetch() == 0) {
            runEpoch(new Batches(Batches.of(iterator), target, name), skipSteps);
            return;
        }
        try (Prefetcher prefetcher = new Prefetcher(iterator, ctx.prefetch(), "poniard-trainer-prefetch")) {
            runEpoch(new Batches(prefetcher::next, target, name), skipSteps);
        }
    }

    private void runEpoch(Batches batches, long skipSteps) {
        if (sameDiffRun != null) {
            sameDiffRun.runEpoch(batches); // no checkpoints, so never resumed mid-epoch
            return;
        }
        ModelReplica primary = replicas.get(0);
        int epoch = primary.epochCount();
        Collection<TrainingListener> listeners = primary.listeners();
        if (skipSteps == 0) {
            for (TrainingListener l : listeners) {
                l.onEpochStart(primary.model);
            }
        } else {
            LOG.info("resuming epoch {} after {} steps", epoch, skipSteps);
        }
        boolean multiRank = ctx.allReduce().worldSize() > 1;
        for (long s = 0; s < skipSteps; s++) {
            if (read(batches, epoch) == null && !multiRank) {
                // With several ranks a rank's data may end before the others' and it takes part with no examples.
                throw new TrainerException("cannot resume epoch " + epoch + " at step " + skipSteps + ": its data has only "
                        + s + " global batches; resume with the same data, batch size and workers as the checkpoint");
            }
        }
        stepInEpoch = skipSteps;
        // A rank whose data is out (current == null) still joins every step with no examples until all ranks are
        // out: the step's all-reduced totals then hold no examples, which ends the epoch on every rank alike.
        DataSet current = read(batches, epoch);
        while (true) {
            Step step = current == null ? null : launchStep(current);
            DataSet next = null;
            if (current != null) {
                try {
                    next = read(batches, epoch);
                } catch (RuntimeException e) {
                    // As model.fit, every batch read before the failing one is trained on.
                    try {
                        finishStep(step);
                    } catch (RuntimeException stepFailure) {
                        stepFailure.addSuppressed(e);
                        throw stepFailure;
                    }
                    throw e;
                }
            }
            if (!finishStep(step)) {
                break;
            }
            current = next;
        }
        for (TrainingListener l : listeners) {
            l.onEpochEnd(primary.model);
        }
        for (ModelReplica r : replicas) {
            r.epochCount(epoch + 1);
        }
        stepInEpoch = 0;
        checkpoint();
    }

    private void checkpoint() {
        // Every rank holds the same parameters: rank 0 alone writes, all ranks can restore.
        if (ctx.checkpoints() == null || ctx.allReduce().rank() != 0) {
            return;
        }
        try {
            ctx.checkpoints().save(this);
        } catch (java.io.IOException | RuntimeException e) {
            throw new TrainerException("writing a checkpoint to " + ctx.checkpoints().directory() + " failed: " + e, e);
        }
    }

    private DataSet read(Batches batches, int epoch) {
        try {
            return batches.next();
        } catch (TrainerException e) {
            throw e;
        } catch (RuntimeException e) {
            throw new TrainerException("reading batch " + (batches.read() + 1) + " of epoch " + epoch
                    + " from the data iterator failed: " + e, e);
        }
    }

    /** One step in flight: its tasks and what they were given. */
    private final class Step {
        final int n;
        final List<TaskHandle<Double>> grads = new ArrayList<>();
        final List<TaskHandle<Integer>> sums;
        /** Sharded update tasks that follow the sums without the calling thread, or empty (see {@link #launchStep}). */
        final List<TaskHandle<Boolean>> updates;

        Step(int n, List<TaskHandle<Double>> grads, List<TaskHandle<Integer>> sums, List<TaskHandle<Boolean>> updates) {
            this.n = n;
            this.grads.addAll(grads);
            this.sums = sums;
            this.updates = updates;
        }

        void awaitQuietly() {
            ParallelTrainer.awaitQuietly(grads);
            ParallelTrainer.awaitQuietly(sums);
            ParallelTrainer.awaitQuietly(updates);
        }
    }

    private Step launchStep(DataSet batch) {
        int n = batch.numExamples();
        int[] sizes = Batches.shardSizes(n, replicas.size());
        boolean stale = replicasStale;
        INDArray primaryParams = replicas.get(0).params();
        List<TaskHandle<Double>> grads = new ArrayList<>();
        int from = 0;
        for (int i = 0; i < replicas.size() && sizes[i] > 0; i++) {
            ModelReplica r = replicas.get(i);
            int a = from, b = from + sizes[i], idx = i;
            from = b;
            grads.add(scheduler.spawn(gradOptions[i], () -> {
                seedOnce(idx);
                if (idx > 0 && stale) {
                    r.params().assign(primaryParams);
                }
                DataSet shard = Batches.slice(batch, a, b);
                r.setData(shard.getFeatures(), shard.getLabels(), shard.getFeaturesMaskArray(), shard.getLabelsMaskArray());
                r.computeGradientAndScore();
                return r.score() * (b - a);
            }));
        }
        if (stale) {
            replicasStale = grads.size() < replicas.size(); // replicas without a shard did not copy
        }
        List<TaskHandle<Integer>> sums = reduction.spawn(scheduler, grads, grads.size());
        return new Step(n, grads, sums, chainedUpdate(n, grads, sums));
    }

    /**
     * In one process with a sharded update, the update tasks wait for the step's gradient and sum tasks themselves
     * and decide alike whether the step is finite (a skipped step changes nothing), so the workers go from summing
     * to updating without a round trip through the calling thread: waking it and having it spawn the update took
     * 35-250 us per step on 2 quiet cores and up to 850 us on busy ones. With several ranks the calling thread
     * all-reduces the gradient in between, and {@link #finishStep} spawns the update.
     */
    private List<TaskHandle<Boolean>> chainedUpdate(int n, List<TaskHandle<Double>> grads, List<TaskHandle<Integer>> sums) {
        ShardedUpdate sharded = ctx.allReduce() instanceof GradientAllReduce.SingleRank ? currentShardedUpdate() : null;
        if (sharded == null) {
            return List.of();
        }
        ModelReplica primary = replicas.get(0);
        int iteration = primary.iterationCount();
        int epoch = primary.epochCount();
        List<Object> deps = new ArrayList<>(grads);
        deps.addAll(sums);
        Object[] inputs = deps.toArray();
        List<TaskHandle<Boolean>> updates = new ArrayList<>(sharded.shards());
        for (int i = 0; i < sharded.shards(); i++) {
            int shard = i;
            updates.add(scheduler.spawnN(updateOptions[i], ignored -> {
                if (!totals(n, grads, sums).finite()) {
                    return false; // finishStep applies the NaN policy
                }
                sharded.apply(shard, iteration, epoch, n);
                return true;
            }, inputs));
        }
        return updates;
    }

    /** The step's totals in this process; the same double additions in the same order wherever it is computed. */
    private static StepTotals totals(int n, List<TaskHandle<Double>> grads, List<TaskHandle<Integer>> sums) {
        double lossSum = 0;
        long nonFinite = 0;
        for (TaskHandle<Double> g : grads) {
            lossSum += g.join();
        }
        for (TaskHandle<Integer> s : sums) {
            nonFinite += s.join();
        }
        return new StepTotals(n, lossSum, nonFinite);
    }

    private void seedOnce(int replica) {
        if (!seeded[replica]) {
            Nd4j.getRandom().setSeed(ctx.seed() + replica);
            seeded[replica] = true;
        }
    }

    /**
     * Completes a step: waits for its tasks, combines ranks, applies the update. {@code step} is null when this
     * rank has no data left; returns false when no rank had any (the end of the epoch).
     */
    private boolean finishStep(Step step) {
        ModelReplica primary = replicas.get(0);
        int iteration = primary.iterationCount();
        int epoch = primary.epochCount();
        StepTotals local = new StepTotals(0, 0, 0);
        boolean chained = step != null && !step.updates.isEmpty();
        if (step != null) {
            try {
                local = totals(step.n, step.grads, step.sums);
                for (TaskHandle<Boolean> u : step.updates) {
                    u.join(); // each applied its shard, or none did when the step is not finite
                }
            } catch (TaskFailedException e) {
                step.awaitQuietly();
                throw new TrainerException("step " + iteration + " (epoch " + epoch + ") failed in task " + e.failedTask()
                        + ": " + e.getCause(), e.getCause());
            }
        }
        GradientAllReduce allReduce = ctx.allReduce();
        StepTotals totals = allReduce.allReduceTotals(local);
        if (totals.examples() == 0) {
            return false;
        }
        if (!totals.finite()) {
            String what = "step " + iteration + " (epoch " + epoch + ", " + totals.examples() + " examples): "
                    + (Double.isFinite(totals.lossSum()) ? "the gradient" : "the loss") + " is NaN or infinite";
            if (ctx.nanPolicy() == NanPolicy.STOP) {
                throw new NonFiniteGradientException(iteration, epoch, what + "; parameters are left as before this step."
                        + " Check the input data for NaN/Inf, lower the learning rate, or add gradient clipping;"
                        + " NanPolicy.SKIP_STEP skips such steps instead");
            }
            LOG.warn("{}; skipping the step (NanPolicy.SKIP_STEP)", what);
            skipped++;
            stepInEpoch++;
            return true;
        }
        if (allReduce.worldSize() > 1) {
            if (step == null) {
                primary.gradientView().assign(0); // still holds the last step's gradient
            }
            allReduce.allReduceGradient(primary.gradientView());
        }
        long total = totals.examples();
        if (total > Integer.MAX_VALUE) {
            throw new TrainerException("global batch of " + total + " examples exceeds DL4J's int minibatch size");
        }
        if (chained) {
            replicasStale = false; // the step's update tasks applied it and copied the parameters into every replica
        } else {
            update(primary, iteration, epoch, (int) total);
        }
        double loss = totals.meanLoss();
        primary.setScore(loss);
        lastLoss = loss;
        steps++;
        stepInEpoch++;
        examples += total;
        for (TrainingListener l : primary.listeners()) {
            l.iterationDone(primary.model, iteration, epoch);
        }
        for (ModelReplica r : replicas) {
            r.iterationCount(iteration + 1);
        }
        if (ctx.checkpointEverySteps() > 0 && (iteration + 1) % ctx.checkpointEverySteps() == 0) {
            checkpoint();
        }
        return true;
    }

    /**
     * The sharded update, cut again when the model's updater or arrays were replaced since; null when the update runs
     * serially.
     */
    private ShardedUpdate currentShardedUpdate() {
        if (shardedUpdate != null && !shardedUpdate.appliesTo(replicas.get(0))) {
            shardedUpdate = ShardedUpdate.of(replicas, ctx.workers());
        }
        return shardedUpdate;
    }

    /** Spawns the update of the summed gradient, sharded or serial on replica 0, and waits for it. */
    private void update(ModelReplica primary, int iteration, int epoch, int total) {
        ShardedUpdate sharded = currentShardedUpdate();
        List<TaskHandle<Object>> updates = new ArrayList<>();
        try {
            if (sharded != null) {
                for (int i = 0; i < sharded.shards(); i++) {
                    int shard = i;
                    updates.add(scheduler.spawn(updateOptions[i], () -> {
                        sharded.apply(shard, iteration, epoch, total);
                        return null;
                    }));
                }
            } else {
                updates.add(scheduler.spawn(UPDATE, () -> {
                    primary.applyUpdater(iteration, epoch, total);
                    INDArray params = primary.params();
                    params.subi(primary.gradientView().reshape(params.shape())); // both flat; only the rank may differ
                    primary.applyConstraints(iteration, epoch);
                    return null;
                }));
            }
            for (TaskHandle<Object> u : updates) {
                u.join();
            }
        } catch (TaskFailedException e) {
            awaitQuietly(updates);
            throw new TrainerException("step " + iteration + ": applying the updater failed: " + e.getCause(), e.getCause());
        }
        // The shards copied the new parameters into every replica; a serial update leaves that to the next tasks.
        replicasStale = sharded == null;
    }

    /** Classification metrics of the model on {@code iterator}'s data, computed on all replicas in parallel. */
    public Evaluation evaluate(DataSetIterator iterator) {
        ensureOpen();
        if (sameDiffRun != null) {
            return sameDiffRun.evaluate(iterator);
        }
        if (!iterator.hasNext() && iterator.resetSupported()) {
            iterator.reset();
        }
        boolean stale = replicasStale;
        INDArray primaryParams = replicas.get(0).params();
        boolean[] synced = new boolean[replicas.size()];
        List<Evaluation> evals = new ArrayList<>();
        for (int i = 0; i < replicas.size(); i++) {
            evals.add(new Evaluation());
        }
        long batchNo = 0;
        while (true) {
            DataSet ds;
            try {
                if (!iterator.hasNext()) {
                    break;
                }
                ds = iterator.next();
                batchNo++;
            } catch (RuntimeException e) {
                throw new TrainerException("reading evaluation batch " + (batchNo + 1) + " failed: " + e, e);
            }
            int[] sizes = Batches.shardSizes(ds.numExamples(), replicas.size());
            List<TaskHandle<Object>> tasks = new ArrayList<>();
            int from = 0;
            for (int i = 0; i < replicas.size() && sizes[i] > 0; i++) {
                ModelReplica r = replicas.get(i);
                Evaluation ev = evals.get(i);
                int a = from, b = from + sizes[i], idx = i;
                boolean copy = idx > 0 && stale && !synced[idx];
                synced[idx] |= copy;
                from = b;
                tasks.add(scheduler.spawn(evalOptions[i], () -> {
                    if (copy) {
                        r.params().assign(primaryParams);
                    }
                    DataSet shard = Batches.slice(ds, a, b);
                    INDArray out = r.output(shard.getFeatures(), shard.getFeaturesMaskArray());
                    ev.eval(shard.getLabels(), out, shard.getLabelsMaskArray());
                    return null;
                }));
            }
            for (TaskHandle<Object> t : tasks) {
                try {
                    t.join();
                } catch (TaskFailedException e) {
                    awaitQuietly(tasks);
                    throw new TrainerException("evaluation of batch " + batchNo + " failed in task " + e.failedTask()
                            + ": " + e.getCause(), e.getCause());
                }
            }
        }
        boolean allSynced = true;
        for (int i = 1; i < synced.length; i++) {
            allSynced &= synced[i];
        }
        if (stale && allSynced) {
            replicasStale = false;
        }
        Evaluation merged = evals.get(0);
        for (int i = 1; i < evals.size(); i++) {
            merged.merge(evals.get(i));
        }
        return merged;
    }

    /** Waits for tasks that are being abandoned, so no replica is still in use when an error reaches the caller. */
    private static void awaitQuietly(List<? extends TaskHandle<?>> tasks) {
        for (TaskHandle<?> h : tasks) {
            try {
                h.join();
            } catch (RuntimeException ignored) {
                // the first failure is what gets reported
            }
        }
    }

    private void ensureOpen() {
        if (closed) {
            throw new IllegalStateException("this ParallelTrainer is closed");
        }
    }

    /** Stops the scheduler; the model (replica 0) stays usable with the trained parameters. */
    @Override
    public void close() {
        if (closed) {
            return;
        }
        closed = true;
        if (sameDiffRun != null) {
            sameDiffRun.close();
        } else {
            scheduler.close();
        }
        for (ModelReplica r : replicas) {
            r.clearData();
        }
    }
}
