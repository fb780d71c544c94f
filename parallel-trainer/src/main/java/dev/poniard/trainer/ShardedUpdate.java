package dev.poniard.trainer;

import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import org.deeplearning4j.nn.api.TrainingConfig;
import org.deeplearning4j.nn.api.Updater;
import org.deeplearning4j.nn.conf.GradientNormalization;
import org.deeplearning4j.nn.updater.BaseMultiLayerUpdater;
import org.deeplearning4j.nn.updater.UpdaterBlock;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.learning.GradientUpdater;
import org.nd4j.linalg.learning.config.AMSGrad;
import org.nd4j.linalg.learning.config.AdaDelta;
import org.nd4j.linalg.learning.config.AdaGrad;
import org.nd4j.linalg.learning.config.AdaMax;
import org.nd4j.linalg.learning.config.Adam;
import org.nd4j.linalg.learning.config.IUpdater;
import org.nd4j.linalg.learning.config.Nadam;
import org.nd4j.linalg.learning.config.Nesterovs;
import org.nd4j.linalg.learning.config.NoOp;
import org.nd4j.linalg.learning.config.RmsProp;
import org.nd4j.linalg.learning.config.Sgd;
import org.nd4j.linalg.learning.regularization.L1Regularization;
import org.nd4j.linalg.learning.regularization.L2Regularization;
import org.nd4j.linalg.learning.regularization.Regularization;
import org.nd4j.linalg.learning.regularization.WeightDecay;

/**
 * The parameter update of a DL4J model (what {@code model.fit} does after the gradient) cut into disjoint element
 * ranges, one per worker, that run at the same time and together give bit for bit the model's own serial update.
 *
 * <p><b>Implementation overview.</b> DL4J's {@code BaseMultiLayerUpdater.update} turns the flat gradient {@code g}
 * into the update in place: (1) {@code g /= minibatch} on the parameters that divide by it (all but statistics
 * such as batch normalisation's mean), (2) per-layer gradient normalisation, (3) per updater block (contiguous
 * parameters sharing one updater configuration) regularisation before the updater (L1, L2), the block's
 * {@link GradientUpdater} (Adam, Nesterov...), regularisation after it (weight decay); the trainer then does
 * {@code params -= g}. Steps 1 and 3 and the subtraction are element-wise for ND4J's built-in updaters and
 * regularisations: element {@code i} of the result depends only on element {@code i} of the gradient, the
 * parameters and each updater state array. So shard {@code [a, b)} runs them on its own elements, through
 * GradientUpdaters instantiated ({@link IUpdater#instantiate(Map, boolean)}) over the {@code [a, b)} slices of the
 * block's state arrays, which are views of the model's updater state: the state stays where checkpoints and
 * {@code model.fit} find it. Each shard then copies its new parameters into the other replicas, which saves every
 * replica a full copy at the start of its next gradient task.
 *
 * <p>Why: ND4J 1.0.0-M2.1's Adam op runs ~7 ns per element on one thread (1.5–2.4 ms for the 203,530 parameters of
 * the MNIST MLP, about a third of a 2-worker step), while the other workers waited. Models this cannot reproduce
 * exactly keep the serial update: gradient normalisation (norms over whole layers), layer constraints, and
 * updaters or regularisations other than ND4J's built-in ones ({@link #of} returns null).
 */
final class ShardedUpdate {
    private static final Set<Class<?>> ELEMENT_WISE_UPDATERS = Set.of(Adam.class, AdaDelta.class,
            AdaGrad.class, AdaMax.class, AMSGrad.class, Nadam.class, Nesterovs.class, NoOp.class, RmsProp.class, Sgd.class);
    private static final Set<Class<?>> ELEMENT_WISE_REGULARIZATIONS = Set.of(L1Regularization.class,
            L2Regularization.class, WeightDecay.class);

    /** One parameter variable's part of a shard, with the regularisations configured for it. */
    private record VarPiece(INDArray grad, INDArray params, List<Regularization> regularizations) {
    }

    /** One updater block's part of a shard: the block's updater over this part's slices of its state. */
    private record BlockPiece(INDArray grad, GradientUpdater<?> updater, List<VarPiece> vars) {
    }

    /** What one shard does: divide, run its block pieces, subtract, copy to the other replicas. */
    private record Shard(List<INDArray> divide, List<BlockPiece> blocks, INDArray grad, INDArray params,
                         List<INDArray> replicaParams) {
    }

    private final Updater updater;
    private final INDArray stateView;
    private final INDArray params;
    private final INDArray gradient;
    private final boolean miniBatch;
    private final Shard[] shards;

