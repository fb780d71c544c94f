package dev.poniard.moe;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.File;
import java.nio.file.Path;
import org.deeplearning4j.nn.conf.ComputationGraphConfiguration;
import org.deeplearning4j.nn.conf.MultiLayerConfiguration;
import org.deeplearning4j.nn.conf.NeuralNetConfiguration;
import org.deeplearning4j.nn.conf.inputs.InputType;
import org.deeplearning4j.nn.conf.layers.OutputLayer;
import org.deeplearning4j.nn.graph.ComputationGraph;
import org.deeplearning4j.nn.multilayer.MultiLayerNetwork;
import org.deeplearning4j.util.ModelSerializer;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;
import org.nd4j.linalg.activations.Activation;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.dataset.DataSet;
import org.nd4j.linalg.factory.Nd4j;
import org.nd4j.linalg.learning.config.Adam;
import org.nd4j.linalg.learning.config.Sgd;
import org.nd4j.linalg.lossfunctions.LossFunctions;

class MoeLayerTest {
    @BeforeAll
    static void doubles() {
        Nd4j.setDefaultDataTypes(DataType.DOUBLE, DataType.DOUBLE);
    }

    private static MoeLayer.Builder moe() {
        return new MoeLayer.Builder().experts(4).topK(2).expertHidden(8).expertActivation(Activation.TANH)
                .sharedExperts(1).capacityFactor(1.5).dropPolicy(TokenDropPolicy.BY_SCORE).auxLossWeight(0.02)
                .zLossWeight(0.001);
    }

    @Test
    void shouldRoundTripThroughJsonAndModelSerializer(@TempDir Path dir) throws Exception {
        long seed = 11;
        System.out.println("seed " + seed);
        MultiLayerNetwork net = MoeTestNets.mln(moe(), 6, 3, seed);
        String json = net.getLayerWiseConfigurations().toJson();
        assertTrue(json.contains("dev.poniard.moe.MoeLayer"), json);
        MultiLayerConfiguration back = MultiLayerConfiguration.fromJson(json);
        MoeLayer l = (MoeLayer) back.getConf(0).getLayer();
        assertEquals(4, l.getExperts());
        assertEquals(2, l.getTopK());
        assertEquals(8, l.getExpertHidden());
        assertEquals(1, l.getSharedExperts());
        assertEquals(TokenDropPolicy.BY_SCORE, l.getDropPolicy());
        assertEquals(0.02, l.getAuxLossWeight());
        assertEquals(json, back.toJson());

        File f = dir.resolve("moe.zip").toFile();
        ModelSerializer.writeModel(net, f, true);
        MultiLayerNetwork loaded = ModelSerializer.restoreMultiLayerNetwork(f, true);
        INDArray in = Nd4j.rand(DataType.DOUBLE, 5, 6);
        assertEquals(net.params(), loaded.params());
        assertEquals(net.output(in), loaded.output(in));
    }

    @Test
    void shouldWorkInAComputationGraphAndRoundTrip(@TempDir Path dir) throws Exception {
        long seed = 12;
        System.out.println("seed " + seed);
        ComputationGraphConfiguration conf = new NeuralNetConfiguration.Builder().seed(seed).dataType(DataType.DOUBLE)
                .updater(new Adam(1e-2)).graphBuilder().addInputs("in")
                .addLayer("moe", moe().nIn(6).nOut(6).build(), "in")
                .addLayer("out", new OutputLayer.Builder(LossFunctions.LossFunction.MSE).activation(Activation.IDENTITY)
                        .nIn(6).nOut(2).build(), "moe")
                .setOutputs("out").setInputTypes(InputType.feedForward(6)).build();
        ComputationGraph cg = new ComputationGraph(conf);
        cg.init();
        Nd4j.getRandom().setSeed(seed);
        DataSet ds = new DataSet(Nd4j.rand(DataType.DOUBLE, 16, 6), Nd4j.rand(DataType.DOUBLE, 16, 2));
        double before = cg.score(ds);
        for (int i = 0; i < 30; i++) {
            cg.fit(ds);
        }
        assertTrue(cg.score(ds) < before, "score should fall: " + before + " -> " + cg.score(ds));
        File f = dir.resolve("cg.zip").toFile();
        ModelSerializer.writeModel(cg, f, true);
        ComputationGraph loaded = ModelSerializer.restoreComputationGraph(f, true);
        assertEquals(cg.outputSingle(ds.getFeatures()), loaded.outputSingle(ds.getFeatures()));
        assertEquals(1, MoeModels.metrics(cg).size(), "one MoE layer with metrics");
    }

