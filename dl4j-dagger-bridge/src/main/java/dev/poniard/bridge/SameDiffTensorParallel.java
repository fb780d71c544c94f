package dev.poniard.bridge;

import dev.poniard.scheduler.Scheduler;
import dev.poniard.scheduler.Scope;
import dev.poniard.scheduler.TaskHandle;
import dev.poniard.scheduler.TaskOptions;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import org.nd4j.autodiff.samediff.SameDiff;
import org.nd4j.autodiff.samediff.TrainingConfig;
import org.nd4j.autodiff.samediff.api.OutAndGrad;
import org.nd4j.linalg.api.ndarray.INDArray;

/**
 * Tensor-parallel (Megatron-style) training of a SameDiff graph on W in-process workers, run as tasks on the Poniard
 * scheduler: large matmul weights are split column-parallel (by output columns, with their bias) and the matmul that
 * reads the split activation row-parallel (by input rows), so each column→row pair costs one sum over workers in the
 * forward pass and one in the backward pass; all other ops and parameters are replicated. After every step the
 * caller's graph holds the parameters {@code sd.fit} would have produced on the same batch with the same updater.
 *
 * <pre>{@code
 * try (SameDiffTensorParallel tp = SameDiffTensorParallel.launch(new SameDiffTensorParallel.Context()
 *         .sameDiff(sd).workers(2).sample(sampleBatch))) {
 *     tp.splitWeights();                  // e.g. {f1=column, fb1=column bias, f2=row, fb2=row bias}
 *     double loss = tp.step(Map.of("in", x, "label", y));
 * }
 * }</pre>
 *
 * <p><b>Implementation overview.</b> {@link TensorParallelPlan} propagates a sharding state (replicated, split along
 * an axis, partial sum) through the imported op DAG on the sample's shapes, choosing column-parallel weights and
 * following their split through element-wise ops, softmax, permutes, reshapes that keep whole blocks (attention heads)
 * and batched matmuls until a row-parallel matmul turns it into partial sums; weights whose split would reach any
 * other op stay replicated. Each worker then gets a <em>shard graph</em>: a {@code dup()} of the caller's graph holding
 * its blocks of the split weights (uneven blocks when the width does not divide, always in whole heads), a row bias
 * only on worker 0 (zeros elsewhere, so the sum adds it once while every worker still computes its full gradient),
 * and reshape shape arguments rewritten to the local sizes. We shard whole SameDiff graphs rather than run the op DAG
 * with sharded arrays because SameDiff's own gradient function then does all differentiation (M2.1's per-op
 * {@code doDiff} needs a graph to build into) and dup()/pruning is already proven by {@link StageGraph}.
 *
 * <p>The op order is cut into segments (maximal runs of replicated ops, or of ops computing split/partial values);
 * each segment of each worker is a {@link StageGraph} (a pruned graph whose backward is SameDiff's vector-Jacobian
 * product). One step, for segments k and workers w, all tasks scoped to processor w except the sums:
 * <ul>
 *   <li>F(k,w): the segment's forward on worker w from its placeholders, its worker's earlier outputs, and the sums
 *       of earlier partial outputs (sum task R(k): adds the workers' partials in worker order, the forward
 *       all-reduce).</li>
 *   <li>B(k,w) in reverse segment order: the gradient of each output is the sum over the segments that read it of
 *       that reader's input gradient, taken from the same worker, except that a replicated value read by a parallel
 *       segment (the input of a column-parallel matmul) gets the sum over all workers (sum task G(k): the backward
 *       all-reduce). A partial output's gradient is that of its sum (identity).</li>
 *   <li>U(w): worker w's updater (one {@link ParameterUpdater} per segment, the same IUpdater config) steps its own
 *       shards and its copy of every replicated parameter, whose gradients are identical on all workers, then copies
 *       them into the caller's graph (each worker its own blocks, worker 0 the replicated ones).</li>
 * </ul>
 * Replicated ops run on every worker. Each forward is recomputed in its backward (as in the pipeline); only segment
 * boundary values are kept. An instance is used by one thread at a time.
 */
