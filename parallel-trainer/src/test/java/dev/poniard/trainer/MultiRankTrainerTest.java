package dev.poniard.trainer;

import static dev.poniard.trainer.ParallelTrainerTest.data;
import static dev.poniard.trainer.ParallelTrainerTest.mlp;
import static dev.poniard.trainer.ParallelTrainerTest.relError;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.poniard.scheduler.comm.LocalCluster;
import java.util.ArrayList;
import java.util.HashSet;
import java.util.List;
import java.util.Set;
import java.util.concurrent.TimeUnit;
import org.deeplearning4j.nn.graph.ComputationGraph;
import org.deeplearning4j.nn.multilayer.MultiLayerNetwork;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.EnumSource;
import org.junit.jupiter.params.provider.ValueSource;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.dataset.DataSet;
import org.nd4j.linalg.dataset.api.iterator.DataSetIterator;
import org.nd4j.linalg.learning.config.Adam;

/** Ranks in one JVM over Aeron IPC ({@link LocalCluster}), each with its own trainer, against single-model fit. */
@Timeout(value = 120, unit = TimeUnit.SECONDS, threadMode = Timeout.ThreadMode.SEPARATE_THREAD)
class MultiRankTrainerTest {
    static final long SHUFFLE_SEED = 5;

    /**
     * 19 global batches of 32 and a last one of {@code lastBatch}: with 1 the second rank has no data for the last
     * step and must still take part in it.
     */
    @ParameterizedTest(name = "last global batch of {0}")
    @ValueSource(ints = {21, 1})
    void shouldMatchSingleModelFitAfter20StepsOnTwoRanks(int lastBatch) {
        DataSet all = data(19 * 32 + lastBatch, 21);
        MultiLayerNetwork reference = mlp(new Adam(1e-2), 8);
        MultiLayerNetwork[] nets = {reference.clone(), reference.clone()};
        reference.fit(EpochShards.forRank(all, SHUFFLE_SEED, 0, 32, 0, 1));
        assertEquals(20, reference.getIterationCount());

        try (LocalCluster cluster = LocalCluster.launch(2)) {
            List<Long> steps = cluster.run(comm -> {
                MultiLayerNetwork net = nets[comm.rank()];
                try (ParallelTrainer t = ParallelTrainer.launch(new ParallelTrainer.Context().model(net).workers(1)
                        .allReduce(new CommGradientAllReduce(comm)))) {
                    t.fitToEpoch(e -> EpochShards.forRank(all, SHUFFLE_SEED, e, 32, comm.rank(), 2), 1);
                    return t.progress().steps();
                }
            });
            assertEquals(List.of(20L, 20L), steps);
        }
        assertEquals(nets[0].params(), nets[1].params(), "the ranks' replicas must be bit-identical");
        double err = relError(nets[0].params(), reference.params());
        System.out.printf("2 ranks, last batch %d: relative parameter error after 20 steps %.3e%n", lastBatch, err);
        assertTrue(err <= 1e-5, "parameters differ from model.fit by " + err + " (relative)");
        assertTrue(relError(nets[0].getUpdater().getStateViewArray(), reference.getUpdater().getStateViewArray()) <= 1e-5,
                "updater state differs from model.fit");
        assertEquals(1, nets[1].getEpochCount());
    }

    @Test
    void shouldMatchComputationGraphFitOverTwoEpochsOnTwoRanks() {
        DataSet all = data(19 * 32 + 21, 22);
        ComputationGraph reference = ParallelTrainerTest.graph(new Adam(1e-2), 4);
        ComputationGraph[] nets = {reference.clone(), reference.clone()};
        for (int e = 0; e < 2; e++) {
            reference.fit(EpochShards.forRank(all, SHUFFLE_SEED, e, 32, 0, 1));
        }
        try (LocalCluster cluster = LocalCluster.launch(2)) {
            cluster.run(comm -> {
                try (ParallelTrainer t = ParallelTrainer.launch(new ParallelTrainer.Context().model(nets[comm.rank()])
                        .workers(1).allReduce(new CommGradientAllReduce(comm)))) {
                    t.fitToEpoch(e -> EpochShards.forRank(all, SHUFFLE_SEED, e, 32, comm.rank(), 2), 2);
                    return null;
                }
            });
        }
        assertEquals(nets[0].params(), nets[1].params(), "the ranks' replicas must be bit-identical");
        double err = relError(nets[0].params(), reference.params());
        System.out.printf("ComputationGraph, 2 ranks, 2 epochs: relative parameter error %.3e%n", err);
        assertTrue(err <= 1e-5, "parameters differ from ComputationGraph.fit by " + err);
        assertEquals(40, nets[1].getIterationCount());
    }

