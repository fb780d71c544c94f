package dev.poniard.trainer;

import static dev.poniard.trainer.ParallelTrainerTest.data;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.poniard.scheduler.comm.LocalCluster;
import java.util.List;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.nd4j.autodiff.samediff.SDVariable;
import org.nd4j.autodiff.samediff.SameDiff;
import org.nd4j.autodiff.samediff.TrainingConfig;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.dataset.DataSet;
import org.nd4j.linalg.dataset.ViewIterator;
import org.nd4j.linalg.factory.Nd4j;
import org.nd4j.linalg.learning.config.Adam;

/** SameDiff graphs through {@link ParallelTrainer}: in-process workers and ranks, against {@code sd.fit}. */
@Timeout(value = 120, unit = TimeUnit.SECONDS, threadMode = Timeout.ThreadMode.SEPARATE_THREAD)
class SameDiffTrainingTest {
    static final long SHUFFLE_SEED = 3;

    /** An MLP in SameDiff: 12 → 24 (tanh) → 4, softmax cross-entropy, Adam. */
    static SameDiff mlp(long seed) {
        SameDiff sd = SameDiff.create();
        Nd4j.getRandom().setSeed(seed);
        SDVariable in = sd.placeHolder("in", DataType.FLOAT, -1, ParallelTrainerTest.IN);
        SDVariable label = sd.placeHolder("label", DataType.FLOAT, -1, ParallelTrainerTest.CLASSES);
        SDVariable w0 = sd.var("w0", Nd4j.randn(DataType.FLOAT, ParallelTrainerTest.IN, 24).muli(0.3));
        SDVariable b0 = sd.var("b0", Nd4j.zeros(DataType.FLOAT, 24));
        SDVariable w1 = sd.var("w1", Nd4j.randn(DataType.FLOAT, 24, ParallelTrainerTest.CLASSES).muli(0.3));
        SDVariable b1 = sd.var("b1", Nd4j.zeros(DataType.FLOAT, ParallelTrainerTest.CLASSES));
        SDVariable logits = sd.nn.tanh(in.mmul(w0).add(b0)).mmul(w1).add(b1);
        sd.nn.softmax("softmax", logits);
        sd.loss.softmaxCrossEntropy("loss", label, logits, null);
        sd.setLossVariables("loss");
        sd.setTrainingConfig(TrainingConfig.builder().updater(new Adam(1e-2)).dataSetFeatureMapping("in")
                .dataSetLabelMapping("label").build());
        return sd;
    }

    private static double maxRelError(SameDiff a, SameDiff b) {
        double worst = 0;
        for (String p : List.of("w0", "b0", "w1", "b1")) {
            worst = Math.max(worst, ParallelTrainerTest.relError(a.getArrForVarName(p), b.getArrForVarName(p)));
        }
        return worst;
    }

    @Test
    void shouldMatchSameDiffFitAfter20StepsOnTwoWorkers() {
        DataSet all = data(19 * 32 + 21, 31);
        SameDiff reference = mlp(5);
        SameDiff sd = reference.dup();
        reference.fit(new ViewIterator(all, 32), 1);
        try (ParallelTrainer t = ParallelTrainer.launch(new ParallelTrainer.Context().sameDiff(sd).workers(2)
                .sameDiffOutput("softmax"))) {
            t.fit(new ViewIterator(all, 32), 1);
            assertEquals(20, t.progress().steps());
            assertEquals(1, t.progress().epoch());
            double accuracy = t.evaluate(new ViewIterator(all, 100)).accuracy();
            assertTrue(accuracy > 0.5, "training should beat chance (0.25): " + accuracy);
        }
        double err = maxRelError(sd, reference);
        System.out.printf("SameDiff, 2 workers: relative parameter error after 20 steps %.3e%n", err);
        assertTrue(err <= 1e-5, "parameters differ from sd.fit by " + err);
    }

    @Test
    void shouldMatchSameDiffFitOnTwoRanks() {
        DataSet all = data(19 * 32 + 21, 32);
        SameDiff reference = mlp(6);
        SameDiff[] ranks = {reference.dup(), reference.dup()};
        reference.fit(EpochShards.forRank(all, SHUFFLE_SEED, 0, 32, 0, 1), 1);
        try (LocalCluster cluster = LocalCluster.launch(2)) {
            cluster.run(comm -> {
                try (ParallelTrainer t = ParallelTrainer.launch(new ParallelTrainer.Context().sameDiff(ranks[comm.rank()])
                        .workers(1).allReduce(new CommGradientAllReduce(comm)))) {
                    t.fitToEpoch(e -> EpochShards.forRank(all, SHUFFLE_SEED, e, 32, comm.rank(), 2), 1);
                    return t.progress().steps();
                }
            });
        }
        for (String p : List.of("w0", "b0", "w1", "b1")) {
            assertEquals(ranks[0].getArrForVarName(p), ranks[1].getArrForVarName(p), p + " must be bit-identical on both ranks");
        }
        double err = maxRelError(ranks[0], reference);
        System.out.printf("SameDiff, 2 ranks: relative parameter error after 20 steps %.3e%n", err);
        assertTrue(err <= 1e-5, "parameters differ from sd.fit by " + err);
    }

    @Test
    void shouldRefuseWhatDoesNotApplyToSameDiff() {
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> ParallelTrainer.launch(
                new ParallelTrainer.Context().sameDiff(SameDiff.create())));
        assertTrue(e.getMessage().contains("no training config"), e.getMessage());
        e = assertThrows(IllegalArgumentException.class, () -> ParallelTrainer.launch(new ParallelTrainer.Context()
                .sameDiff(mlp(1)).model(ParallelTrainerTest.mlp(new Adam(1e-3), 1))));
        assertTrue(e.getMessage().contains("not both"), e.getMessage());
        try (ParallelTrainer t = ParallelTrainer.launch(new ParallelTrainer.Context().sameDiff(mlp(1)).workers(1))) {
            TrainerException te = assertThrows(TrainerException.class,
                    () -> t.evaluate(new ViewIterator(data(10, 1), 5)));
            assertTrue(te.getMessage().contains("sameDiffOutput"), te.getMessage());
        }
    }
}
