package dev.poniard.moe;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.File;
import java.nio.file.Path;
import java.util.Map;
import org.deeplearning4j.nn.api.Layer;
import org.deeplearning4j.nn.conf.GradientNormalization;
import org.deeplearning4j.nn.conf.MultiLayerConfiguration;
import org.deeplearning4j.nn.conf.NeuralNetConfiguration;
import org.deeplearning4j.nn.conf.inputs.InputType;
import org.deeplearning4j.nn.conf.layers.OutputLayer;
import org.deeplearning4j.nn.graph.ComputationGraph;
import org.deeplearning4j.nn.multilayer.MultiLayerNetwork;
import org.deeplearning4j.nn.workspace.LayerWorkspaceMgr;
import org.deeplearning4j.util.ModelSerializer;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.EnumSource;
import org.nd4j.linalg.activations.Activation;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.dataset.DataSet;
import org.nd4j.linalg.factory.Nd4j;
import org.nd4j.linalg.indexing.NDArrayIndex;
import org.nd4j.linalg.learning.config.Adam;
import org.nd4j.linalg.learning.config.Sgd;
import org.nd4j.linalg.lossfunctions.LossFunctions;

/** Noisy top-k, auxiliary-loss-free bias balancing, expert choice and Soft MoE: routing, state, training. */
class MoeRouterTest {
    @BeforeAll
    static void doubles() {
        Nd4j.setDefaultDataTypes(DataType.DOUBLE, DataType.DOUBLE);
    }

    /** A router configuration per case: the four router types, and top-k with bias balancing. */
    enum Variant {
        NOISY_TOP_K, BIAS_BALANCED_TOP_K, EXPERT_CHOICE, SOFT_MOE;

        MoeLayer.Builder builder() {
            MoeLayer.Builder b = new MoeLayer.Builder().experts(4).topK(2).expertHidden(8)
                    .expertActivation(Activation.TANH).capacityFactor(1.0).auxLossWeight(0.01).zLossWeight(0.001);
            return switch (this) {
                case NOISY_TOP_K -> b.router(RouterType.NOISY_TOP_K);
                case BIAS_BALANCED_TOP_K -> b.router(RouterType.TOP_K).biasBalancing(0.01).auxLossWeight(0);
                case EXPERT_CHOICE -> b.router(RouterType.EXPERT_CHOICE);
                case SOFT_MOE -> b.router(RouterType.SOFT_MOE).slotsPerExpert(2);
            };
        }
    }