    /** Trains 3 epochs on two ranks exchanging gradients under {@code compression}; returns both ranks' models. */
    private static MultiLayerNetwork[] trainTwoRanks(DataSet all, MultiLayerNetwork init, GradientCompression compression) {
        MultiLayerNetwork[] nets = {init.clone(), init.clone()};
        try (LocalCluster cluster = LocalCluster.launch(2)) {
            cluster.run(comm -> {
                try (ParallelTrainer t = ParallelTrainer.launch(new ParallelTrainer.Context().model(nets[comm.rank()])
                        .workers(1).allReduce(new CommGradientAllReduce(comm, compression)))) {
                    t.fitToEpoch(e -> EpochShards.forRank(all, SHUFFLE_SEED, e, 32, comm.rank(), 2), 3);
                    return null;
                }
            });
        }
        assertEquals(nets[0].params(), nets[1].params(), compression + ": the ranks' replicas must be bit-identical");
        return nets;
    }

    @Test
    void shouldTrainAlmostAsWellWithCompressedGradients() {
        DataSet all = data(20 * 32, 24);
        MultiLayerNetwork init = mlp(new Adam(1e-2), 9);
        MultiLayerNetwork exact = trainTwoRanks(all, init, GradientCompression.none())[0];
        double exactAccuracy = exact.evaluate(new org.nd4j.linalg.dataset.ViewIterator(all, 100)).accuracy();
        MultiLayerNetwork half = trainTwoRanks(all, init, GradientCompression.fp16())[0];
        double halfError = relError(half.params(), exact.params());
        System.out.printf("fp16: relative parameter error %.3e after 60 steps%n", halfError);
        assertTrue(halfError < 1e-2, "fp16 gradients should barely change training: " + halfError);
        MultiLayerNetwork sparse = trainTwoRanks(all, init, GradientCompression.topK(0.1))[0];
        double sparseAccuracy = sparse.evaluate(new org.nd4j.linalg.dataset.ViewIterator(all, 100)).accuracy();
        System.out.printf("training accuracy: exact %.4f, top-10%% %.4f%n", exactAccuracy, sparseAccuracy);
        assertTrue(sparseAccuracy > exactAccuracy - 0.05 && sparseAccuracy > 0.6,
                "top-k with error feedback should train nearly as well: " + sparseAccuracy + " vs " + exactAccuracy);
        assertTrue(relError(sparse.params(), exact.params()) > 1e-4, "top-k must actually change the updates");
    }

    /** A NaN in one rank's shard must make every rank skip, or every rank stop at, the same step. */
    @ParameterizedTest(name = "{0}")
    @EnumSource(NanPolicy.class)
    void shouldTreatANonFiniteGradientOnOneRankAlikeOnEveryRank(NanPolicy policy) {
        DataSet all = data(10 * 32, 23);
        // Global batch 4 is examples 128..159 of the shuffled order; rank 1 holds 144..159 of it.
        int[] order = shuffledOrder(all, 0);
        DataSet poisoned = all.copy();
        poisoned.getFeatures().putScalar(new long[] {order[150], 1}, Float.NaN);
        MultiLayerNetwork reference = mlp(new Adam(1e-2), 8);
        MultiLayerNetwork[] nets = {reference.clone(), reference.clone()};
        try (LocalCluster cluster = LocalCluster.launch(2)) {
            List<String> outcomes = cluster.run(comm -> {
                try (ParallelTrainer t = ParallelTrainer.launch(new ParallelTrainer.Context().model(nets[comm.rank()])
                        .workers(1).nanPolicy(policy).allReduce(new CommGradientAllReduce(comm)))) {
                    try {
                        t.fitToEpoch(e -> EpochShards.forRank(poisoned, SHUFFLE_SEED, e, 32, comm.rank(), 2), 1);
                        return "steps " + t.progress().steps() + " skipped " + t.progress().skippedSteps();
                    } catch (NonFiniteGradientException e) {
                        return "stopped at iteration " + e.step();
                    }
                }
            });
            String expected = policy == NanPolicy.STOP ? "stopped at iteration 4" : "steps 9 skipped 1";
            assertEquals(List.of(expected, expected), outcomes);
        }
        assertEquals(nets[0].params(), nets[1].params(), "the ranks' replicas must stay bit-identical");
    }

    private static int[] shuffledOrder(DataSet all, int epoch) {
        DataSet ids = new DataSet(org.nd4j.linalg.factory.Nd4j.arange(all.numExamples()).reshape(all.numExamples(), 1)
                .castTo(org.nd4j.linalg.api.buffer.DataType.FLOAT), all.getLabels());
        List<Double> order = values(EpochShards.forRank(ids, SHUFFLE_SEED, epoch, 32, 0, 1), -1);
        return order.stream().mapToInt(Double::intValue).toArray();
    }