public final class SameDiffTensorParallel implements SameDiffTraining, AutoCloseable {
    /**
     * Configuration; defaults from system properties {@code poniard.tp.workers} (2) and {@code poniard.tp.minElements}
     * (65536, the smallest weight worth splitting).
     */
    public static final class Context {
        private SameDiff sameDiff;
        private int workers = Integer.getInteger("poniard.tp.workers", 2);
        private long minElements = Long.getLong("poniard.tp.minElements", 65_536L);
        private Map<String, INDArray> sample;
        private Set<String> split = Set.of();
        private boolean trace;

        public SameDiff sameDiff() {
            return sameDiff;
        }

        /** The graph to train (training config and loss variables set); it receives the parameters after every step. */
        public Context sameDiff(SameDiff value) {
            sameDiff = value;
            return this;
        }

        public int workers() {
            return workers;
        }

        /** Workers W, one scheduler processor each; every split weight is cut into W blocks. */
        public Context workers(int value) {
            workers = value;
            return this;
        }

        public long minElements() {
            return minElements;
        }

        /** Column-parallel candidates with fewer elements stay replicated (splitting them costs more than it saves). */
        public Context minElements(long value) {
            minElements = value;
            return this;
        }

        public Map<String, INDArray> sample() {
            return sample;
        }

        /** A small batch of every placeholder, used once at launch to learn shapes. */
        public Context sample(Map<String, INDArray> value) {
            sample = value;
            return this;
        }

        public Set<String> split() {
            return split;
        }

        /** Weights that must be split; launch refuses, saying why, if one cannot be. Others are split when they can. */
        public Context split(String... weights) {
            split = Set.of(weights);
            return this;
        }

        public boolean trace() {
            return trace;
        }

        /** Records a scheduler trace of the step tasks. */
        public Context trace(boolean value) {
            trace = value;
            return this;
        }

        /** Validates the context, naming the bad value. */
        public Context conclude() {
            if (sameDiff == null) {
                throw new IllegalArgumentException("sameDiff must be set: new SameDiffTensorParallel.Context().sameDiff(sd)");
            }
            TrainingConfig tc = sameDiff.getTrainingConfig();
            if (tc == null || tc.getUpdater() == null) {
                throw new IllegalArgumentException("the graph has no training config with an updater: call "
                        + "sd.setTrainingConfig(TrainingConfig.builder().updater(...)...build()) before launch");
            }
            if (workers < 1) {
                throw new IllegalArgumentException("workers must be >= 1, got " + workers);
            }
            if (minElements < 0) {
                throw new IllegalArgumentException("minElements must be >= 0, got " + minElements);
            }
            if (sample == null || sample.isEmpty()) {
                throw new IllegalArgumentException("sample must be set: a small batch of every placeholder, to learn the "
                        + "shapes the split follows");
            }
            for (String w : split) {
                if (!sameDiff.hasVariable(w)) {
                    throw new IllegalArgumentException("split names '" + w + "', which is not a variable of the graph");
                }
            }
            return this;
        }
    }

    /** What B(k,w) computed: gradients for the segment's received activations and parameters, and its loss. */
    private record Backward(Map<String, INDArray> inputGrads, Map<String, INDArray> paramGrads, double loss) {
    }

    private final SameDiff master;
    private final TensorParallelPlan plan;
    private final int workers;
    /** graphs[k][w]: segment k on worker w; null for a segment that neither hands anything on nor computes a loss. */
    private final StageGraph[][] graphs;
    private final ParameterUpdater[][] updaters;
    private final List<Integer> live = new ArrayList<>();
    /** Activation → the segment producing it. */
    private final Map<String, Integer> producer = new HashMap<>();
    /** Activation → the segments reading it, ascending. */
    private final Map<String, List<Integer>> readers = new HashMap<>();
    private final Scheduler scheduler;
    private long steps;
    private boolean closed;