    @Test
    void shouldAddAuxiliaryLossesToTheScore() {
        long seed = 13;
        System.out.println("seed " + seed);
        Nd4j.getRandom().setSeed(seed);
        DataSet ds = new DataSet(Nd4j.rand(DataType.DOUBLE, 8, 6), Nd4j.rand(DataType.DOUBLE, 8, 3));
        MultiLayerNetwork with = MoeTestNets.mln(moe().auxLossWeight(0.5).zLossWeight(0.1), 6, 3, seed);
        MultiLayerNetwork without = MoeTestNets.mln(moe().auxLossWeight(0).zLossWeight(0), 6, 3, seed);
        without.setParams(with.params());
        with.setInput(ds.getFeatures());
        with.setLabels(ds.getLabels());
        with.computeGradientAndScore();
        without.setInput(ds.getFeatures());
        without.setLabels(ds.getLabels());
        without.computeGradientAndScore();
        MoeMetrics m = MoeModels.metrics(with).get(0);
        assertTrue(m.auxLoss() > 0.4, "Switch loss >= α at any routing, got " + m.auxLoss());
        assertEquals(without.score() + m.auxLoss() + m.zLoss(), with.score(), 1e-12);
    }

    @Test
    @Timeout(120)
    void shouldTrainWhenAnExpertGetsNoTokens() {
        long seed = 14;
        System.out.println("seed " + seed);
        MultiLayerNetwork net = MoeTestNets.mln(moe().sharedExperts(0).workers(2).minChunkTokens(2)
                .auxLossWeight(0), 6, 3, seed, new Sgd(0.05));
        net.setListeners(new MoeMetricsListener(0));
        try {
            // expert 3's router column so low that no token ever picks it
            net.getLayer(0).getParam(MoeParamInitializer.ROUTER_W).getColumn(3).assign(-1e3);
            Nd4j.getRandom().setSeed(seed);
            INDArray x = Nd4j.rand(DataType.DOUBLE, 32, 6).subi(0.5);
            x.getColumn(0).assign(1); // a constant feature so the -1e3 column dominates every token
            DataSet ds = new DataSet(x, Nd4j.rand(DataType.DOUBLE, 32, 3));
            INDArray deadBefore = net.getLayer(0).getParam(MoeParamInitializer.expertParam(3, "W1")).dup();
            double before = net.score(ds);
            for (int i = 0; i < 20; i++) {
                net.fit(ds);
            }
            MoeMetrics m = MoeModels.metrics(net).get(0);
            assertEquals(0, m.keptPerExpert()[3], m.toString());
            assertTrue(m.deadExperts() >= 1);
            assertEquals(deadBefore, net.getLayer(0).getParam(MoeParamInitializer.expertParam(3, "W1")));
            assertFalse(Double.isNaN(net.score()));
            assertTrue(net.score(ds) < before, "score should fall: " + before + " -> " + net.score(ds));
        } finally {
            MoeModels.close(net);
        }
    }

    @Test
    void shouldRejectBadConfigurationsAndShapes() {
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> new MoeLayer.Builder().nIn(4).experts(2).topK(3).build());
        assertTrue(e.getMessage().contains("topK = 3 exceeds"), e.getMessage());
        e = assertThrows(IllegalArgumentException.class,
                () -> new MoeLayer.Builder().nIn(4).capacityFactor(-1).build());
        assertTrue(e.getMessage().contains("capacityFactor"), e.getMessage());
        e = assertThrows(IllegalArgumentException.class, () -> new MoeLayer.Builder().nIn(4).nOut(5).build());
        assertTrue(e.getMessage().contains("nIn (4) must equal nOut (5)"), e.getMessage());
        MultiLayerNetwork net = MoeTestNets.mln(moe(), 6, 3, 1);
        e = assertThrows(IllegalArgumentException.class, () -> net.output(Nd4j.rand(DataType.DOUBLE, 3, 5)));
        assertTrue(String.valueOf(e.getMessage()).contains("expects [batch, 6]")
                || String.valueOf(e.getCause()).contains("expects [batch, 6]"), e.toString());
    }
}
