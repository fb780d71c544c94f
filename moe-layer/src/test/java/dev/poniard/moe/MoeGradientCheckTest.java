package dev.poniard.moe;

import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.Set;
import org.deeplearning4j.gradientcheck.GradientCheckUtil;
import org.deeplearning4j.nn.multilayer.MultiLayerNetwork;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;
import org.nd4j.linalg.activations.Activation;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;

/**
 * Finite-difference gradient checks (DL4J's GradientCheckUtil, double precision) of the whole layer: experts,
 * router through the gates, load-balancing and z-losses, shared experts, capacity drops, sequences.
 */
class MoeGradientCheckTest {
    @BeforeAll
    static void doubles() {
        Nd4j.setDefaultDataTypes(DataType.DOUBLE, DataType.DOUBLE);
    }

    @ParameterizedTest(name = "k={0} shared={1} dropless={2} capacity={3} seq={4}")
    @CsvSource({
            "1, 0, true, 0, false",
            "2, 0, true, 0, false",
            "2, 1, true, 0, false",
            "1, 0, false, 1.0, false",
            "2, 0, false, 0.75, false",
            "2, 1, true, 0, true",
            "3, 0, true, 0, false"
    })
    void shouldMatchFiniteDifferences(int k, int shared, boolean dropless, double capacity, boolean seq) {
        long seed = 1234 + k * 10L + shared;
        System.out.println("gradient check seed " + seed);
        int d = 4;
        MoeLayer.Builder b = new MoeLayer.Builder().experts(4).topK(k).expertHidden(5)
                .expertActivation(Activation.TANH).sharedExperts(shared).dropless(dropless)
                .auxLossWeight(0.05).zLossWeight(0.01);
        if (!dropless) {
            b.capacityFactor(capacity);
        }
        INDArray in;
        INDArray labels;
        MultiLayerNetwork net;
        Nd4j.getRandom().setSeed(seed);
        if (seq) {
            net = MoeSequenceTest.rnn(b, d, 3, seed);
            in = Nd4j.rand(DataType.DOUBLE, 3, d, 4).subi(0.5).muli(2);
            labels = Nd4j.rand(DataType.DOUBLE, 3, 3, 4);
        } else {
            net = MoeTestNets.mln(b, d, 3, seed);
            in = Nd4j.rand(DataType.DOUBLE, 8, d).subi(0.5).muli(2);
            labels = Nd4j.rand(DataType.DOUBLE, 8, 3);
        }
        boolean ok = GradientCheckUtil.checkGradients(new GradientCheckUtil.MLNConfig().net(net).input(in).labels(labels)
                .epsilon(1e-6).maxRelError(1e-5).minAbsoluteError(1e-9)
                .print(GradientCheckUtil.PrintMode.FAILURES_ONLY));
        assertTrue(ok, "gradient check failed (seed " + seed + ")");
    }

    /**
     * The other routers. Noisy top-k is checked in training mode with its noise weights made non-zero (the noise is
     * the same on every forward of one iteration); bias balancing with biases that change the choice, their own
     * entry excluded (its "gradient" is the balancing step, not a derivative); Soft MoE on sequences (groups of
     * several tokens) and on feed-forward rows (groups of one). A layer in front of the MoE layer puts its input
     * gradient under the check too.
     */
    @ParameterizedTest(name = "{0} k={1} capacity={2} shared={3} seq={4} bias={5}")
    @CsvSource({
            "NOISY_TOP_K, 1, 0, 0, false, false",
            "NOISY_TOP_K, 2, 0.75, 0, false, false",
            "TOP_K, 2, 0, 0, false, true",
            "NOISY_TOP_K, 1, 1.0, 0, false, true",
            "EXPERT_CHOICE, 1, 1.0, 0, false, false",
            "EXPERT_CHOICE, 2, 0.75, 0, true, false",
            "SOFT_MOE, 1, 0, 0, true, false",
            "SOFT_MOE, 1, 0, 1, false, false"
    })
    void shouldMatchFiniteDifferencesForEachRouter(RouterType router, int k, double capacity, int shared, boolean seq,
                                                   boolean bias) {
        long seed = 4321 + router.ordinal() * 100L + k * 10L + shared + (bias ? 7 : 0);
        System.out.println("gradient check seed " + seed);
        int d = 4;
        MoeLayer.Builder b = new MoeLayer.Builder().router(router).experts(4).topK(k).expertHidden(5)
                .expertActivation(Activation.TANH).sharedExperts(shared).auxLossWeight(0.05).zLossWeight(0.01)
                .slotsPerExpert(2);
        if (capacity > 0) {
            b.capacityFactor(capacity);
        } else {
            b.dropless(true);
        }
        if (bias) {
            b.biasBalancing(0.01);
        }
        Nd4j.getRandom().setSeed(seed);
        MultiLayerNetwork net = MoeTestNets.behindALayer(b, d, 3, seed, seq);
        INDArray in = seq ? Nd4j.rand(DataType.DOUBLE, 3, d, 4).subi(0.5).muli(2)
                : Nd4j.rand(DataType.DOUBLE, 8, d).subi(0.5).muli(2);
        INDArray labels = seq ? Nd4j.rand(DataType.DOUBLE, 3, 3, 4) : Nd4j.rand(DataType.DOUBLE, 8, 3);
        org.deeplearning4j.nn.api.Layer layer = net.getLayer(1);
        if (router == RouterType.NOISY_TOP_K) {
            layer.getParam(MoeParamInitializer.NOISE_W).assign(Nd4j.rand(DataType.DOUBLE, d, 4).subi(0.5));
        }
        if (bias) {
            // large enough to overrule some tokens' top choice
            layer.getParam(MoeParamInitializer.SELECTION_BIAS).assign(Nd4j.createFromArray(0.3, -0.2, 0.1, 0.0)
                    .reshape(1, 4));
        }
        boolean ok = GradientCheckUtil.checkGradients(new GradientCheckUtil.MLNConfig().net(net).input(in).labels(labels)
                .epsilon(1e-6).maxRelError(1e-5).minAbsoluteError(1e-9)
                .excludeParams(bias ? Set.of("1_" + MoeParamInitializer.SELECTION_BIAS) : Set.of())
                .print(GradientCheckUtil.PrintMode.FAILURES_ONLY));
        assertTrue(ok, "gradient check failed (seed " + seed + ")");
    }
}