    private SameDiffTensorParallel(Context ctx) {
        this.master = ctx.sameDiff();
        this.workers = ctx.workers();
        SameDiffDag full = SameDiffDag.importGraph(master);
        full.requireDifferentiable();
        List<String> losses = List.copyOf(master.getLossVariables());
        SameDiffDag dag = full.estimateCosts(ctx.sample());
        this.plan = TensorParallelPlan.plan(dag, workers, ctx.minElements(), ctx.split());
        List<TensorParallelPlan.Segment> segs = plan.segments;

        List<Stage> stages = new ArrayList<>();
        for (TensorParallelPlan.Segment s : segs) {
            List<String> outs = new ArrayList<>();
            double cost = 0;
            double backward = 0;
            for (int i = s.firstOp(); i < s.endOp(); i++) {
                SameDiffDag.OpNode op = dag.ops().get(i);
                cost += op.cost().nanos();
                backward += op.trainingNanos() - op.cost().nanos();
                for (String o : op.outputs()) {
                    producer.put(o, s.index());
                    for (int c : dag.variable(o).consumers()) {
                        if (c >= s.endOp() && !outs.contains(o)) {
                            outs.add(o);
                        }
                    }
                }
            }
            stages.add(new Stage(s.index(), s.firstOp(), s.endOp(), cost, backward, 0, List.of(), List.of(), outs));
        }

        this.graphs = new StageGraph[segs.size()][workers];
        this.updaters = new ParameterUpdater[segs.size()][workers];
        Map<String, Integer> paramSegment = new HashMap<>();
        for (int w = 0; w < workers; w++) {
            SameDiff shard = plan.shardGraph(master, w);
            SameDiffDag shardDag = SameDiffDag.importGraph(shard).estimateCosts(ctx.sample());
            for (int i = 0; i < dag.ops().size(); i++) {
                if (!dag.ops().get(i).name().equals(shardDag.ops().get(i).name())) {
                    throw new IllegalStateException("worker " + w + "'s shard graph orders its ops differently from the "
                            + "caller's graph (op " + i + ": " + shardDag.ops().get(i).name() + " vs "
                            + dag.ops().get(i).name() + ")");
                }
            }
            for (Stage st : stages) {
                boolean hasLoss = false;
                for (int i = st.firstOp(); i < st.endOp(); i++) {
                    for (String o : dag.ops().get(i).outputs()) {
                        hasLoss |= losses.contains(o);
                    }
                }
                if (st.outputs().isEmpty() && !hasLoss) {
                    continue;      // dead ops (e.g. an inference head after the loss): nothing to train
                }
                StageGraph g = StageGraph.build(shardDag, st, losses);
                graphs[st.index()][w] = g;
                updaters[st.index()][w] = new ParameterUpdater(g.sd, g.parameters);
                if (w == 0) {
                    live.add(st.index());
                    for (String p : g.parameters) {
                        Integer other = paramSegment.put(p, st.index());
                        if (other != null) {
                            throw new UnsupportedGraphException(null, "parameter '" + p + "' is read in segment " + other
                                    + " and segment " + st.index() + " of the tensor-parallel plan (" + plan + "); "
                                    + "untie the weight");
                        }
                    }
                    for (String x : g.receivedActivations) {
                        readers.computeIfAbsent(x, k -> new ArrayList<>()).add(st.index());
                    }
                }
            }
        }
        this.scheduler = Scheduler.launch(new Scheduler.Context().name("samediff-tp").workers(workers)
                .trace(ctx.trace()).workerStart(NativeThreads::oneThreadPerWorker));
    }

    /** Plans the split, builds every worker's shard and segment graphs, and a scheduler with one worker per shard. */
    public static SameDiffTensorParallel launch(Context ctx) {
        return new SameDiffTensorParallel(ctx.conclude());
    }

    /** The split weights and their roles ({@code column}, {@code column bias}, {@code row}, {@code row bias}). */
    public Map<String, String> splitWeights() {
        return plan.roles();
    }

    /** Matmul weights that were considered and left replicated, with the reason. */
    public Map<String, String> replicatedWeights() {
        return plan.notSplit;
    }

    /** Number of segments (alternating replicated and parallel runs of ops). */
    public int segments() {
        return plan.segments.size();
    }

    public Scheduler scheduler() {
        return scheduler;
    }

    public long steps() {
        return steps;
    }