    @Test
    void shouldChooseWithTheBiasButGateWithUnbiasedProbabilities() {
        double[] logits = {2, 1, 0, -1};
        double[] bias = {0, 0, 0.3, 0};
        RoutingPlan plain = RoutingPlan.route(logits, 1, 4, 2, Integer.MAX_VALUE, TokenDropPolicy.BY_POSITION, true, 0, 0);
        RoutingPlan biased = RoutingPlan.route(logits, 1, 4, 2, Integer.MAX_VALUE, TokenDropPolicy.BY_POSITION, true, 0,
                0, bias);
        assertEquals(1, plain.choice(0, 1));
        assertEquals(0, biased.choice(0, 0));
        assertEquals(2, biased.choice(0, 1), "the bias lifts expert 2 over expert 1");
        double p0 = Math.exp(2);
        double p2 = Math.exp(0);
        assertEquals(p0 / (p0 + p2), biased.gate(0, 0), 1e-12, "gates renormalise the unbiased probabilities");
        assertEquals(p2 / (p0 + p2), biased.gate(0, 1), 1e-12);
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> RoutingPlan.route(logits, 1, 4, 2,
                1, TokenDropPolicy.BY_POSITION, true, 0, 0, new double[3]));
        assertTrue(e.getMessage().contains("one per expert (4)"), e.getMessage());
    }

    @Test
    void shouldLetEveryExpertPickItsTopCapacityTokens() {
        // 4 tokens, 2 experts; both experts like token 0 best; capacity 2
        double[] logits = {3, 3, 1, 0, 0, 1, -2, -2};
        RoutingPlan plan = RoutingPlan.expertChoice(logits, 4, 2, 2, 0);
        assertEquals(2, plan.k(), "one slot per expert");
        assertEquals(2, plan.keptTokens(0));
        assertEquals(2, plan.keptTokens(1));
        assertTrue(plan.kept(0, 0) && plan.kept(0, 1), "token 0 gets both experts");
        assertTrue(plan.kept(1, 0) && !plan.kept(1, 1));
        assertTrue(!plan.kept(2, 0) && plan.kept(2, 1));
        assertTrue(!plan.kept(3, 0) && !plan.kept(3, 1), "token 3 gets none");
        assertEquals(1, plan.unservedTokens());
        assertEquals(0.5, plan.gate(0, 0), 1e-12, "gate = the token's raw probability for the expert");
        assertEquals(Math.exp(1) / (Math.exp(1) + 1), plan.gate(1, 0), 1e-12);
        assertArrayEquals(new int[] {0, 1, 0, 2}, plan.dispatchTokens(), "tokens ascending within each expert");
        MoeMetrics m = MoeMetrics.of(plan);
        assertEquals(0, m.dropRate());
        assertEquals(1, m.maxOverMean(), 1e-12);
        assertEquals(1, m.unservedTokens());
        assertEquals(4, RoutingPlan.expertChoice(logits, 4, 2, 99, 0).keptTokens(0), "capacity is capped at the tokens");
    }

    @ParameterizedTest
    @EnumSource(Variant.class)
    void shouldRoundTripThroughJsonAndModelSerializer(Variant v, @TempDir Path dir) throws Exception {
        long seed = 21 + v.ordinal();
        System.out.println("seed " + seed);
        MultiLayerNetwork net = MoeTestNets.mln(v.builder(), 6, 3, seed);
        Layer layer = net.getLayer(0);
        Nd4j.getRandom().setSeed(seed);
        if (v == Variant.NOISY_TOP_K) {
            layer.getParam(MoeParamInitializer.NOISE_W).assign(Nd4j.rand(DataType.DOUBLE, 6, 4));
        }
        if (v == Variant.BIAS_BALANCED_TOP_K) {
            layer.getParam(MoeParamInitializer.SELECTION_BIAS).assign(Nd4j.createFromArray(0.2, -0.1, 0, 0.4)
                    .reshape(1, 4));
        }
        String json = net.getLayerWiseConfigurations().toJson();
        MultiLayerConfiguration back = MultiLayerConfiguration.fromJson(json);
        MoeLayer cfg = (MoeLayer) back.getConf(0).getLayer();
        MoeLayer orig = (MoeLayer) net.getLayerWiseConfigurations().getConf(0).getLayer();
        assertEquals(orig.getRouter(), cfg.getRouter());
        assertEquals(orig.getBiasUpdateRate(), cfg.getBiasUpdateRate());
        assertEquals(orig.getSlotsPerExpert(), cfg.getSlotsPerExpert());
        assertEquals(json, back.toJson());

        File f = dir.resolve("moe.zip").toFile();
        ModelSerializer.writeModel(net, f, true);
        MultiLayerNetwork loaded = ModelSerializer.restoreMultiLayerNetwork(f, true);
        assertEquals(net.params(), loaded.params());
        for (Map.Entry<String, INDArray> p : layer.paramTable().entrySet()) {
            assertEquals(p.getValue(), loaded.getLayer(0).getParam(p.getKey()), p.getKey());
        }
        INDArray in = Nd4j.rand(DataType.DOUBLE, 8, 6);
        assertEquals(net.output(in), loaded.output(in));
    }

    @Test
    void shouldReadJsonWrittenBeforeRoutersExistedAsTopK() throws Exception {
        MultiLayerNetwork net = MoeTestNets.mln(new MoeLayer.Builder().experts(4).topK(2).expertHidden(8), 6, 3, 3);
        String json = net.getLayerWiseConfigurations().toJson();
        assertTrue(json.contains("\"router\""), json);
        String old = json.replaceAll(",\\s*\"router\"\\s*:\\s*\"TOP_K\"", "")
                .replaceAll(",\\s*\"biasUpdateRate\"\\s*:\\s*0\\.0", "")
                .replaceAll(",\\s*\"slotsPerExpert\"\\s*:\\s*1", "");
        assertFalse(old.contains("\"router\"") || old.contains("biasUpdateRate") || old.contains("slotsPerExpert"), old);
        MoeLayer cfg = (MoeLayer) MultiLayerConfiguration.fromJson(old).getConf(0).getLayer();
        assertEquals(RouterType.TOP_K, cfg.getRouter());
        assertEquals(0, cfg.getBiasUpdateRate());
        assertEquals(1, cfg.getSlotsPerExpert());
    }

    @Test
    void shouldAddNoiseOnlyInTrainingWithOneDrawPerIteration() {
        long seed = 31;
        System.out.println("seed " + seed);
        MultiLayerNetwork noisy = MoeTestNets.mln(Variant.NOISY_TOP_K.builder().capacityFactor(2), 6, 3, seed);
        MultiLayerNetwork plain = MoeTestNets.mln(Variant.NOISY_TOP_K.builder().capacityFactor(2).router(RouterType.TOP_K),
                6, 3, seed);
        Layer layer = noisy.getLayer(0);
        for (Map.Entry<String, INDArray> p : plain.getLayer(0).paramTable().entrySet()) {
            p.getValue().assign(layer.getParam(p.getKey()));
        }
        plain.getLayer(1).setParams(noisy.getLayer(1).params());
        Nd4j.getRandom().setSeed(seed);
        layer.getParam(MoeParamInitializer.NOISE_W).assign(Nd4j.rand(DataType.DOUBLE, 6, 4));
        INDArray x = Nd4j.rand(DataType.DOUBLE, 16, 6).subi(0.5);
        assertEquals(plain.output(x), noisy.output(x), "no noise at inference: the same as plain top-k");
        assertEquals(noisy.output(x), noisy.output(x));

        INDArray a = layer.activate(x, true, LayerWorkspaceMgr.noWorkspaces()).dup();
        INDArray again = layer.activate(x, true, LayerWorkspaceMgr.noWorkspaces()).dup();
        assertEquals(a, again, "one iteration, one noise draw");
        INDArray inference = layer.activate(x, false, LayerWorkspaceMgr.noWorkspaces()).dup();
        assertNotEquals(inference, a, "training routes on noisy logits");
        assertEquals(inference, plain.getLayer(0).activate(x, false, LayerWorkspaceMgr.noWorkspaces()));
        layer.setIterationCount(layer.getIterationCount() + 1);
        INDArray next = layer.activate(x, true, LayerWorkspaceMgr.noWorkspaces()).dup();
        assertNotEquals(a, next, "the next iteration draws new noise");

        // fit advances the counters the noise is keyed by, and the noise weights learn
        INDArray wn = layer.getParam(MoeParamInitializer.NOISE_W).dup();
        DataSet ds = new DataSet(x, Nd4j.rand(DataType.DOUBLE, 16, 3));
        MultiLayerNetwork trained = MoeTestNets.mln(Variant.NOISY_TOP_K.builder(), 6, 3, seed, new Sgd(0.1));
        trained.setParams(noisy.params());
        int before = trained.getLayer(0).getIterationCount();
        for (int i = 1; i <= 3; i++) {
            trained.fit(ds);
            assertEquals(before + i, trained.getLayer(0).getIterationCount(), "the layer's counter moves every step");
        }
        assertNotEquals(wn, trained.getLayer(0).getParam(MoeParamInitializer.NOISE_W), "W_noise is trained");
    }

    @Test
    void shouldUpdateSelectionBiasesBySignOfTheLoadGapAfterEachStep() {
        long seed = 41;
        System.out.println("seed " + seed);
        double gamma = 0.01;
        // Adam, L2 and minibatch division would each change a ±γ step if they reached the biases
        MultiLayerNetwork net = MoeTestNets.mln(Variant.BIAS_BALANCED_TOP_K.builder().biasBalancing(gamma).topK(1)
                .dropless(true).l2(0.05), 6, 3, seed, new Adam(0.01));
        Layer layer = net.getLayer(0);
        // every token prefers expert 0 strongly, expert 1 next
        layer.getParam(MoeParamInitializer.ROUTER_W).getColumn(0).addi(2);
        layer.getParam(MoeParamInitializer.ROUTER_W).getColumn(1).addi(1);
        Nd4j.getRandom().setSeed(seed);
        INDArray x = Nd4j.rand(DataType.DOUBLE, 32, 6).subi(0.5);
        x.getColumn(0).assign(1);
        DataSet ds = new DataSet(x, Nd4j.rand(DataType.DOUBLE, 32, 3));

        net.setInput(x);
        net.setLabels(ds.getLabels());
        net.computeGradientAndScore();
        INDArray bias = layer.getParam(MoeParamInitializer.SELECTION_BIAS);
        assertEquals(0, bias.norm1Number().doubleValue(), "computing gradients alone leaves the biases alone");

        MoeMetrics first = null;
        double[] expected = new double[4];
        for (int step = 0; step < 30; step++) {
            net.fit(ds);
            MoeMetrics m = MoeModels.metrics(net).get(0);
            if (first == null) {
                first = m;
            }
            int[] load = m.routedPerExpert();
            for (int e = 0; e < 4; e++) {
                expected[e] += gamma * Math.signum(32 / 4.0 - load[e]);
            }
            assertArrayEquals(expected, bias.dup().data().asDouble(), 1e-12, "b_e += γ·sign(mean − load_e), step " + step);
        }
        assertTrue(expected[0] < 0, "the overloaded expert's bias falls");
        MoeMetrics last = MoeModels.metrics(net).get(0);
        System.out.println("first " + first + "\nlast  " + last);
        assertTrue(first.routedPerExpert()[0] > 16, first.toString());
        assertTrue(last.maxOverMean() < first.maxOverMean(), "balance improves: " + first + " -> " + last);
    }

    @ParameterizedTest
    @EnumSource(Variant.class)
    @Timeout(120)
    void shouldTrainInFitWhenAnExpertGetsNoTokens(Variant v) {
        long seed = 51 + v.ordinal();
        System.out.println("seed " + seed);
        MoeLayer.Builder b = v.builder().workers(2).minChunkTokens(2);
        if (v == Variant.BIAS_BALANCED_TOP_K) {
            b.biasBalancing(0.001); // small enough that expert 3 stays starved for the 20 steps
        }
        if (v == Variant.EXPERT_CHOICE) {
            b.capacityFactor(0.5); // C = 8 of 32 tokens per expert: some tokens get no expert
        }
        MultiLayerNetwork net = MoeTestNets.mln(b, 6, 3, seed, new Sgd(0.05));
        net.setListeners(new MoeMetricsListener(0));
        try {
            Layer layer = net.getLayer(0);
            INDArray wr = layer.getParam(MoeParamInitializer.ROUTER_W);
            // a constant feature 1 whose weight -1e3 in column 3 keeps every token away from expert 3
            // (Soft MoE: column 3 is expert 1's second slot)
            wr.getColumn(3).assign(0);
            wr.putScalar(0, 3, -1e3);
            Nd4j.getRandom().setSeed(seed);
            INDArray x = Nd4j.rand(DataType.DOUBLE, 32, 6).subi(0.5);
            x.getColumn(0).assign(1);
            DataSet ds = new DataSet(x, Nd4j.rand(DataType.DOUBLE, 32, 3));
            INDArray expert3 = layer.getParam(MoeParamInitializer.expertParam(3, "W1")).dup();
            double before = net.score(ds);
            for (int i = 0; i < 20; i++) {
                net.fit(ds);
            }
            assertFalse(Double.isNaN(net.score()));
            assertTrue(net.score(ds) < before, "score should fall: " + before + " -> " + net.score(ds));
            MoeMetrics m = MoeModels.metrics(net).get(0);
            System.out.println(v + ": " + m);
            switch (v) {
                case NOISY_TOP_K, BIAS_BALANCED_TOP_K -> {
                    assertEquals(0, m.keptPerExpert()[3], m.toString());
                    assertEquals(expert3, layer.getParam(MoeParamInitializer.expertParam(3, "W1")),
                            "an expert without tokens gets a zero gradient");
                }
                case EXPERT_CHOICE -> {
                    // expert 3 still picks its C tokens; tokens no expert picked pass through with zero output
                    assertEquals(8, m.keptPerExpert()[3], m.toString());
                    assertTrue(m.unservedTokens() > 0, m.toString());
                }
                case SOFT_MOE -> assertArrayEquals(new int[] {64, 64, 64, 64}, m.keptPerExpert(), m.toString());
            }
            if (v == Variant.BIAS_BALANCED_TOP_K) {
                assertEquals(20 * 0.001, layer.getParam(MoeParamInitializer.SELECTION_BIAS).getDouble(3), 1e-12,
                        "the starved expert's bias rose by γ every step");
            }
        } finally {
            MoeModels.close(net);
        }
    }

    @Test
    void shouldMixTokensWithinEachSequenceOnlyWithSoftMoe() {
        long seed = 61;
        System.out.println("seed " + seed);
        MultiLayerNetwork net = MoeSequenceTest.rnn(Variant.SOFT_MOE.builder(), 5, 2, seed);
        Layer layer = net.getLayer(0);
        Nd4j.getRandom().setSeed(seed);
        INDArray seq = Nd4j.rand(DataType.DOUBLE, 3, 5, 4).subi(0.5);
        INDArray all = layer.activate(seq, false, LayerWorkspaceMgr.noWorkspaces()).dup();
        INDArray first = layer.activate(seq.get(NDArrayIndex.interval(0, 1), NDArrayIndex.all(), NDArrayIndex.all()).dup(),
                false, LayerWorkspaceMgr.noWorkspaces()).dup();
        assertEquals(0, all.get(NDArrayIndex.interval(0, 1), NDArrayIndex.all(), NDArrayIndex.all()).sub(first)
                .norm2Number().doubleValue(), 1e-12, "a sequence's output does not depend on the other sequences");
        INDArray changed = seq.dup();
        changed.putScalar(new long[] {0, 2, 3}, 0.9);
        INDArray after = layer.activate(changed, false, LayerWorkspaceMgr.noWorkspaces()).dup();
        assertNotEquals(all.get(NDArrayIndex.point(0), NDArrayIndex.all(), NDArrayIndex.point(0)),
                after.get(NDArrayIndex.point(0), NDArrayIndex.all(), NDArrayIndex.point(0)),
                "changing time step 3 changes time step 0's output: slots mix the whole sequence");
        assertEquals(all.get(NDArrayIndex.point(1)), after.get(NDArrayIndex.point(1)), "other sequences are untouched");
        assertArrayEquals(new int[] {6, 6, 6, 6}, MoeModels.metrics(net).get(0).keptPerExpert(),
                "every expert processes its 2 slots of each of the 3 sequences");
    }

    @Test
    void shouldBalanceWithBiasesInAComputationGraph() {
        long seed = 71;
        System.out.println("seed " + seed);
        double gamma = 0.002;
        ComputationGraph cg = new ComputationGraph(new NeuralNetConfiguration.Builder().seed(seed)
                .dataType(DataType.DOUBLE).updater(new Adam(1e-2)).graphBuilder().addInputs("in")
                .addLayer("moe", Variant.BIAS_BALANCED_TOP_K.builder().biasBalancing(gamma).nIn(6).nOut(6).build(), "in")
                .addLayer("out", new OutputLayer.Builder(LossFunctions.LossFunction.MSE).activation(Activation.IDENTITY)
                        .nIn(6).nOut(2).build(), "moe")
                .setOutputs("out").setInputTypes(InputType.feedForward(6)).build());
        cg.init();
        Nd4j.getRandom().setSeed(seed);
        DataSet ds = new DataSet(Nd4j.rand(DataType.DOUBLE, 16, 6), Nd4j.rand(DataType.DOUBLE, 16, 2));
        cg.fit(ds);
        int[] load = MoeModels.metrics(cg).values().iterator().next().routedPerExpert();
        INDArray bias = cg.getLayer("moe").getParam(MoeParamInitializer.SELECTION_BIAS);
        for (int e = 0; e < 4; e++) {
            assertEquals(gamma * Math.signum(16 * 2 / 4.0 - load[e]), bias.getDouble(e), 1e-15,
                    "expert " + e + " with load " + load[e]);
        }
    }

    @ParameterizedTest
    @EnumSource(Variant.class)
    @Timeout(120)
    void shouldMatchTheSequentialReferenceExactlyOnTwoWorkers(Variant v) {
        long seed = 81 + v.ordinal();
        System.out.println("seed " + seed);
        MoeLayer.Builder b = v.builder().sharedExperts(1).workers(2).minChunkTokens(3).chunksPerWorker(4);
        MultiLayerNetwork scheduled = MoeTestNets.mln(b, 8, 3, seed);
        MultiLayerNetwork inline = MoeTestNets.mln(b, 8, 3, seed);
        inline.setParams(scheduled.params());
        Nd4j.getRandom().setSeed(seed);
        INDArray x = Nd4j.rand(DataType.DOUBLE, 64, 8).subi(0.5);
        INDArray y = Nd4j.rand(DataType.DOUBLE, 64, 3);
        try (ExpertExecutor reference = ExpertExecutor.inline()) {
            MoeModels.useExecutor(inline, reference);
            for (MultiLayerNetwork net : new MultiLayerNetwork[] {scheduled, inline}) {
                net.setInput(x);
                net.setLabels(y);
                net.computeGradientAndScore();
            }
            assertEquals(inline.gradient().gradient(), scheduled.gradient().gradient(), "bitwise identical gradients");
            assertEquals(inline.score(), scheduled.score());
            assertEquals(inline.output(x), scheduled.output(x));
        } finally {
            MoeModels.close(scheduled);
        }
    }

    @ParameterizedTest
    @EnumSource(Variant.class)
    void shouldTrainInSinglePrecision(Variant v) {
        long seed = 91 + v.ordinal();
        System.out.println("seed " + seed);
        MultiLayerNetwork net = new MultiLayerNetwork(new NeuralNetConfiguration.Builder().seed(seed)
                .dataType(DataType.FLOAT).updater(new Adam(1e-2)).list()
                .layer(v.builder().nIn(6).nOut(6).build())
                .layer(new OutputLayer.Builder(LossFunctions.LossFunction.MSE).activation(Activation.IDENTITY)
                        .nIn(6).nOut(2).build())
                .build());
        net.init();
        Nd4j.getRandom().setSeed(seed);
        DataSet ds = new DataSet(Nd4j.rand(DataType.FLOAT, 16, 6), Nd4j.rand(DataType.FLOAT, 16, 2));
        double before = net.score(ds);
        for (int i = 0; i < 10; i++) {
            net.fit(ds);
        }
        assertEquals(DataType.FLOAT, net.output(ds.getFeatures()).dataType());
        assertTrue(net.score(ds) < before, v + ": score should fall: " + before + " -> " + net.score(ds));
    }

    @Test
    void shouldRejectRouterSettingsThatDoNotApply() {
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> new MoeLayer.Builder().nIn(4)
                .router(RouterType.EXPERT_CHOICE).biasBalancing(0.001).build());
        assertTrue(e.getMessage().contains("biasBalancing(0.001) needs a token-choice router"), e.getMessage());
        e = assertThrows(IllegalArgumentException.class, () -> new MoeLayer.Builder().nIn(4)
                .router(RouterType.EXPERT_CHOICE).dropless(true).build());
        assertTrue(e.getMessage().contains("dropless(true) does not apply to RouterType.EXPERT_CHOICE"), e.getMessage());
        e = assertThrows(IllegalArgumentException.class, () -> new MoeLayer.Builder().nIn(4).biasBalancing(-1).build());
        assertTrue(e.getMessage().contains("got -1.0"), e.getMessage());
        e = assertThrows(IllegalArgumentException.class, () -> new MoeLayer.Builder().nIn(4).router(null).build());
        assertTrue(e.getMessage().contains("router must be set"), e.getMessage());
        e = assertThrows(IllegalArgumentException.class, () -> new MoeLayer.Builder().nIn(4).router(RouterType.SOFT_MOE)
                .slotsPerExpert(0).build());
        assertTrue(e.getMessage().contains("slotsPerExpert must be >= 1, got 0"), e.getMessage());
        MultiLayerNetwork renormalised = new MultiLayerNetwork(new NeuralNetConfiguration.Builder()
                .gradientNormalization(GradientNormalization.RenormalizeL2PerLayer).list()
                .layer(new MoeLayer.Builder().size(4).biasBalancing(0.001).build())
                .layer(new OutputLayer.Builder().nIn(4).nOut(2).build()).build());
        e = assertThrows(IllegalArgumentException.class, renormalised::init);
        assertTrue(e.getMessage().contains("gradientNormalization(RenormalizeL2PerLayer)"), e.getMessage());
    }
}