    private ShardedUpdate(Updater updater, INDArray stateView, INDArray params, INDArray gradient, boolean miniBatch,
                          Shard[] shards) {
        this.updater = updater;
        this.stateView = stateView;
        this.params = params;
        this.gradient = gradient;
        this.miniBatch = miniBatch;
        this.shards = shards;
    }

    /**
     * The update of {@code replicas.get(0)}'s model in {@code count} shards that also copy the new parameters into
     * the other replicas, or null when the model's update is not element-wise (see the class comment) and must run
     * serially.
     */
    static ShardedUpdate of(List<ModelReplica> replicas, int count) {
        ModelReplica primary = replicas.get(0);
        if (count < 1 || primary.hasConstraints() || !(primary.updater() instanceof BaseMultiLayerUpdater<?> updater)) {
            return null;
        }
        INDArray params = primary.params();
        INDArray gradient = primary.gradientView();
        long n = params.length();
        if (!flat(params) || !flat(gradient) || gradient.length() != n) {
            return null;
        }
        List<UpdaterBlock> blocks = updater.getUpdaterBlocks();
        // Blocks and their variables must tile [0, n) in order, as DL4J's minibatch division assumes.
        long next = 0;
        for (UpdaterBlock b : blocks) {
            if (b.getParamOffsetStart() != next) {
                return null;
            }
            for (UpdaterBlock.ParamState ps : b.getLayersAndVariablesInBlock()) {
                if (ps.getParamOffsetStart() != next || !elementWise(ps)) {
                    return null;
                }
                next = ps.getParamOffsetEnd();
            }
            if (b.getParamOffsetEnd() != next) {
                return null;
            }
            GradientUpdater<?> gu = b.getGradientUpdater();
            if (gu == null || !ELEMENT_WISE_UPDATERS.contains(gu.getConfig().getClass())) {
                return null;
            }
        }
        if (next != n) {
            return null;
        }
        Shard[] shards = new Shard[count];
        for (int s = 0; s < count; s++) {
            long a = n * s / count, z = n * (s + 1) / count;
            List<INDArray> divide = new ArrayList<>();
            List<BlockPiece> pieces = new ArrayList<>();
            long divFrom = -1;
            for (UpdaterBlock b : blocks) {
                long ba = Math.max(a, b.getParamOffsetStart()), bz = Math.min(z, b.getParamOffsetEnd());
                if (ba >= bz) {
                    continue;
                }
                List<VarPiece> vars = new ArrayList<>();
                for (UpdaterBlock.ParamState ps : b.getLayersAndVariablesInBlock()) {
                    long va = Math.max(ba, ps.getParamOffsetStart()), vz = Math.min(bz, ps.getParamOffsetEnd());
                    if (va >= vz) {
                        continue;
                    }
                    // Contiguous runs of divided variables become one op each, as in DL4J.
                    boolean divides = ps.getLayer().updaterDivideByMinibatch(ps.getParamName());
                    if (divides && divFrom < 0) {
                        divFrom = va;
                    } else if (!divides && divFrom >= 0) {
                        divide.add(BucketedReduction.range(gradient, divFrom, va));
                        divFrom = -1;
                    }
                    List<Regularization> regs = ps.getLayer().getConfig().getRegularizationByParam(ps.getParamName());
                    if (regs != null && !regs.isEmpty()) {
                        // Regularisations only read the parameters: a rank-1 parameter slice may be reshaped like
                        // the gradient's [1, k] slice.
                        INDArray g = BucketedReduction.range(gradient, va, vz);
                        vars.add(new VarPiece(g, BucketedReduction.range(params, va, vz).reshape(g.shape()),
                                List.copyOf(regs)));
                    }
                }
                if (b.skipDueToPretrainConfig(false) || b.getLayersAndVariablesInBlock().get(0).getLayer().numParams() == 0) {
                    continue; // DL4J skips these blocks in supervised training: divided, not updated
                }
                GradientUpdater<?> slice = sliceOf(b, ba - b.getParamOffsetStart(), bz - b.getParamOffsetStart());
                if (slice == null) {
                    return null;
                }
                pieces.add(new BlockPiece(BucketedReduction.range(gradient, ba, bz), slice, List.copyOf(vars)));
            }
            if (divFrom >= 0) {
                divide.add(BucketedReduction.range(gradient, divFrom, z));
            }
            List<INDArray> copies = new ArrayList<>();
            for (int r = 1; r < replicas.size(); r++) {
                INDArray p = replicas.get(r).params();
                if (!flat(p) || p.length() != n) {
                    return null;
                }
                copies.add(BucketedReduction.range(p, a, z));
            }
            shards[s] = new Shard(List.copyOf(divide), List.copyOf(pieces), BucketedReduction.range(gradient, a, z),
                    BucketedReduction.range(params, a, z), List.copyOf(copies));
        }
        return new ShardedUpdate(updater, updater.getStateViewArray(), primary.params(), primary.gradientView(),
                primary.miniBatch(), shards);
    }