    @Override
    public SameDiff sameDiff() {
        return master;
    }

    /**
     * One synchronous step on a batch (placeholders by name, every worker sees all of it). Returns the loss at the
     * parameters before the step, as {@code sd.fit} reports it.
     */
    @Override
    public double step(Map<String, INDArray> batch) {
        if (closed) {
            throw new IllegalStateException("this SameDiffTensorParallel is closed");
        }
        Batches.rows(master, batch, Set.of());
        int K = graphs.length;
        @SuppressWarnings({"unchecked", "rawtypes"})
        TaskHandle<Map<String, INDArray>>[][] fwd = new TaskHandle[K][workers];
        @SuppressWarnings({"unchecked", "rawtypes"})
        TaskHandle<Map<String, INDArray>>[] sums = new TaskHandle[K];
        @SuppressWarnings({"unchecked", "rawtypes"})
        TaskHandle<Backward>[][] bwd = new TaskHandle[K][workers];
        @SuppressWarnings({"unchecked", "rawtypes"})
        TaskHandle<Map<String, INDArray>>[] gradSums = new TaskHandle[K];

        for (int k : live) {
            for (int w = 0; w < workers; w++) {
                fwd[k][w] = spawnForward(batch, k, w, fwd, sums);
            }
            List<String> partial = partialOutputs(k);
            if (!partial.isEmpty()) {
                sums[k] = scheduler.spawnN(TaskOptions.named("tp-sum-fwd-" + k).priority(2),
                        a -> sum(partial, a, SameDiffTensorParallel::asMap), Arrays.copyOf(fwd[k], workers, Object[].class));
            }
        }
        for (int i = live.size() - 1; i >= 0; i--) {
            int k = live.get(i);
            for (int w = 0; w < workers; w++) {
                bwd[k][w] = spawnBackward(batch, k, w, fwd, sums, bwd, gradSums);
            }
            List<String> summed = summedInputGradients(k);
            if (!summed.isEmpty()) {
                gradSums[k] = scheduler.spawnN(TaskOptions.named("tp-sum-bwd-" + k).priority(2),
                        a -> sum(summed, a, r -> ((Backward) r).inputGrads()), Arrays.copyOf(bwd[k], workers, Object[].class));
            }
        }

        TrainingConfig tc = master.getTrainingConfig();
        int iteration = tc.getIterationCount();
        int epoch = tc.getEpochCount();
        List<TaskHandle<Void>> updates = new ArrayList<>();
        for (int w = 0; w < workers; w++) {
            int worker = w;
            Object[] args = new Object[live.size()];
            for (int i = 0; i < live.size(); i++) {
                args[i] = bwd[live.get(i)][w];
            }
            updates.add(scheduler.spawnN(TaskOptions.named("tp-update-" + w).priority(2).scope(Scope.processors(w)), a -> {
                for (int i = 0; i < a.length; i++) {
                    update(live.get(i), worker, (Backward) a[i], tc, iteration, epoch);
                }
                return null;
            }, args));
        }
        for (TaskHandle<Void> u : updates) {
            SameDiffDag.join(u);
        }
        double loss = 0;
        for (int k : live) {
            loss += SameDiffDag.join(bwd[k][0]).loss();
        }
        tc.incrementIterationCount();
        steps++;
        return loss;
    }

    /** Outputs of segment k that are partial sums (summed over workers before anyone reads them). */
    private List<String> partialOutputs(int k) {
        List<String> p = new ArrayList<>();
        for (String o : graphs[k][0].outputs) {
            if (kind(o) == TensorParallelPlan.Kind.PARTIAL) {
                p.add(o);
            }
        }
        return p;
    }

    /** Replicated values read by parallel segment k: their gradients are summed over the workers. */
    private List<String> summedInputGradients(int k) {
        List<String> s = new ArrayList<>();
        if (plan.segments.get(k).parallel()) {
            for (String x : graphs[k][0].receivedActivations) {
                if (kind(x) != TensorParallelPlan.Kind.SPLIT) {
                    s.add(x);
                }
            }
        }
        return s;
    }

