package dev.poniard.moe;

import dev.poniard.scheduler.Scheduler;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.SplittableRandom;
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
 * <p>Routers ({@link RouterType}): expert choice is the same pipeline with one slot per expert (a plan from
 * {@link RoutingPlan#expertChoice}); noisy top-k adds ε·softplus(x·W_noise) to the logits before routing in
 * training and chains the logit gradient into W_noise and dx; bias balancing passes the {@code Rb} biases to the
 * top-k choice and returns minus its ±γ step as Rb's "gradient" (see {@link #updaterDivideByMinibatch}); Soft MoE
 * ({@link SoftMoe}) replaces the dispatch by dense softmax mixing into expert slots, whose rows run as the same
 * ungated expert tasks.
 *
 * <p>The auxiliary losses of the last training forward are reported through {@link #calcRegularizationScore}, so
 * they are part of the model's score exactly as their gradients are part of the router's gradient.
 *
 * <p>Across ranks ({@link #useCommunicator}, top-k and noisy top-k): routing, gates, shared experts and the
 * router's backward stay local; an {@link ExpertExchange} sends each exchanged expert's rows to its owner, which
 * runs them ungated for every rank as one job, and returns the outputs; the gate is applied (and its gradient
 * Σ y·ε formed) on the token's own rank, so the router sees exactly what it sees in one process. Shadowed experts
 * run locally as in one process. The Switch loss uses the global load (all ranks' routed assignments) and bias
 * balancing the global load with γ / R per rank, so the SUM of the ranks' gradients is the whole batch's.
 */
public class MoeLayerImpl extends BaseLayer<MoeLayer> implements AutoCloseable {
    private static final Logger LOG = LoggerFactory.getLogger(MoeLayerImpl.class);

    private ExpertExecutor executor;
    private boolean ownsExecutor;
    private Step step;
    private double auxScore;
    private volatile MoeMetrics metrics;
    /** Expert parallelism across ranks, attached at runtime (never part of the configuration); null: one process. */
    private volatile ExpertParallel parallel;

    /** What the backward pass needs from the forward. */
    private record Step(RoutingPlan plan, INDArray x, ExpertExecutor.Plan chunks, long[] inputShape,
                        List<ExpertJob> routedJobs, int[] jobExpert, double[] noiseSlope, SoftMoe soft,
                        ParallelStep par) {
    }

    /** The expert-parallel part of a step: the exchange, this rank's ungated expert outputs and gates (dispatch order). */
    private record ParallelStep(ExpertExchange ex, INDArray yLocal, INDArray gates) {
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

    /**
     * Runs this layer's experts across the ranks of {@code comm} from now on (expert parallelism, see
     * {@link ExpertParallel}); null returns to single-process. Every rank must then run every forward and backward
     * pass of the model collectively, in the same order. This binds {@code comm} to this layer alone: for a model
     * with several MoE layers use {@link MoeModels#useCommunicator}, which binds them all to one replica.
     *
     * @throws IllegalStateException for routers other than TOP_K and NOISY_TOP_K, or when {@code comm} already
     *     serves another model replica
     */
    public synchronized void useCommunicator(dev.poniard.scheduler.comm.Communicator comm, ExpertParallel.Context ctx) {
        useCommunicator(comm, ctx, this);
    }

    synchronized void useCommunicator(dev.poniard.scheduler.comm.Communicator comm, ExpertParallel.Context ctx,
                                      Object replica) {
        if (comm != null) {
            checkParallelRouter();
        }
        ExpertParallel next = comm == null ? null : ExpertParallel.attach(comm, ctx, replica);
        if (parallel != null) {
            parallel.detach();
        }
        parallel = next;
        if (next != null) {
            LOG.info("MoE layer {} runs its experts across ranks: {}", getIndex(), next);
        }
    }

    /** The expert parallelism attached with {@link #useCommunicator}, or null. */
    public synchronized ExpertParallel expertParallel() {
        return parallel;
    }

    void checkParallelRouter() {
        RouterType r = layerConf().getRouter();
        if (r != RouterType.TOP_K && r != RouterType.NOISY_TOP_K) {
            throw new IllegalStateException("MoeLayer " + layerId() + ": expert parallelism across ranks supports the "
                    + "TOP_K and NOISY_TOP_K routers, not " + r + "; use one of those, or run this layer in one "
                    + "process (no communicator) with data-parallel training");
        }
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

    /**
     * Adds the pass's routing metrics as a counter track ("moe layer i") to the trace of the scheduler running this
     * layer: its expert executor's, or the one whose task is calling (a trainer's), when that records a trace.
     */
    private void traceMetrics(MoeMetrics m) {
        Scheduler s = executor != null && executor.scheduler() != null ? executor.scheduler() : Scheduler.current();
        if (s == null) {
            return;
        }
        Map<String, Double> values = new LinkedHashMap<>();
        values.put("max_over_mean", m.maxOverMean());
        values.put("cv", m.coefficientOfVariation());
        values.put("drop_rate", m.dropRate());
        values.put("dead_experts", (double) m.deadExperts());
        int[] kept = m.keptPerExpert();
        for (int e = 0; e < kept.length; e++) {
            values.put("tokens_e" + e, (double) kept[e]);
        }
        s.traceCounter("moe layer " + getIndex(), values);
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
            double[] noiseSlope = null;
            if (cfg.getRouter() == RouterType.NOISY_TOP_K && training) {
                noiseSlope = addNoise(x, logits, n, experts);
            }
            RoutingPlan plan = null;
            SoftMoe soft = null;
            INDArray gatedOut = null;
            List<ExpertJob> jobs = new ArrayList<>();
            List<ExpertJob> routed = new ArrayList<>();
            int[] jobExpert = new int[experts];
            Arrays.fill(jobExpert, -1);
            if (cfg.getRouter() == RouterType.SOFT_MOE) {
                // a sequence is one group of T tokens; a feed-forward row is a group of its own
                soft = new SoftMoe(logits, n, shape.length == 3 ? (int) shape[2] : 1, experts, cfg.getSlotsPerExpert(),
                        dataType);
                INDArray xs = soft.slotInputs(x);
                gatedOut = Nd4j.create(dataType, xs.rows(), d);
                int r = soft.rowsPerExpert();
                for (int e = 0; e < experts; e++) {
                    ExpertJob job = new ExpertJob("e" + e, p(e, "W1"), p(e, "b1"), p(e, "W2"), p(e, "b2"),
                            cfg.getExpertActivation(), ExpertKernels.rows(xs, e * r, (e + 1) * r), null,
                            ExpertKernels.rows(gatedOut, e * r, (e + 1) * r));
                    jobExpert[e] = routed.size();
                    routed.add(job);
                    jobs.add(job);
                }
            } else if (cfg.getRouter() == RouterType.EXPERT_CHOICE) {
                plan = RoutingPlan.expertChoice(logits, n, experts, cfg.capacity(n), cfg.getRouterZLossWeight());
            } else {
                double[] bias = cfg.hasSelectionBias()
                        ? getParam(MoeParamInitializer.SELECTION_BIAS).castTo(DataType.DOUBLE).dup('c').data().asDouble()
                        : null;
                plan = RoutingPlan.route(logits, n, experts, cfg.getTopK(), cfg.capacity(n), cfg.getDropPolicy(),
                        cfg.isRenormalizeGates(), cfg.getAuxLossWeight(), cfg.getRouterZLossWeight(), bias);
            }
            ExpertParallel par = parallel;
            ExpertExchange ex = null;
            if (par != null) {
                checkParallelRouter();
                ex = ExpertExchange.open(par, getIndex(), plan, shape[0], d, dataType, cfg.getRouter().ordinal());
                if (cfg.getAuxLossWeight() > 0) {
                    plan.useGlobalLoad(ex.globalRouted, ex.globalTokens);
                }
            }
            int total = plan == null ? 0 : plan.dispatched();
            if (plan != null) {
                gatedOut = Nd4j.zeros(dataType, total + 1, d);
            }
            INDArray parGates = null;
            INDArray yOwn = null;
            if (ex != null) {
                // exchanged experts: this rank's rows go to their owners, which run them ungated for every rank;
                // shadowed experts run here on this rank's rows exactly as in one process
                INDArray xd = total > 0 ? Nd4j.pullRows(x, 1, plan.dispatchTokens(), 'c') : null;
                parGates = total > 0 ? Nd4j.createFromArray(plan.dispatchGates()).castTo(dataType).reshape(total, 1) : null;
                INDArray xOwn = ex.toOwners(xd, ExpertExchange.Phase.TOKENS);
                yOwn = xOwn == null ? null : Nd4j.zeros(dataType, ex.ownRows, d);
                for (int e = 0; e < experts; e++) {
                    ExpertJob job = null;
                    if (ex.shadowed[e] && plan.offsets[e + 1] > plan.offsets[e]) {
                        int from = plan.offsets[e];
                        int to = plan.offsets[e + 1];
                        job = new ExpertJob("e" + e, p(e, "W1"), p(e, "b1"), p(e, "W2"), p(e, "b2"),
                                cfg.getExpertActivation(), ExpertKernels.rows(xd, from, to),
                                ExpertKernels.rows(parGates, from, to), ExpertKernels.rows(gatedOut, from, to));
                    } else if (ex.ownsRows(e)) {
                        int from = ex.ownStart(e);
                        int to = from + ex.ownCount(e);
                        job = new ExpertJob("e" + e, p(e, "W1"), p(e, "b1"), p(e, "W2"), p(e, "b2"),
                                cfg.getExpertActivation(), ExpertKernels.rows(xOwn, from, to), null,
                                ExpertKernels.rows(yOwn, from, to));
                    }
                    if (job != null) {
                        jobExpert[e] = routed.size();
                        routed.add(job);
                        jobs.add(job);
                    }
                }
            } else if (total > 0) {
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
            INDArray yLocal = null;
            if (ex != null) {
                yLocal = total > 0 ? Nd4j.zeros(dataType, total, d) : null;
                ex.fromOwners(yOwn, ExpertExchange.Phase.OUTPUTS, yLocal);
                for (int e = 0; e < experts; e++) {
                    int from = plan.offsets[e];
                    int to = plan.offsets[e + 1];
                    if (!ex.shadowed[e] && to > from) {
                        ExpertKernels.rows(gatedOut, from, to).assign(
                                ExpertKernels.rows(yLocal, from, to).mulColumnVector(ExpertKernels.rows(parGates, from, to)));
                    }
                }
            }
            INDArray y = soft != null ? soft.combine(gatedOut) : Nd4j.zeros(dataType, n, d);
            for (INDArray o : sharedOut) {
                y.addi(o);
            }
            for (int j = 0; plan != null && j < plan.k(); j++) {
                y.addi(Nd4j.pullRows(gatedOut, 1, plan.slotPositions(j), 'c'));
            }
            MoeMetrics m = plan != null ? MoeMetrics.of(plan) : MoeMetrics.evenly(experts, soft.rowsPerExpert());
            if (ex != null) {
                ExpertParallelStats st = ex.stats();
                m = m.withExpertParallel(st);
                boolean[] was = par.swapShadowed(ex.shadowed);
                if (!Arrays.equals(was, ex.shadowed) && (was != null || st.shadowedExperts().length > 0)) {
                    LOG.info("MoE layer {} rank {}: shadowing experts {} from the global load {} (> {} x mean)",
                            getIndex(), st.rank(), Arrays.toString(st.shadowedExperts()),
                            Arrays.toString(st.globalTokensPerExpert()), par.context().shadowFactor());
                }
            }
            metrics = m;
            traceMetrics(m);
            if (LOG.isDebugEnabled()) {
                LOG.debug("MoE layer {} ({} tasks): {}", getIndex(), chunks.chunks().size(), m);
            }
            if (training) {
                step = new Step(plan, x, chunks, shape, routed, jobExpert, noiseSlope, soft,
                        ex == null ? null : new ParallelStep(ex, yLocal, parGates));
                auxScore = plan != null ? plan.auxLoss() + plan.zLoss() : 0;
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
        INDArray dx;
        try (MemoryWorkspace ignored = Nd4j.getWorkspaceManager().scopeOutOfWorkspaces()) {
            INDArray eps = tokens(epsilon.castTo(dataType));
            INDArray dTokens = s.soft() != null ? softBackward(s, eps) : routedBackward(s, eps);
            s.chunks().release();
            dx = untokens(dTokens, s.inputShape());
        }
        step = null;
        Gradient gradient = new DefaultGradient(gradientsFlattened);
        for (String key : MoeParamInitializer.INSTANCE.paramKeys(layerConf())) {
            gradient.setGradientFor(key, gradientViews.get(key));
        }
        this.gradient = gradient;
        INDArray ret = workspaceMgr.createUninitialized(ArrayType.ACTIVATION_GRAD, dataType, dx.shape(), 'c');
        ret.assign(dx);
        return new Pair<>(gradient, backpropDropOutIfPresent(ret));
    }

    /**
     * Backward of the routed (top-k, noisy top-k, expert-choice) layer: expert backward tasks writing input-gradient
     * rows and gate gradients, then the router's logit gradient through the gates and the auxiliary losses.
     */
    private INDArray routedBackward(Step s, INDArray eps) {
        if (s.par() != null) {
            return routedBackwardParallel(s, eps);
        }
        MoeLayer cfg = layerConf();
        long d = cfg.getNIn();
        RoutingPlan plan = s.plan();
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
        List<INDArray> sharedDx = sharedGradients(s, eps);
        executor().backward(s.chunks());
        int at = 0;
        for (int e = 0, q = 0; e < cfg.getExperts(); e++) {
            if (s.jobExpert()[e] >= 0) {
                double[] dg = jobGates.get(q++);
                System.arraycopy(dg, 0, dGateDispatch, at, dg.length);
                at += dg.length;
            }
        }
        return routerBackward(s, n, dGateDispatch, dxd, sharedDx);
    }

    /**
     * The expert-parallel backward: the gate gradients and gated output gradients of exchanged experts are formed
     * here from the outputs the owners returned, the output gradients go to the owners, which run the experts'
     * backward for every rank's rows, and the input gradients come back; shadowed experts run here as in one
     * process. Then the router's backward, exactly as in one process.
     */
    private INDArray routedBackwardParallel(Step s, INDArray eps) {
        MoeLayer cfg = layerConf();
        long d = cfg.getNIn();
        RoutingPlan plan = s.plan();
        ExpertExchange ex = s.par().ex();
        int n = (int) eps.rows();
        int total = plan.dispatched();
        int experts = cfg.getExperts();
        INDArray dxd = Nd4j.zeros(dataType, total + 1, d);
        double[] dGateDispatch = new double[total];
        INDArray epsD = total > 0 ? Nd4j.pullRows(eps, 1, plan.dispatchTokens(), 'c') : null;
        INDArray dyLocal = total > 0 ? Nd4j.zeros(dataType, total, d) : null;
        for (int e = 0; e < experts; e++) {
            int from = plan.offsets[e];
            int to = plan.offsets[e + 1];
            if (ex.shadowed[e] || to == from) {
                continue;
            }
            // as the expert kernel does for a gated job: dGate = Σ_d y·eps, dy = gate·eps
            INDArray epsRows = ExpertKernels.rows(epsD, from, to);
            INDArray dg = ExpertKernels.rows(s.par().yLocal(), from, to).mul(epsRows).sum(1);
            for (int i = 0; i < to - from; i++) {
                dGateDispatch[from + i] = dg.getDouble(i);
            }
            ExpertKernels.rows(dyLocal, from, to).assign(
                    epsRows.mulColumnVector(ExpertKernels.rows(s.par().gates(), from, to)));
        }
        INDArray dyOwn = ex.toOwners(dyLocal, ExpertExchange.Phase.OUTPUT_GRADIENTS);
        INDArray dxOwn = dyOwn == null ? null : Nd4j.zeros(dataType, ex.ownRows, d);
        double[][] shadowGates = new double[experts][];
        for (int e = 0; e < experts; e++) {
            int ji = s.jobExpert()[e];
            if (ji < 0) {
                // not computed here: the owner (or, when shadowed, each rank) contributes this expert's gradient
                for (String w : new String[] {"W1", "b1", "W2", "b2"}) {
                    gradientViews.get(MoeParamInitializer.expertParam(e, w)).assign(0);
                }
                continue;
            }
            INDArray epsRows;
            INDArray dxRows;
            if (ex.shadowed[e]) {
                shadowGates[e] = new double[plan.offsets[e + 1] - plan.offsets[e]];
                epsRows = ExpertKernels.rows(epsD, plan.offsets[e], plan.offsets[e + 1]);
                dxRows = ExpertKernels.rows(dxd, plan.offsets[e], plan.offsets[e + 1]);
            } else {
                epsRows = ExpertKernels.rows(dyOwn, ex.ownStart(e), ex.ownStart(e) + ex.ownCount(e));
                dxRows = ExpertKernels.rows(dxOwn, ex.ownStart(e), ex.ownStart(e) + ex.ownCount(e));
            }
            s.routedJobs().get(ji).gradients(epsRows, dxRows, shadowGates[e],
                    g(MoeParamInitializer.expertParam(e, "W1")), g(MoeParamInitializer.expertParam(e, "b1")),
                    g(MoeParamInitializer.expertParam(e, "W2")), g(MoeParamInitializer.expertParam(e, "b2")));
        }
        List<INDArray> sharedDx = sharedGradients(s, eps);
        executor().backward(s.chunks());
        for (int e = 0; e < experts; e++) {
            if (shadowGates[e] != null) {
                System.arraycopy(shadowGates[e], 0, dGateDispatch, plan.offsets[e], shadowGates[e].length);
            }
        }
        ex.fromOwners(dxOwn, ExpertExchange.Phase.INPUT_GRADIENTS, dxd);
        return routerBackward(s, n, dGateDispatch, dxd, sharedDx);
    }

    /**
     * The router's share of the backward, given the gate gradients in dispatch order and the experts' input
     * gradients ({@code dxd}, dispatch order plus a zero row): logit gradient, dW_r, noise and bias terms, dx.
     */
    private INDArray routerBackward(Step s, int n, double[] dGateDispatch, INDArray dxd, List<INDArray> sharedDx) {
        MoeLayer cfg = layerConf();
        RoutingPlan plan = s.plan();
        double[] dLogits = plan.backward(plan.toAssignmentOrder(dGateDispatch),
                s.inputShape()[0]);
        INDArray dl = Nd4j.createFromArray(dLogits).castTo(dataType).reshape(n, cfg.getExperts());
        gradientViews.get(MoeParamInitializer.ROUTER_W).assign(s.x().transpose().mmul(dl));
        INDArray dTokens = dl.mmul(getParam(MoeParamInitializer.ROUTER_W).transpose());
        if (s.noiseSlope() != null) {
            // logits += ε·softplus(x·Wn): d/d(x·Wn) = dLogits · ε · sigmoid(x·Wn)
            double[] dn = new double[dLogits.length];
            for (int i = 0; i < dn.length; i++) {
                dn[i] = dLogits[i] * s.noiseSlope()[i];
            }
            INDArray dnA = Nd4j.createFromArray(dn).castTo(dataType).reshape(n, cfg.getExperts());
            gradientViews.get(MoeParamInitializer.NOISE_W).assign(s.x().transpose().mmul(dnA));
            dTokens.addi(dnA.mmul(getParam(MoeParamInitializer.NOISE_W).transpose()));
        }
        if (cfg.hasSelectionBias()) {
            INDArray step = s.par() == null ? negatedBiasStep(plan, cfg.getBiasUpdateRate())
                    : negatedBiasStep(s.par().ex().globalRouted, cfg.getBiasUpdateRate() / s.par().ex().ranks());
            gradientViews.get(MoeParamInitializer.SELECTION_BIAS).assign(step);
        }
        for (int j = 0; j < plan.k(); j++) {
            dTokens.addi(Nd4j.pullRows(dxd, 1, plan.slotPositions(j), 'c'));
        }
        for (INDArray o : sharedDx) {
            dTokens.addi(o);
        }
        return dTokens;
    }

    /** Soft MoE's backward: the experts' and shared experts' backward tasks, then both softmaxes of the mixing. */
    private INDArray softBackward(Step s, INDArray eps) {
        MoeLayer cfg = layerConf();
        long d = cfg.getNIn();
        int n = eps.rows();
        SoftMoe soft = s.soft();
        SoftMoe.Backward mix = soft.slotGradients(eps);
        INDArray dSlots = Nd4j.create(dataType, mix.slotGradients().rows(), d);
        int r = soft.rowsPerExpert();
        for (int e = 0; e < cfg.getExperts(); e++) {
            s.routedJobs().get(s.jobExpert()[e]).gradients(ExpertKernels.rows(mix.slotGradients(), e * r, (e + 1) * r),
                    ExpertKernels.rows(dSlots, e * r, (e + 1) * r), null,
                    g(MoeParamInitializer.expertParam(e, "W1")), g(MoeParamInitializer.expertParam(e, "b1")),
                    g(MoeParamInitializer.expertParam(e, "W2")), g(MoeParamInitializer.expertParam(e, "b2")));
        }
        List<INDArray> sharedDx = sharedGradients(s, eps);
        executor().backward(s.chunks());
        INDArray dTokens = Nd4j.zeros(dataType, n, d);
        double[] dLogits = soft.logitGradient(s.x(), dSlots, mix.dCombine(), dTokens);
        INDArray dl = Nd4j.createFromArray(dLogits).castTo(dataType).reshape(n, soft.width);
        gradientViews.get(MoeParamInitializer.ROUTER_W).assign(s.x().transpose().mmul(dl));
        dTokens.addi(dl.mmul(getParam(MoeParamInitializer.ROUTER_W).transpose()));
        for (INDArray o : sharedDx) {
            dTokens.addi(o);
        }
        return dTokens;
    }

    /** Sets up the shared experts' backward tasks; returns the arrays their input gradients will be written to. */
    private List<INDArray> sharedGradients(Step s, INDArray eps) {
        List<INDArray> sharedDx = new ArrayList<>();
        List<ExpertJob> all = s.chunks().jobs();
        for (int j = s.routedJobs().size(); j < all.size(); j++) {
            int si = j - s.routedJobs().size();
            INDArray o = Nd4j.create(dataType, eps.rows(), layerConf().getNIn());
            sharedDx.add(o);
            all.get(j).gradients(eps, o, null, g(MoeParamInitializer.sharedParam(si, "W1")),
                    g(MoeParamInitializer.sharedParam(si, "b1")), g(MoeParamInitializer.sharedParam(si, "W2")),
                    g(MoeParamInitializer.sharedParam(si, "b2")));
        }
        return sharedDx;
    }

    /**
     * The selection biases' step is delivered as their "gradient": the updater leaves it as it is (NoOp, not divided
     * by the minibatch size) and the optimiser subtracts it, so it is applied exactly when a training step applies
     * the other gradients, and never by a forward or a gradient computation alone.
     */
    @Override
    public boolean updaterDivideByMinibatch(String paramName) {
        return !MoeParamInitializer.SELECTION_BIAS.equals(paramName);
    }

    /** −γ·sign(mean load − load_e) per expert (DeepSeek-V3), as a [1, E] row; minus because the step subtracts it. */
    private INDArray negatedBiasStep(RoutingPlan plan, double gamma) {
        long[] load = new long[plan.experts()];
        for (int e = 0; e < load.length; e++) {
            load[e] = plan.routedTokens(e);
        }
        return negatedBiasStep(load, gamma);
    }

    /**
     * The same from a given load. Across ranks: the global load, with γ / R per rank, since the gradient all-reduce
     * sums the ranks' identical steps.
     */
    private INDArray negatedBiasStep(long[] load, double gamma) {
        int experts = load.length;
        double mean = 0;
        for (int e = 0; e < experts; e++) {
            mean += load[e];
        }
        mean /= experts;
        double[] step = new double[experts];
        for (int e = 0; e < experts; e++) {
            step[e] = -gamma * Math.signum(mean - load[e]);
        }
        return Nd4j.createFromArray(step).castTo(dataType).reshape(1, experts);
    }

    /**
     * Adds noisy top-k's ε·softplus(x·Wn) to the logits in place and returns ε·sigmoid(x·Wn), the noise term's
     * derivative. ε comes from a generator keyed by the network seed, this layer's index and the iteration and epoch
     * counters: each training step draws fresh noise, while repeated forwards within one step (a gradient check)
     * see the same draw.
     */
    private double[] addNoise(INDArray x, double[] logits, int n, int experts) {
        double[] pre = x.mmul(getParam(MoeParamInitializer.NOISE_W)).castTo(DataType.DOUBLE).dup('c').data().asDouble();
        SplittableRandom rng = new SplittableRandom(conf.getSeed() ^ 0x9E3779B97F4A7C15L * (getIndex() + 1)
                ^ 0xC2B2AE3D27D4EB4FL * (getIterationCount() + 1L) ^ 0x165667B19E3779F9L * (getEpochCount() + 1L));
        double[] slope = new double[n * experts];
        for (int i = 0; i < slope.length; i++) {
            double eps = rng.nextGaussian();
            double z = pre[i];
            double softplus = Math.max(z, 0) + Math.log1p(Math.exp(-Math.abs(z)));
            logits[i] += eps * softplus;
            slope[i] = eps / (1 + Math.exp(-z));
        }
        return slope;
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
