package dev.poniard.trainer;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Collections;
import java.util.List;
import java.util.Random;
import java.util.concurrent.TimeUnit;
import java.util.function.IntFunction;
import org.deeplearning4j.nn.multilayer.MultiLayerNetwork;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;
import org.nd4j.linalg.dataset.DataSet;
import org.nd4j.linalg.dataset.ViewIterator;
import org.nd4j.linalg.dataset.api.iterator.DataSetIterator;
import org.nd4j.linalg.factory.Nd4j;
import org.nd4j.linalg.learning.config.Adam;

@Timeout(value = 120, unit = TimeUnit.SECONDS, threadMode = Timeout.ThreadMode.SEPARATE_THREAD)
class CheckpointsTest {
    @TempDir
    Path dir;

    /** Epoch e's data: the examples shuffled by (seed, e), in global batches of 32. */
    static IntFunction<DataSetIterator> epochs(DataSet all, long seed) {
        return e -> new ViewIterator(shuffled(all, seed, e), 32);
    }

    static DataSet shuffled(DataSet all, long seed, int epoch) {
        List<Integer> order = new ArrayList<>();
        for (int i = 0; i < all.numExamples(); i++) {
            order.add(i);
        }
        Collections.shuffle(order, new Random(seed * 31 + epoch));
        int[] idx = order.stream().mapToInt(Integer::intValue).toArray();
        return new DataSet(Nd4j.pullRows(all.getFeatures(), 1, idx), Nd4j.pullRows(all.getLabels(), 1, idx));
    }

    static ParallelTrainer.Context context(MultiLayerNetwork net, Checkpoints ckpt) {
        return new ParallelTrainer.Context().model(net).workers(2).batchSizePerWorker(16).seed(5).checkpoints(ckpt)
                .checkpointEverySteps(7);
    }

    @Test
    void shouldResumeOnTheSameLossCurveAsAnUninterruptedRun() throws Exception {
        DataSet all = ParallelTrainerTest.data(10 * 32 - 5, 21); // 10 steps per epoch, the last one short
        MultiLayerNetwork fresh = ParallelTrainerTest.mlp(new Adam(1e-2), 4);

        MultiLayerNetwork straight = fresh.clone();
        ParallelTrainerTest.Recorder full = new ParallelTrainerTest.Recorder();
        straight.setListeners(full);
        try (ParallelTrainer t = ParallelTrainer.launch(context(straight, null))) {
            t.fitToEpoch(epochs(all, 3), 3);
        }
        assertEquals(30, full.scores.size());

        // First run: dies while reading batch 6 of epoch 1 (after 15 steps); checkpoints at iterations 7, 10, 14.
        Checkpoints ckpt = Checkpoints.open(new Checkpoints.Context().directory(dir).keep(2));
        MultiLayerNetwork first = fresh.clone();
        ParallelTrainerTest.Recorder before = new ParallelTrainerTest.Recorder();
        first.setListeners(before);
        IntFunction<DataSetIterator> data = epochs(all, 3);
        try (ParallelTrainer t = ParallelTrainer.launch(context(first, ckpt))) {
            TrainerException crash = assertThrows(TrainerException.class, () -> t.fitToEpoch(e -> e == 1
                    ? new ParallelTrainerTest.FailingIterator(shuffled(all, 3, 1), 32, 6) : data.apply(e), 3));
            assertTrue(crash.getMessage().contains("batch 6 of epoch 1"), crash.getMessage());
        }
        assertEquals(List.of("ckpt-000000000010.poniard", "ckpt-000000000014.poniard"),
                ckpt.list().stream().map(p -> p.getFileName().toString()).toList(), "keep the last 2");
        Checkpoints.Info info = Checkpoints.info(ckpt.latest().orElseThrow());
        assertEquals(14, info.iteration());
        assertEquals(1, info.epoch());
        assertEquals(4, info.stepInEpoch());
        assertEquals(5, info.seed());
        assertEquals(2, info.workers());
        assertEquals(16, info.batchSizePerWorker());
        assertEquals(1, info.worldSize());
        assertFalse(info.javaVersion().isBlank());
        assertFalse(info.dl4jVersion().isBlank());

        // Second run: a new process would build the same model and resume from the latest checkpoint.
        MultiLayerNetwork resumed = ParallelTrainerTest.mlp(new Adam(1e-2), 4);
        ParallelTrainerTest.Recorder after = new ParallelTrainerTest.Recorder();
        resumed.setListeners(after);
        try (ParallelTrainer t = ParallelTrainer.launch(context(resumed, ckpt))) {
            assertTrue(ckpt.restoreLatest(t).isPresent());
            t.fitToEpoch(data, 3);
            assertEquals(30 - 14, t.progress().steps() - 14);
        }
        List<Double> curve = new ArrayList<>(before.scores.subList(0, 14));
        curve.addAll(after.scores);
        assertEquals(full.scores.size(), curve.size());
        for (int i = 0; i < curve.size(); i++) {
            assertEquals(full.scores.get(i), curve.get(i), 1e-6 * Math.abs(full.scores.get(i)), "loss of iteration " + i);
        }
        double err = ParallelTrainerTest.relError(resumed.params(), straight.params());
        System.out.printf("resumed vs uninterrupted: relative parameter error %.3e%n", err);
        assertTrue(err <= 1e-6, "resumed parameters differ by " + err);
        assertEquals(30, resumed.getIterationCount());
        assertEquals(3, resumed.getEpochCount());
    }