    @SuppressWarnings("unchecked")
    private static Map<String, INDArray> asMap(Object r) {
        return (Map<String, INDArray>) r;
    }

    private TensorParallelPlan.Kind kind(String v) {
        TensorParallelPlan.Sh s = plan.states.get(v);
        return s == null ? TensorParallelPlan.Kind.REP : s.kind();
    }

    /** Element-wise sum of {@code names} over the workers' results, in worker order (the same on every run). */
    private static Map<String, INDArray> sum(List<String> names, Object[] results,
                                             java.util.function.Function<Object, Map<String, INDArray>> view) {
        Map<String, INDArray> out = new LinkedHashMap<>();
        for (String n : names) {
            INDArray acc = null;
            for (Object r : results) {
                INDArray v = view.apply(r).get(n);
                if (v == null) {
                    throw new IllegalStateException("a worker computed no value for '" + n + "'");
                }
                acc = acc == null ? v.dup() : acc.addi(v);
            }
            out.put(n, acc);
        }
        return out;
    }

    /** Handles F(k,w) reads: [for each received activation: its producer's forward on w, or the sum task]. */
    private Object[] forwardInputs(int k, int w, TaskHandle<Map<String, INDArray>>[][] fwd,
                                   TaskHandle<Map<String, INDArray>>[] sums) {
        List<String> recv = graphs[k][w].receivedActivations;
        Object[] args = new Object[recv.size()];
        for (int i = 0; i < recv.size(); i++) {
            int p = producer.get(recv.get(i));
            args[i] = kind(recv.get(i)) == TensorParallelPlan.Kind.PARTIAL ? sums[p] : fwd[p][w];
        }
        return args;
    }

    @SuppressWarnings("unchecked")
    private Map<String, INDArray> feeds(Map<String, INDArray> batch, StageGraph g, Object[] a, int from) {
        Map<String, INDArray> feeds = new HashMap<>();
        for (String p : g.placeholders) {
            INDArray v = batch.get(p);
            if (v == null) {
                throw new IllegalArgumentException("the batch has no value for placeholder '" + p + "'");
            }
            feeds.put(p, v);
        }
        for (int i = 0; i < g.receivedActivations.size(); i++) {
            String x = g.receivedActivations.get(i);
            feeds.put(x, ((Map<String, INDArray>) a[from + i]).get(x));
        }
        return feeds;
    }

    private TaskHandle<Map<String, INDArray>> spawnForward(Map<String, INDArray> batch, int k, int w,
                                                           TaskHandle<Map<String, INDArray>>[][] fwd,
                                                           TaskHandle<Map<String, INDArray>>[] sums) {
        StageGraph g = graphs[k][w];
        TaskOptions opt = TaskOptions.named("tp-F k" + k + " w" + w).scope(Scope.processors(w))
                .costHint(java.time.Duration.ofNanos(Math.max(1, (long) g.stage.costNanos())));
        return scheduler.spawnN(opt, a -> g.forward(feeds(batch, g, a, 0)), forwardInputs(k, w, fwd, sums));
    }

