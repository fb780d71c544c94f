package dev.poniard.moe;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import org.deeplearning4j.nn.conf.NeuralNetConfiguration;
import org.deeplearning4j.nn.gradient.DefaultGradient;
import org.deeplearning4j.nn.gradient.Gradient;
import org.deeplearning4j.nn.layers.BaseLayer;
import org.deeplearning4j.nn.workspace.ArrayType;
import org.deeplearning4j.nn.workspace.LayerWorkspaceMgr;
import org.nd4j.common.primitives.Pair;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.memory.MemoryWorkspace;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * The DL4J layer of a {@link MoeLayer}: forward and backward written directly on ND4J arrays (SameDiff M2.1 lacks
 * a usable top-k and several gradients, DESIGN §4), with the expert work run by an {@link ExpertExecutor}.
 *
 * <p><b>Implementation overview.</b> Forward: tokens x [N, d] (a [b, d, T] sequence is flattened to N = b·T rows)
 * → router logits x·W_r → {@link RoutingPlan} (softmax, k rounds of argmax, gates, capacity, dispatch order) →
 * the kept assignments' rows are gathered expert by expert into one [A, d] array (one {@code pullRows}) → each
 * expert's rows, cut into chunks, run as tasks writing gate·y into disjoint rows of a [A + 1, d] array whose last
 * row stays zero → the output is Σ_j pullRows(that array, position of token n's slot-j assignment or the zero row)
 * plus the shared experts' outputs. Backward mirrors it: the upstream gradient is gathered in dispatch order, the
 * chunks' backward tasks write input-gradient rows and gate gradients and return weight partials reduced per
 * expert in a fixed order, the router's logit gradient (task loss through the gates, plus the load-balancing and
 * z-loss terms) gives dW_r and its share of dx. An expert that got no token has no task and a zero gradient.
 * Everything the backward needs is held outside DL4J's workspaces (they would be reset between the passes) and
 * results are copied into the workspace arrays DL4J expects.
 *
 * <p>The auxiliary losses of the last training forward are reported through {@link #calcRegularizationScore}, so
 * they are part of the model's score exactly as their gradients are part of the router's gradient.
 */
public class MoeLayerImpl extends BaseLayer<MoeLayer> implements AutoCloseable {
    private static final Logger LOG = LoggerFactory.getLogger(MoeLayerImpl.class);

    private ExpertExecutor executor;
    private boolean ownsExecutor;
    private Step step;
    private double auxScore;
    private volatile MoeMetrics metrics;

    /** What the backward pass needs from the forward. */
    private record Step(RoutingPlan plan, INDArray x, ExpertExecutor.Plan chunks, long[] inputShape,
                        List<ExpertJob> routedJobs, int[] jobExpert) {
    }

    public MoeLayerImpl(NeuralNetConfiguration conf, DataType dataType) {
        super(conf, dataType);
    }

    /**
     * Runs this layer's expert work on {@code value} from now on (not closed by {@link #close}); by default the
     * layer runs inline when configured with 1 worker and otherwise launches and owns a scheduler on first use.
     */
    public synchronized void useExecutor(ExpertExecutor value) {
        closeOwned();
        executor = value;
        ownsExecutor = false;
    }

    /** The executor running this layer's experts, launching the layer's own scheduler when none was given. */
    public synchronized ExpertExecutor executor() {
        if (executor == null) {
            int workers = layerConf().getWorkers();
            if (workers == 1) {
                executor = ExpertExecutor.inline();
            } else {
                executor = ExpertExecutor.launch(workers, "moe-layer" + getIndex());
                LOG.info("MoE layer {} launched its own expert scheduler with {} workers", getIndex(), workers);
            }
            ownsExecutor = true;
        }
        return executor;
    }

    /** Load statistics of the last forward pass, or null before the first. */
    public MoeMetrics lastMetrics() {
        return metrics;
    }

    @Override
    public Type type() {
        return Type.FEED_FORWARD;
    }

    @Override
    public boolean isPretrainLayer() {
        return false;
    }

    @Override
    public void clearNoiseWeightParams() {
        // no weight noise support: parameters are used as they are
    }

    @Override
    public boolean hasBias() {
        return true;
    }

    @Override
    public INDArray activate(boolean training, LayerWorkspaceMgr workspaceMgr) {
        assertInputSet(false);
        applyDropOutIfNecessary(training, workspaceMgr);
        MoeLayer cfg = layerConf();
        long d = cfg.getNIn();
        long[] shape = input.shape();
        if ((input.rank() != 2 && input.rank() != 3) || shape[1] != d) {
            throw new IllegalArgumentException("MoeLayer " + layerId() + " expects [batch, " + d + "] or [batch, " + d
                    + ", T] input, got " + Arrays.toString(shape));
        }
        INDArray out;
        try (MemoryWorkspace ignored = Nd4j.getWorkspaceManager().scopeOutOfWorkspaces()) {
            INDArray x = tokens(input.castTo(dataType));
            int n = (int) x.rows();
            int experts = cfg.getExperts();
            INDArray wr = getParam(MoeParamInitializer.ROUTER_W);
            double[] logits = x.mmul(wr).castTo(DataType.DOUBLE).dup('c').data().asDouble();
            RoutingPlan plan = RoutingPlan.route(logits, n, experts, cfg.getTopK(), cfg.capacity(n), cfg.getDropPolicy(),
                    cfg.isRenormalizeGates(), cfg.getAuxLossWeight(), cfg.getRouterZLossWeight());
            int total = plan.dispatched();
            INDArray gatedOut = Nd4j.zeros(dataType, total + 1, d);
            List<ExpertJob> jobs = new ArrayList<>();
            List<ExpertJob> routed = new ArrayList<>();
            int[] jobExpert = new int[experts];
            Arrays.fill(jobExpert, -1);
            if (total > 0) {
                INDArray xd = Nd4j.pullRows(x, 1, plan.dispatchTokens(), 'c');
                INDArray gates = Nd4j.createFromArray(plan.dispatchGates()).castTo(dataType).reshape(total, 1);
                for (int e = 0; e < experts; e++) {
                    int from = plan.offsets[e];
                    int to = plan.offsets[e + 1];
                    if (to == from) {
                        continue;
                    }
                    ExpertJob job = new ExpertJob("e" + e, p(e, "W1"), p(e, "b1"), p(e, "W2"), p(e, "b2"),
                            cfg.getExpertActivation(), ExpertKernels.rows(xd, from, to), ExpertKernels.rows(gates, from, to),
                            ExpertKernels.rows(gatedOut, from, to));
                    jobExpert[e] = routed.size();
                    routed.add(job);
                    jobs.add(job);
                }
            }
            List<INDArray> sharedOut = new ArrayList<>();
            for (int s = 0; s < cfg.getSharedExperts(); s++) {
                INDArray o = Nd4j.create(dataType, n, d);
                sharedOut.add(o);
                jobs.add(new ExpertJob("s" + s, sp(s, "W1"), sp(s, "b1"), sp(s, "W2"), sp(s, "b2"),
                        cfg.getExpertActivation(), x, null, o));
            }
            ExpertExecutor.Plan chunks = ExpertExecutor.plan(jobs, cfg.getWorkers(), cfg.getMinChunkTokens(),
                    cfg.getChunksPerWorker());
            executor().forward(chunks, training);
            INDArray y = Nd4j.zeros(dataType, n, d);
            for (INDArray o : sharedOut) {
                y.addi(o);
            }
            for (int j = 0; j < cfg.getTopK(); j++) {
                y.addi(Nd4j.pullRows(gatedOut, 1, plan.slotPositions(j), 'c'));
            }
            MoeMetrics m = MoeMetrics.of(plan);
            metrics = m;
            if (LOG.isDebugEnabled()) {
                LOG.debug("MoE layer {} ({} tasks): {}", getIndex(), chunks.chunks().size(), m);
            }
            if (training) {
                step = new Step(plan, x, chunks, shape, routed, jobExpert);
                auxScore = plan.auxLoss() + plan.zLoss();
            } else {
                chunks.release();
                step = null;
                auxScore = 0;
            }
            out = untokens(y, shape);
        }
        INDArray ret = workspaceMgr.createUninitialized(ArrayType.ACTIVATIONS, dataType, out.shape(), 'c');
        ret.assign(out);
        return ret;
    }

    @Override
    public Pair<Gradient, INDArray> backpropGradient(INDArray epsilon, LayerWorkspaceMgr workspaceMgr) {
        Step s = step;
        if (s == null) {
            throw new IllegalStateException("MoeLayer " + layerId() + ": backpropGradient needs a training forward pass first");
        }
        if (!Arrays.equals(epsilon.shape(), outputShape(s.inputShape()))) {
            throw new IllegalArgumentException("MoeLayer " + layerId() + ": epsilon shape " + Arrays.toString(epsilon.shape())
                    + " does not match the output shape " + Arrays.toString(outputShape(s.inputShape())));
        }
        MoeLayer cfg = layerConf();
        long d = cfg.getNIn();
        RoutingPlan plan = s.plan();
        INDArray dx;
        try (MemoryWorkspace ignored = Nd4j.getWorkspaceManager().scopeOutOfWorkspaces()) {
            INDArray eps = tokens(epsilon.castTo(dataType));
            int n = (int) eps.rows();
            int total = plan.dispatched();
            INDArray dxd = Nd4j.zeros(dataType, total + 1, d);
            double[] dGateDispatch = new double[total];
            INDArray epsD = total > 0 ? Nd4j.pullRows(eps, 1, plan.dispatchTokens(), 'c') : null;
            List<double[]> jobGates = new ArrayList<>();
            for (int e = 0; e < cfg.getExperts(); e++) {
                int ji = s.jobExpert()[e];
                if (ji < 0) {
                    for (String w : new String[] {"W1", "b1", "W2", "b2"}) {
                        gradientViews.get(MoeParamInitializer.expertParam(e, w)).assign(0);
                    }
                    continue;
                }
                int from = plan.offsets[e];
                int to = plan.offsets[e + 1];
                double[] dg = new double[to - from];
                jobGates.add(dg);
                s.routedJobs().get(ji).gradients(ExpertKernels.rows(epsD, from, to), ExpertKernels.rows(dxd, from, to), dg,
                        g(MoeParamInitializer.expertParam(e, "W1")), g(MoeParamInitializer.expertParam(e, "b1")),
                        g(MoeParamInitializer.expertParam(e, "W2")), g(MoeParamInitializer.expertParam(e, "b2")));
            }
            List<INDArray> sharedDx = new ArrayList<>();
            List<ExpertJob> all = s.chunks().jobs();
            for (int j = s.routedJobs().size(); j < all.size(); j++) {
                int si = j - s.routedJobs().size();
                INDArray o = Nd4j.create(dataType, n, d);
                sharedDx.add(o);
                all.get(j).gradients(eps, o, null, g(MoeParamInitializer.sharedParam(si, "W1")),
                        g(MoeParamInitializer.sharedParam(si, "b1")), g(MoeParamInitializer.sharedParam(si, "W2")),
                        g(MoeParamInitializer.sharedParam(si, "b2")));
            }
            executor().backward(s.chunks());
            int at = 0;
            for (int e = 0, q = 0; e < cfg.getExperts(); e++) {
                if (s.jobExpert()[e] >= 0) {
                    double[] dg = jobGates.get(q++);
                    System.arraycopy(dg, 0, dGateDispatch, at, dg.length);
                    at += dg.length;
                }
            }
            double[] dLogits = plan.backward(plan.toAssignmentOrder(dGateDispatch),
                    s.inputShape()[0]);
            INDArray dl = Nd4j.createFromArray(dLogits).castTo(dataType).reshape(n, cfg.getExperts());
            gradientViews.get(MoeParamInitializer.ROUTER_W).assign(s.x().transpose().mmul(dl));
            INDArray dTokens = dl.mmul(getParam(MoeParamInitializer.ROUTER_W).transpose());
            for (int j = 0; j < cfg.getTopK(); j++) {
                dTokens.addi(Nd4j.pullRows(dxd, 1, plan.slotPositions(j), 'c'));
            }
            for (INDArray o : sharedDx) {
                dTokens.addi(o);
            }
            s.chunks().release();
            dx = untokens(dTokens, s.inputShape());
        }
        step = null;
        Gradient gradient = new DefaultGradient(gradientsFlattened);
        for (String key : MoeParamInitializer.INSTANCE.paramKeys(cfg)) {
            gradient.setGradientFor(key, gradientViews.get(key));
        }
        this.gradient = gradient;
        INDArray ret = workspaceMgr.createUninitialized(ArrayType.ACTIVATION_GRAD, dataType, dx.shape(), 'c');
        ret.assign(dx);
        return new Pair<>(gradient, backpropDropOutIfPresent(ret));
    }

    @Override
    public double calcRegularizationScore(boolean backpropParamsOnly) {
        return super.calcRegularizationScore(backpropParamsOnly) + auxScore;
    }

    @Override
    public void clear() {
        super.clear();
        if (step != null) {
            step.chunks().release();
        }
        step = null;
    }

    /** Closes the scheduler this layer launched itself, if any. */
    @Override
    public synchronized void close() {
        closeOwned();
        executor = null;
    }

    private void closeOwned() {
        if (executor != null && ownsExecutor) {
            executor.close();
        }
    }

    private INDArray p(int e, String w) {
        return getParam(MoeParamInitializer.expertParam(e, w));
    }

    private INDArray sp(int s, String w) {
        return getParam(MoeParamInitializer.sharedParam(s, w));
    }

    private INDArray g(String key) {
        return gradientViews.get(key);
    }

    /** [N, d] rows, 'c' order: a [b, d] batch as it is, a [b, d, T] sequence as b·T time steps. */
    private static INDArray tokens(INDArray a) {
        if (a.rank() == 2) {
            return a.dup('c');
        }
        long b = a.size(0);
        long d = a.size(1);
        long t = a.size(2);
        return a.permute(0, 2, 1).dup('c').reshape('c', b * t, d);
    }

    private static INDArray untokens(INDArray rows, long[] shape) {
        if (shape.length == 2) {
            return rows;
        }
        return rows.reshape('c', shape[0], shape[2], shape[1]).permute(0, 2, 1);
    }

    private long[] outputShape(long[] inputShape) {
        long[] s = inputShape.clone();
        s[1] = layerConf().getNOut();
        return s;
    }
}
