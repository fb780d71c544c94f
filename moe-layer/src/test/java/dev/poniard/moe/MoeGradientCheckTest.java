package dev.poniard.moe;

import static org.junit.jupiter.api.Assertions.assertTrue;

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
}