    @SuppressWarnings("unchecked")
    private TaskHandle<Backward> spawnBackward(Map<String, INDArray> batch, int k, int w,
                                               TaskHandle<Map<String, INDArray>>[][] fwd,
                                               TaskHandle<Map<String, INDArray>>[] sums, TaskHandle<Backward>[][] bwd,
                                               TaskHandle<Map<String, INDArray>>[] gradSums) {
        StageGraph g = graphs[k][w];
        Object[] in = forwardInputs(k, w, fwd, sums);
        // Per output, per reading segment: the reader's backward on this worker or, for a replicated value read by a
        // parallel segment, the reader's sum over workers.
        List<String> outName = new ArrayList<>();
        List<Object> outFrom = new ArrayList<>();
        for (String o : g.outputs) {
            for (int c : readers.getOrDefault(o, List.of())) {
                boolean summed = plan.segments.get(c).parallel() && kind(o) != TensorParallelPlan.Kind.SPLIT;
                outName.add(o);
                outFrom.add(summed ? gradSums[c] : bwd[c][w]);
            }
        }
        Object[] args = new Object[in.length + outFrom.size()];
        System.arraycopy(in, 0, args, 0, in.length);
        for (int i = 0; i < outFrom.size(); i++) {
            args[in.length + i] = outFrom.get(i);
        }
        int nIn = in.length;
        if (g.parameters.isEmpty() && g.receivedActivations.isEmpty()) {
            if (!g.losses.isEmpty()) {
                throw new UnsupportedGraphException(null, "the loss " + g.losses + " depends on no trainable parameter");
            }
            // Nothing to differentiate: the segment reads only placeholders (e.g. a leading reshape).
            return scheduler.spawnN(TaskOptions.named("tp-B k" + k + " w" + w).scope(Scope.processors(w)),
                    a -> new Backward(Map.of(), Map.of(), 0), args);
        }
        TaskOptions opt = TaskOptions.named("tp-B k" + k + " w" + w).scope(Scope.processors(w))
                .costHint(java.time.Duration.ofNanos(Math.max(1, (long) (g.stage.costNanos() + g.stage.backwardNanos()))));
        return scheduler.spawnN(opt, a -> {
            Map<String, INDArray> feeds = feeds(batch, g, a, 0);
            Map<String, INDArray> outGrads = new HashMap<>();
            for (int i = 0; i < outName.size(); i++) {
                Object r = a[nIn + i];
                Map<String, INDArray> grads = r instanceof Backward b ? b.inputGrads() : (Map<String, INDArray>) r;
                INDArray gr = grads.get(outName.get(i));
                if (gr == null) {
                    throw new IllegalStateException("no gradient for '" + outName.get(i) + "' reached segment " + k);
                }
                outGrads.merge(outName.get(i), gr, INDArray::add);
            }
            OutAndGrad og = g.backward(feeds, outGrads);
            Map<String, INDArray> params = new HashMap<>();
            for (String p : g.parameters) {
                INDArray grad = og.getGradients().get(p);
                if (grad == null) {
                    throw new IllegalStateException("segment " + k + " on worker " + w + " computed no gradient for '" + p + "'");
                }
                params.put(p, grad);
            }
            double loss = 0;
            for (String l : g.losses) {
                INDArray v = og.getOutputs().get(l);
                loss += v.isScalar() ? v.getDouble(0) : v.sumNumber().doubleValue();
            }
            Map<String, INDArray> inGrads = new HashMap<>();
            for (String x : g.receivedActivations) {
                inGrads.put(x, og.getGradients().get(x));
            }
            return new Backward(inGrads, params, loss);
        }, args);
    }

    /** Worker w's update of segment k's parameters, then its part of them into the caller's graph. */
    private void update(int k, int w, Backward b, TrainingConfig tc, int iteration, int epoch) {
        StageGraph g = graphs[k][w];
        for (String p : g.parameters) {
            TensorParallelPlan.Split s = plan.splits.get(p);
            boolean zeroCopy = s != null && s.placement() == TensorParallelPlan.Placement.WORKER_ZERO && w != 0;
            if (zeroCopy) {
                continue;     // this worker holds zeros for the row bias; worker 0 owns its value
            }
            INDArray param = g.sd.getArrForVarName(p);
            updaters[k][w].apply(p, param, b.paramGrads().get(p).dup(param.ordering()), tc, iteration, epoch);
            INDArray target = master.getArrForVarName(p);
            if (s != null && s.placement() == TensorParallelPlan.Placement.BLOCKS) {
                target.get(plan.index(s, target.rank(), w)).assign(param);
            } else if (w == 0) {
                target.assign(param);
            }
        }
    }

    /** Worker {@code w}'s current array of parameter {@code p} (its block if split); for tests. */
    INDArray workerParameter(int w, String p) {
        for (StageGraph[] seg : graphs) {
            if (seg[w] != null && seg[w].parameters.contains(p)) {
                return seg[w].sd.getArrForVarName(p);
            }
        }
        throw new IllegalArgumentException("no segment of worker " + w + " holds parameter '" + p + "'");
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
        return "SameDiffTensorParallel[workers=" + workers + ", " + plan + ", steps=" + steps + "]";
    }
}