    @Test
    void shouldShardEveryEpochWithoutRepeatsAndAlignedWithTheGlobalBatches() {
        DataSet all = data(103, 3);
        INDArray ids = all.getFeatures().getColumn(0);
        for (int epoch = 0; epoch < 2; epoch++) {
            List<Double> single = values(EpochShards.forRank(all, 9, epoch, 20, 0, 1), -1);
            List<Double> merged = new ArrayList<>();
            List<List<Double>> perRank = new ArrayList<>();
            for (int r = 0; r < 3; r++) {
                perRank.add(values(EpochShards.forRank(all, 9, epoch, 21, r, 3), 7));
            }
            // Global batches of 21 are rank 0's 7, rank 1's 7, rank 2's 7 (the last: 103 - 84 = 19 as 7, 6, 6).
            for (int b = 0; b * 21 < 103; b++) {
                for (int r = 0; r < 3; r++) {
                    List<Double> mine = perRank.get(r);
                    merged.addAll(mine.subList(Math.min(b * 7, mine.size()), Math.min(b * 7 + 7, mine.size())));
                }
            }
            assertEquals(single, merged, "ranks together must see the single-process order, batch by batch");
            Set<Double> seen = new HashSet<>(merged);
            assertEquals(103, seen.size(), "every example once per epoch");
            assertEquals(ids.length(), seen.size());
        }
        assertTrue(!values(EpochShards.forRank(all, 9, 0, 20, 0, 1), -1)
                .equals(values(EpochShards.forRank(all, 9, 1, 20, 0, 1), -1)), "epochs are shuffled differently");
        assertThrows(IllegalArgumentException.class, () -> EpochShards.forRank(all, 9, 0, 20, 0, 3));
    }

    @Test
    void shouldGatherEachBatchWhenAskedIntoArraysOfItsOwn() {
        DataSet all = data(50, 4);
        INDArray before = all.getFeatures().dup();
        DataSetIterator it = EpochShards.forRank(all, 9, 0, 10, 0, 1);
        List<Double> first = values(it, 10);
        it.reset();
        assertEquals(first, values(it, 10), "reset() must start the same epoch over");
        assertThrows(java.util.NoSuchElementException.class, it::next);
        it.reset();
        it.next().getFeatures().assign(-1); // a batch is a copy: training code may keep or change it
        assertEquals(before, all.getFeatures(), "changing a batch must leave the data set alone");
        it.reset();
        it.setPreProcessor(ds -> ds.getFeatures().addi(1000));
        List<Double> shifted = values(it, 10);
        for (int i = 0; i < first.size(); i++) {
            assertEquals(first.get(i) + 1000, shifted.get(i), 1e-3, "the pre-processor runs on every batch");
        }
        assertEquals(ParallelTrainerTest.IN, it.inputColumns());
        assertEquals(10, it.batch());
    }

    @Test
    void shouldShardSequencesAsWholeExamples() {
        // [examples, features, time steps]: an example is a whole [features, time] slice, kept intact.
        INDArray seq = org.nd4j.linalg.factory.Nd4j.arange(12 * 3 * 5).reshape(12, 3, 5)
                .castTo(org.nd4j.linalg.api.buffer.DataType.FLOAT);
        DataSet all = new DataSet(seq, org.nd4j.linalg.factory.Nd4j.zeros(12, 2));
        DataSetIterator it = EpochShards.forRank(all, 1, 0, 4, 1, 2);
        int seen = 0;
        while (it.hasNext()) {
            DataSet ds = it.next();
            assertEquals(3, ds.getFeatures().rank());
            for (int i = 0; i < ds.numExamples(); i++) {
                INDArray ex = ds.getFeatures().slice(i);
                int id = (int) ex.getDouble(0, 0) / 15;
                assertEquals(seq.slice(id), ex, "example " + id + " must arrive whole");
                seen++;
            }
        }
        assertEquals(6, seen);
    }

    /** The first feature of every example, in order; checks that batches hold {@code batch} examples but the last. */
    private static List<Double> values(DataSetIterator it, int batch) {
        List<Double> out = new ArrayList<>();
        while (it.hasNext()) {
            DataSet ds = it.next();
            if (batch > 0 && it.hasNext()) {
                assertEquals(batch, ds.numExamples());
            }
            for (int i = 0; i < ds.numExamples(); i++) {
                out.add(ds.getFeatures().getDouble(i, 0));
            }
        }
        return out;
    }
}
