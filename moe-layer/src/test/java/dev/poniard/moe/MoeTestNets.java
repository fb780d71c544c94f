package dev.poniard.moe;

import org.deeplearning4j.nn.conf.MultiLayerConfiguration;
import org.deeplearning4j.nn.conf.NeuralNetConfiguration;
import org.deeplearning4j.nn.conf.inputs.InputType;
import org.deeplearning4j.nn.conf.layers.DenseLayer;
import org.deeplearning4j.nn.conf.layers.OutputLayer;
import org.deeplearning4j.nn.conf.layers.RnnOutputLayer;
import org.deeplearning4j.nn.conf.layers.recurrent.SimpleRnn;
import org.deeplearning4j.nn.multilayer.MultiLayerNetwork;
import org.deeplearning4j.nn.weights.WeightInit;
import org.nd4j.linalg.activations.Activation;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.learning.config.NoOp;
import org.nd4j.linalg.lossfunctions.LossFunctions;

/** Small networks for the tests: a MoE layer followed by an MSE output layer, in double precision. */
final class MoeTestNets {
    private MoeTestNets() {
    }

    static MultiLayerNetwork mln(MoeLayer.Builder moe, int d, int out, long seed) {
        return mln(moe, d, out, seed, new NoOp());
    }

    static MultiLayerNetwork mln(MoeLayer.Builder moe, int d, int out, long seed,
                                 org.nd4j.linalg.learning.config.IUpdater updater) {
        MultiLayerConfiguration conf = new NeuralNetConfiguration.Builder().seed(seed).dataType(DataType.DOUBLE)
                .updater(updater).weightInit(WeightInit.XAVIER).list()
                .layer(moe.nIn(d).nOut(d).build())
                .layer(new OutputLayer.Builder(LossFunctions.LossFunction.MSE).activation(Activation.IDENTITY)
                        .nIn(d).nOut(out).build())
                .build();
        MultiLayerNetwork net = new MultiLayerNetwork(conf);
        net.init();
        return net;
    }

    /**
     * A trainable layer, the MoE layer (index 1), an MSE output: gradient checks then also cover the MoE layer's
     * input gradient, which reaches the first layer's parameters. Sequences ([b, d, T]) go through a SimpleRnn.
     */
    static MultiLayerNetwork behindALayer(MoeLayer.Builder moe, int d, int out, long seed, boolean sequences) {
        NeuralNetConfiguration.ListBuilder list = new NeuralNetConfiguration.Builder().seed(seed)
                .dataType(DataType.DOUBLE).updater(new NoOp()).weightInit(WeightInit.XAVIER).list();
        if (sequences) {
            list.layer(new SimpleRnn.Builder().nIn(d).nOut(d).activation(Activation.TANH).build())
                    .layer(moe.nIn(d).nOut(d).build())
                    .layer(new RnnOutputLayer.Builder(LossFunctions.LossFunction.MSE).activation(Activation.IDENTITY)
                            .nIn(d).nOut(out).build())
                    .setInputType(InputType.recurrent(d));
        } else {
            list.layer(new DenseLayer.Builder().nIn(d).nOut(d).activation(Activation.TANH).build())
                    .layer(moe.nIn(d).nOut(d).build())
                    .layer(new OutputLayer.Builder(LossFunctions.LossFunction.MSE).activation(Activation.IDENTITY)
                            .nIn(d).nOut(out).build());
        }
        MultiLayerNetwork net = new MultiLayerNetwork(list.build());
        net.init();
        return net;
    }
}
