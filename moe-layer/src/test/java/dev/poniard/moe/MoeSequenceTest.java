package dev.poniard.moe;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;

import org.deeplearning4j.nn.conf.MultiLayerConfiguration;
import org.deeplearning4j.nn.conf.NeuralNetConfiguration;
import org.deeplearning4j.nn.conf.inputs.InputType;
import org.deeplearning4j.nn.conf.layers.RnnOutputLayer;
import org.deeplearning4j.nn.multilayer.MultiLayerNetwork;
import org.deeplearning4j.nn.weights.WeightInit;
import org.junit.jupiter.api.Test;
import org.nd4j.linalg.activations.Activation;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;
import org.nd4j.linalg.indexing.NDArrayIndex;
import org.nd4j.linalg.learning.config.NoOp;
import org.nd4j.linalg.lossfunctions.LossFunctions;

/** Sequences in DL4J's recurrent format [batch, d, T]: every time step is a token. */
class MoeSequenceTest {
    static MultiLayerNetwork rnn(MoeLayer.Builder moe, int d, int out, long seed) {
        MultiLayerConfiguration conf = new NeuralNetConfiguration.Builder().seed(seed).dataType(DataType.DOUBLE)
                .updater(new NoOp()).weightInit(WeightInit.XAVIER).list()
                .layer(moe.nOut(d).build())
                .layer(new RnnOutputLayer.Builder(LossFunctions.LossFunction.MSE).activation(Activation.IDENTITY)
                        .nOut(out).build())
                .setInputType(InputType.recurrent(d))
                .build();
        MultiLayerNetwork net = new MultiLayerNetwork(conf);
        net.init();
        return net;
    }

    @Test
    void shouldRouteEveryTimeStepLikeAFeedForwardToken() {
        long seed = 7;
        System.out.println("seed " + seed);
        MultiLayerNetwork net = rnn(new MoeLayer.Builder().experts(4).topK(2).expertHidden(6).dropless(true), 5, 2, seed);
        Nd4j.getRandom().setSeed(seed);
        INDArray seq = Nd4j.rand(DataType.DOUBLE, 2, 5, 3);
        INDArray out = net.feedForwardToLayer(0, seq, false).get(1);
        assertArrayEquals(new long[] {2, 5, 3}, out.shape());
        // the same tokens as a [b·T, d] batch through the same layer give the same rows
        INDArray flat = seq.permute(0, 2, 1).dup('c').reshape(6, 5);
        INDArray ff = net.getLayer(0).activate(flat, false,
                org.deeplearning4j.nn.workspace.LayerWorkspaceMgr.noWorkspaces());
        for (int b = 0; b < 2; b++) {
            for (int t = 0; t < 3; t++) {
                INDArray a = out.get(NDArrayIndex.point(b), NDArrayIndex.all(), NDArrayIndex.point(t));
                INDArray c = ff.getRow(b * 3 + t);
                assertEquals(0, a.sub(c).norm2Number().doubleValue(), 1e-12);
            }
        }
    }
}