    private Path oneCheckpoint() throws Exception {
        Checkpoints ckpt = Checkpoints.open(new Checkpoints.Context().directory(dir));
        MultiLayerNetwork net = ParallelTrainerTest.mlp(new Adam(1e-2), 4);
        try (ParallelTrainer t = ParallelTrainer.launch(context(net, ckpt))) {
            t.fit(new ViewIterator(ParallelTrainerTest.data(64, 22), 32), 1);
        }
        return ckpt.latest().orElseThrow();
    }

    @Test
    void shouldRejectACorruptCheckpoint() throws Exception {
        Path file = oneCheckpoint();
        byte[] b = Files.readAllBytes(file);
        b[b.length / 2] ^= 0x40;
        Files.write(file, b);
        Checkpoints.CheckpointException e = assertThrows(Checkpoints.CheckpointException.class, () -> Checkpoints.info(file));
        assertTrue(e.getMessage().contains("checksum mismatch"), e.getMessage());
        assertTrue(e.getMessage().contains("delete it"), e.getMessage());

        Files.write(file, java.util.Arrays.copyOf(b, b.length - 100));
        e = assertThrows(Checkpoints.CheckpointException.class, () -> Checkpoints.info(file));
        assertTrue(e.getMessage().contains("does not fit the file"), e.getMessage());
    }

    @Test
    void shouldRejectACheckpointOfAnotherRunConfiguration() throws Exception {
        Path file = oneCheckpoint();
        Checkpoints ckpt = Checkpoints.open(new Checkpoints.Context().directory(dir));
        try (ParallelTrainer t = ParallelTrainer.launch(context(ParallelTrainerTest.mlp(new Adam(1e-2), 4), ckpt).workers(3))) {
            Checkpoints.CheckpointException e = assertThrows(Checkpoints.CheckpointException.class, () -> ckpt.restore(file, t));
            assertTrue(e.getMessage().contains("workers 2 vs 3"), e.getMessage());
        }
        try (ParallelTrainer t = ParallelTrainer.launch(context(ParallelTrainerTest.mlp(new Adam(5e-2), 4), ckpt))) {
            Checkpoints.CheckpointException e = assertThrows(Checkpoints.CheckpointException.class, () -> ckpt.restore(file, t));
            assertTrue(e.getMessage().contains("model configuration"), e.getMessage());
        }
    }
}
