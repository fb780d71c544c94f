package dev.poniard.moe;

import dev.poniard.scheduler.comm.Communicator;
import dev.poniard.scheduler.comm.ReduceOp;
import java.util.ArrayList;
import java.util.List;
import org.deeplearning4j.nn.multilayer.MultiLayerNetwork;
import org.deeplearning4j.nn.workspace.LayerWorkspaceMgr;
import org.nd4j.linalg.activations.Activation;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;
import org.nd4j.linalg.indexing.NDArrayIndex;
import org.nd4j.linalg.learning.config.Sgd;

/**
 * A short data-parallel training run with expert parallelism, as a trainer does it (the gradient view all-reduced
 * with SUM, then the model's updater with the global minibatch size, then params −= update), and the same run in
 * one process on the concatenated batches. Shared by the in-process and the multi-process tests.
 */
final class ExpertParallelTraining {
    static final int D = 6;
    static final int EXPERTS = 4;

    final int ranks;
    final int perRank;
    final MultiLayerNetwork start;
    final List<INDArray> xs = new ArrayList<>();
    final List<INDArray> ys = new ArrayList<>();

    /** Same seed, same model and data in every JVM. */
    ExpertParallelTraining(long seed, int ranks, int perRank, int steps) {
        this.ranks = ranks;
        this.perRank = perRank;
        Nd4j.getRandom().setSeed(seed);
        // Switch and z losses, a shared expert, and DeepSeek-V3 bias balancing (the ranks' γ/R steps from the
        // global load sum to the whole batch's step)
        MoeLayer.Builder moe = new MoeLayer.Builder().experts(EXPERTS).topK(2).expertHidden(5)
                .expertActivation(Activation.TANH).sharedExperts(1).dropless(true).auxLossWeight(0.01)
                .zLossWeight(0.001).biasBalancing(0.05).workers(1);
        start = MoeTestNets.mln(moe, D, 3, seed, new Sgd(0.2));
        INDArray wr = start.getLayer(0).getParam(MoeParamInitializer.ROUTER_W);
        wr.muli(2);
        wr.getRow(0).assign(0);
        wr.putScalar(0, 0, 1.0); // feature 0 is constant: expert 0 is favoured ...
        wr.putScalar(0, EXPERTS - 1, -50); // ... and the last expert never chosen
        for (int i = 0; i < steps; i++) {
            INDArray x = Nd4j.rand(DataType.DOUBLE, ranks * perRank, D).subi(0.5).muli(2);
            x.getColumn(0).assign(1);
            xs.add(x);
            ys.add(Nd4j.rand(DataType.DOUBLE, ranks * perRank, 3));
        }
    }

    MultiLayerNetwork replica() {
        MultiLayerNetwork net = new MultiLayerNetwork(start.getLayerWiseConfigurations().clone());
        net.init(start.params().dup(), true);
        return net;
    }

    /** One process, all ranks' batches concatenated. */
    MultiLayerNetwork trainReference() {
        MultiLayerNetwork net = replica();
        for (int i = 0; i < xs.size(); i++) {
            net.setInput(xs.get(i));
            net.setLabels(ys.get(i));
            net.computeGradientAndScore();
            net.getUpdater().update(net, net.gradient(), i, 0, ranks * perRank, LayerWorkspaceMgr.noWorkspaces());
            net.params().subi(net.getGradientsViewArray().reshape(net.params().shape()));
        }
        return net;
    }

    /** This rank's replica trained on its shard with expert parallelism; returns its parameters. */
    double[] trainOnRank(Communicator comm, ExpertParallel.Context ctx, List<String> log) {
        MultiLayerNetwork net = replica();
        MoeModels.useCommunicator(net, comm, ctx);
        try {
            int r = comm.rank();
            for (int i = 0; i < xs.size(); i++) {
                net.setInput(xs.get(i).get(NDArrayIndex.interval(r * perRank, (r + 1) * perRank)).dup());
                net.setLabels(ys.get(i).get(NDArrayIndex.interval(r * perRank, (r + 1) * perRank)).dup());
                net.computeGradientAndScore();
                INDArray view = net.getGradientsViewArray();
                double[] g = view.toDoubleVector();
                comm.allReduce(g, ReduceOp.SUM);
                view.assign(Nd4j.createFromArray(g).reshape(view.shape()));
                net.getUpdater().update(net, net.gradient(), i, 0, ranks * perRank, LayerWorkspaceMgr.noWorkspaces());
                net.params().subi(view.reshape(net.params().shape()));
                log.add("step " + i + ": " + MoeModels.metrics(net).get(0).expertParallel());
            }
            return net.params().toDoubleVector();
        } finally {
            MoeModels.useCommunicator(net, null);
        }
    }

    /** ‖a − b‖∞ / ‖b‖∞. */
    static double relativeDifference(double[] a, INDArray b) {
        INDArray aa = Nd4j.createFromArray(a).reshape(b.shape());
        return aa.sub(b).amaxNumber().doubleValue() / Math.max(b.amaxNumber().doubleValue(), 1e-12);
    }
}
