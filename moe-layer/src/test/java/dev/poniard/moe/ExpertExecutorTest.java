package dev.poniard.moe;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.ArrayList;
import java.util.List;
import org.deeplearning4j.nn.gradient.Gradient;
import org.deeplearning4j.nn.multilayer.MultiLayerNetwork;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.nd4j.linalg.activations.Activation;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;

/** Split experts on a 2-worker scheduler against the sequential reference. */
class ExpertExecutorTest {
    @BeforeAll
    static void setUp() {
        Nd4j.setDefaultDataTypes(DataType.DOUBLE, DataType.DOUBLE);
        MoeNativeMath.oneThreadPerWorker();
    }

    private static MoeLayer.Builder moe(int workers) {
        return new MoeLayer.Builder().experts(4).topK(2).expertHidden(16).expertActivation(Activation.TANH)
                .sharedExperts(1).dropless(true).workers(workers).minChunkTokens(3).chunksPerWorker(4);
    }

    /** Gradient and output of one fit step's forward/backward on {@code net}. */
    private static List<INDArray> step(MultiLayerNetwork net, INDArray x, INDArray y) {
        net.setInput(x);
        net.setLabels(y);
        net.computeGradientAndScore();
        Gradient g = net.gradient();
        List<INDArray> out = new ArrayList<>();
        out.add(g.gradient().dup());
        out.add(net.output(x));
        return out;
    }

    @Test
    @Timeout(120)
    void shouldMatchTheSequentialReferenceExactlyWhenExpertsAreSplit() {
        long seed = 99;
        System.out.println("seed " + seed);
        Nd4j.getRandom().setSeed(seed);
        INDArray x = Nd4j.rand(DataType.DOUBLE, 64, 8).subi(0.5);
        INDArray y = Nd4j.rand(DataType.DOUBLE, 64, 3);
        MultiLayerNetwork scheduled = MoeTestNets.mln(moe(2), 8, 3, seed);
        MultiLayerNetwork inline = MoeTestNets.mln(moe(2), 8, 3, seed);
        MultiLayerNetwork unsplit = MoeTestNets.mln(moe(1).minChunkTokens(1_000_000), 8, 3, seed);
        inline.setParams(scheduled.params());
        unsplit.setParams(scheduled.params());
        try (ExpertExecutor reference = ExpertExecutor.inline()) {
            MoeModels.useExecutor(inline, reference);
            for (int round = 0; round < 3; round++) {
                List<INDArray> a = step(scheduled, x, y);
                List<INDArray> b = step(inline, x, y);
                List<INDArray> c = step(unsplit, x, y);
                assertEquals(b.get(0), a.get(0), "same chunk plan: bitwise identical gradients");
                assertEquals(b.get(1), a.get(1), "same chunk plan: bitwise identical outputs");
                double diff = a.get(0).sub(c.get(0)).norm2Number().doubleValue();
                assertTrue(diff < 1e-12 * Math.max(1, c.get(0).norm2Number().doubleValue()),
                        "split vs unsplit differ only by rounding, got " + diff);
            }
            MoeLayerImpl layer = MoeModels.layers(scheduled).get(0);
            assertEquals(2, layer.executor().workers());
        } finally {
            MoeModels.close(scheduled);
        }
    }

    @Test
    void shouldSplitHotExpertsAndKeepColdOnesWhole() {
        INDArray w1 = Nd4j.zeros(DataType.DOUBLE, 2, 3);
        INDArray b1 = Nd4j.zeros(DataType.DOUBLE, 1, 3);
        INDArray w2 = Nd4j.zeros(DataType.DOUBLE, 3, 2);
        INDArray b2 = Nd4j.zeros(DataType.DOUBLE, 1, 2);
        List<ExpertJob> jobs = new ArrayList<>();
        for (int m : new int[] {100, 10, 0, 30}) {
            jobs.add(new ExpertJob("e" + jobs.size(), w1, b1, w2, b2, Activation.TANH.getActivationFunction(),
                    Nd4j.zeros(DataType.DOUBLE, m, 2), null, Nd4j.zeros(DataType.DOUBLE, m, 2)));
        }
        // 140 rows, 2 workers x 2 chunks each: chunk size 35
        ExpertExecutor.Plan plan = ExpertExecutor.plan(jobs, 2, 4, 2);
        int[] perJob = new int[4];
        int[] rows = new int[4];
        for (ExpertExecutor.Chunk c : plan.chunks()) {
            perJob[c.job()]++;
            rows[c.job()] += c.rows();
            assertTrue(c.rows() <= 35, c.toString());
        }
        assertEquals(3, perJob[0]);
        assertEquals(1, perJob[1]);
        assertEquals(0, perJob[2], "an expert with no tokens has no task");
        assertEquals(1, perJob[3]);
        assertEquals(100, rows[0]);
        assertEquals(30, rows[3]);
    }
}