    /** Whether a variable's preprocessing is element-wise: no gradient normalisation, built-in regularisations only. */
    private static boolean elementWise(UpdaterBlock.ParamState ps) {
        TrainingConfig conf = ps.getLayer().getConfig();
        if (conf == null) {
            return false;
        }
        GradientNormalization gn = conf.getGradientNormalization();
        if (gn != null && gn != GradientNormalization.None) {
            return false;
        }
        List<Regularization> regs = conf.getRegularizationByParam(ps.getParamName());
        if (regs != null) {
            for (Regularization r : regs) {
                if (!ELEMENT_WISE_REGULARIZATIONS.contains(r.getClass())) {
                    return false;
                }
            }
        }
        return true;
    }

    /** The block's updater over elements [from, to) of each of its state arrays, or null if they are not per element. */
    private static GradientUpdater<?> sliceOf(UpdaterBlock b, long from, long to) {
        GradientUpdater<?> whole = b.getGradientUpdater();
        long length = b.getParamOffsetEnd() - b.getParamOffsetStart();
        Map<String, INDArray> state = whole.getState();
        Map<String, INDArray> slices = new HashMap<>();
        if (state != null) {
            for (Map.Entry<String, INDArray> e : state.entrySet()) {
                INDArray s = e.getValue();
                if (s == null || s.length() != length || !flat(s)) {
                    return null;
                }
                slices.put(e.getKey(), BucketedReduction.range(s, from, to));
            }
        }
        return whole.getConfig().instantiate(slices, false);
    }

    /** Whether {@code a} is a flat vector as DL4J holds them: rank 1 or a [1, n] row. */
    private static boolean flat(INDArray a) {
        return a != null && (a.rank() == 1 || (a.rank() == 2 && a.size(0) == 1));
    }

    /** Number of shards. */
    int shards() {
        return shards.length;
    }

    /**
     * Whether the shards still refer to {@code primary}'s arrays: false after the model's updater, parameters or
     * gradient view were replaced, when the shards must be cut again.
     */
    boolean appliesTo(ModelReplica primary) {
        Updater u = primary.updater();
        return u == updater && ((BaseMultiLayerUpdater<?>) u).getStateViewArray() == stateView
                && sameMemory(primary.params(), params) && sameMemory(primary.gradientView(), gradient);
    }

    /** A ComputationGraph hands out a new reshaped view of its parameters on every call: compare the memory. */
    private static boolean sameMemory(INDArray a, INDArray b) {
        return a == b || (a.data().address() == b.data().address() && a.offset() == b.offset() && a.length() == b.length());
    }

    /**
     * Applies shard {@code shard} of the update of the summed gradient of {@code batchSize} examples, and copies
     * its new parameters into the other replicas. Shards touch disjoint elements and may run concurrently.
     */
    void apply(int shard, int iteration, int epoch, int batchSize) {
        Shard s = shards[shard];
        if (miniBatch) {
            for (INDArray g : s.divide()) {
                g.divi(batchSize);
            }
        }
        for (BlockPiece b : s.blocks()) {
            IUpdater conf = b.updater().getConfig();
            double lr = conf.hasLearningRate() ? conf.getLearningRate(iteration, epoch) : 1.0;
            regularize(b, Regularization.ApplyStep.BEFORE_UPDATER, lr, iteration, epoch);
            b.updater().applyUpdater(b.grad(), iteration, epoch);
            regularize(b, Regularization.ApplyStep.POST_UPDATER, lr, iteration, epoch);
        }
        s.params().subi(s.grad().reshape(s.params().shape())); // both flat; only the rank may differ
        for (INDArray copy : s.replicaParams()) {
            copy.assign(s.params());
        }
    }

    private static void regularize(BlockPiece b, Regularization.ApplyStep step, double lr, int iteration, int epoch) {
        for (VarPiece v : b.vars()) {
            for (Regularization r : v.regularizations()) {
                if (r.applyStep() == step) {
                    r.apply(v.params(), v.grad(), lr, iteration, epoch);
                }
            }
        }
    }
}
