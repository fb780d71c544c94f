package dev.poniard.bridge;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertInstanceOf;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.poniard.bridge.SameDiffPipeline.Schedule;
import dev.poniard.scheduler.comm.CommAbortedException;
import dev.poniard.scheduler.comm.CommException;
import dev.poniard.scheduler.comm.Communicator;
import dev.poniard.scheduler.comm.LocalCluster;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Random;
import java.util.concurrent.TimeUnit;
import java.util.function.Function;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.EnumSource;
import org.junit.jupiter.params.provider.ValueSource;
import org.nd4j.autodiff.samediff.SDVariable;
import org.nd4j.autodiff.samediff.SameDiff;
import org.nd4j.autodiff.samediff.TrainingConfig;
import org.nd4j.autodiff.samediff.VariableType;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.learning.config.Adam;
import org.nd4j.linalg.learning.config.IUpdater;
import org.nd4j.linalg.learning.config.Sgd;

/** {@link SameDiffPipeline} with its stages on two ranks of an in-JVM {@link LocalCluster} (Aeron IPC). */
@Timeout(value = 90, unit = TimeUnit.SECONDS, threadMode = Timeout.ThreadMode.SEPARATE_THREAD)
class SameDiffPipelineRanksTest {
    /** Ranks that notice a lost peer within a second (the defaults wait 3 s), and fail any operation after 30 s. */
    private static LocalCluster cluster() {
        return LocalCluster.launch(2, c -> c.alpha(5e-6).beta(2.5e-10).gamma(5e-10).heartbeatIntervalMs(100)
                .failureTimeoutMs(1000).operationTimeoutMs(30_000));
    }

    private static List<String> parameters(SameDiff sd) {
        List<String> params = new ArrayList<>();
        sd.variables().stream().filter(v -> v.getVariableType() == VariableType.VARIABLE).forEach(v -> params.add(v.name()));
        return params;
    }

    /**
     * 8 → h (tanh) → h (tanh) → 4, softmax cross-entropy: every activation before the output layer is h wide, so two
     * ranks that build it with different h disagree on whatever the cut hands over.
     */
    static SameDiff deepMlp(int hidden, DataType dt, IUpdater updater) {
        Random r = new Random(11);
        SameDiff sd = SameDiff.create();
        SDVariable in = sd.placeHolder("in", dt, -1, 8);
        SDVariable label = sd.placeHolder("label", dt, -1, 4);
        SDVariable h1 = sd.nn.tanh("h1", in.mmul(sd.var("w1", Models.randn(r, dt, 0.4, 8, hidden))));
        SDVariable h2 = sd.nn.tanh("h2", h1.mmul(sd.var("w2", Models.randn(r, dt, 0.3, hidden, hidden))));
        SDVariable out = h2.mmul(sd.var("w3", Models.randn(r, dt, 0.3, hidden, 4)));
        sd.loss.softmaxCrossEntropy("loss", label, out, null);
        sd.setTrainingConfig(TrainingConfig.builder().updater(updater).dataSetFeatureMapping("in")
                .dataSetLabelMapping("label").build());
        return sd;
    }

    static Map<String, INDArray> deepMlpBatch(int n, long seed, DataType dt) {
        Random r = new Random(seed);
        return Map.of("in", Models.randn(r, dt, 1, n, 8), "label", Models.oneHot(r, dt, n, 4));
    }

    /**
     * 10 steps of 10 examples in 4 micro-batches, stage 0 on rank 0 and stage 1 on rank 1, equal 10 full-batch fits:
     * the same loss every step on both ranks, and after gathering, the same parameters on both.
     */
    @ParameterizedTest(name = "{0}")
    @EnumSource(Schedule.class)
    void shouldEqualFullBatchFitAfterTenStepsWithStagesOnTwoRanks(Schedule schedule) {
        Models.Factory m = Models.all()[0];
        List<Map<String, INDArray>> batches = SameDiffDataParallelTest.batches(m, 10);
        SameDiff reference = m.build().apply(new Adam(1e-2));
        List<Double> expected = new ArrayList<>();
        for (Map<String, INDArray> b : batches) {
            expected.add(reference.output(b, "loss").get("loss").getDouble(0));
            reference.fit(new org.nd4j.linalg.dataset.DataSet(b.get("in"), b.get("label")));
        }
        SameDiff[] ranks = {m.build().apply(new Adam(1e-2)), m.build().apply(new Adam(1e-2))};
        try (LocalCluster cluster = cluster()) {
            List<double[]> losses = cluster.run(comm -> {
                double[] l = new double[batches.size()];
                try (SameDiffPipeline p = SameDiffPipeline.launch(new SameDiffPipeline.Context().sameDiff(ranks[comm.rank()])
                        .communicator(comm).microBatches(4).schedule(schedule).sample(m.batch().apply(2, 1L)))) {
                    assertEquals(2, p.stages().size(), "one stage per rank by default");
                    assertArrayEquals(new int[] {comm.rank()}, p.localStages());
                    for (int s = 0; s < batches.size(); s++) {
                        l[s] = p.step(batches.get(s));
                    }
                    p.gatherParameters();
                }
                return l;
            });
            for (int r = 0; r < 2; r++) {
                for (int s = 0; s < batches.size(); s++) {
                    assertEquals(expected.get(s), losses.get(r)[s], 1e-9 * Math.abs(expected.get(s)),
                            "loss of step " + s + " on rank " + r);
                }
            }
        }
        SameDiffDataParallelTest.assertSameParameters(reference, ranks[0], parameters(reference), SameDiffDataParallelTest.REL);
        for (String p : parameters(reference)) {
            assertEquals(ranks[0].getArrForVarName(p), ranks[1].getArrForVarName(p), "rank 1 differs on " + p);
        }
        assertEquals(batches.size(), ranks[1].getTrainingConfig().getIterationCount());
    }

    /**
     * A lopsided cut (one op on rank 0) re-cut by measured times while training: parameters and Adam state cross
     * between the ranks (and, with three stages on two ranks, between two stages of one rank), both ranks cut alike,
     * and the ten steps still equal ten full-batch fits.
     */
    @ParameterizedTest(name = "placement {0}")
    @ValueSource(strings = {"0,1", "0,1,0"})
    void shouldRecutAcrossRanksAndStillEqualFullBatchFit(String placement) {
        int[] ranksOfStages = java.util.Arrays.stream(placement.split(",")).mapToInt(Integer::parseInt).toArray();
        Models.Factory m = Models.all()[0];
        List<Map<String, INDArray>> batches = SameDiffDataParallelTest.batches(m, 64);
        SameDiff reference = m.build().apply(new Adam(1e-2));
        SameDiffDataParallelTest.fitReference(reference, batches);
        SameDiff[] ranks = {m.build().apply(new Adam(1e-2)), m.build().apply(new Adam(1e-2))};
        int ops = SameDiffDag.importGraph(ranks[0]).ops().size();
        try (LocalCluster cluster = cluster()) {
            List<String> cuts = cluster.run(comm -> {
                // one op on stage 0, one on stage 1 with three stages (two of them on rank 0), the rest on the last
                int[] cut = ranksOfStages.length == 2 ? new int[] {0, 1, ops} : new int[] {0, 1, 2, ops};
                try (SameDiffPipeline p = SameDiffPipeline.launch(new SameDiffPipeline.Context()
                        .sameDiff(ranks[comm.rank()]).communicator(comm).cut(cut).placement(ranksOfStages)
                        .microBatches(4).rebalanceEvery(3).sample(m.batch().apply(16, 1L)))) {
                    batches.forEach(p::step);
                    p.gatherParameters();
                    assertTrue(p.rebalances() >= 1, "never re-cut on rank " + comm.rank());
                    return p.stages().stream().map(st -> "[" + st.firstOp() + ", " + st.endOp() + ")").toList()
                            .toString();
                }
            });
            assertEquals(cuts.get(0), cuts.get(1), "the ranks cut differently");
        }
        for (SameDiff r : ranks) {
            SameDiffDataParallelTest.assertSameParameters(reference, r, parameters(reference), SameDiffDataParallelTest.REL);
        }
    }

    /** Stage 0 on rank 1 and stage 1 on rank 0; a CNN whose cut hands over a 4-d activation. */
    @Test
    void shouldFollowAGivenPlacement() {
        Models.Factory m = Models.all()[1];
        List<Map<String, INDArray>> batches = SameDiffDataParallelTest.batches(m, 8);
        SameDiff reference = m.build().apply(new Adam(1e-2));
        SameDiffDataParallelTest.fitReference(reference, batches);
        SameDiff[] ranks = {m.build().apply(new Adam(1e-2)), m.build().apply(new Adam(1e-2))};
        try (LocalCluster cluster = cluster()) {
            cluster.run(comm -> {
                try (SameDiffPipeline p = SameDiffPipeline.launch(new SameDiffPipeline.Context().sameDiff(ranks[comm.rank()])
                        .communicator(comm).placement(1, 0).microBatches(3).schedule(Schedule.ONE_F_ONE_B)
                        .sample(m.batch().apply(2, 1L)))) {
                    assertArrayEquals(new int[] {1 - comm.rank()}, p.localStages());
                    batches.forEach(p::step);
                    p.gatherParameters();
                }
                return null;
            });
        }
        SameDiffDataParallelTest.assertSameParameters(reference, ranks[1], parameters(reference), SameDiffDataParallelTest.REL);
    }

    /**
     * Rank 1 builds the graph with other hidden widths, or in FLOAT while rank 0 uses DOUBLE: the receiving rank
     * names the activation, what it expected and what arrived; the sending rank learns of it through the abort
     * instead of waiting forever.
     */
    @ParameterizedTest(name = "{0}")
    @ValueSource(strings = {"shape", "dtype"})
    void shouldFailOnBothRanksNamingAMismatchedActivation(String mismatch) {
        try (LocalCluster cluster = cluster()) {
            List<RuntimeException> errors = cluster.run(comm -> {
                int r = comm.rank();
                int hidden = r == 1 && mismatch.equals("shape") ? 12 : 16;
                DataType dt = r == 1 && mismatch.equals("dtype") ? DataType.FLOAT : DataType.DOUBLE;
                try (SameDiffPipeline p = SameDiffPipeline.launch(new SameDiffPipeline.Context()
                        .sameDiff(deepMlp(hidden, dt, new Sgd(0.1))).communicator(comm).microBatches(2)
                        .sample(deepMlpBatch(2, 1L, dt)))) {
                    RuntimeException e = assertThrows(RuntimeException.class, () -> p.step(deepMlpBatch(8, 2L, dt)));
                    // Once failed, the pipeline says so instead of sending into a broken job.
                    IllegalStateException again = assertThrows(IllegalStateException.class, () -> p.step(deepMlpBatch(8, 3L, dt)));
                    assertTrue(again.getMessage().contains("a previous step"), again.getMessage());
                    return e;
                }
            });
            System.out.println("rank 1: " + errors.get(1) + "\nrank 0: " + errors.get(0));
            RuntimeException receiver = errors.get(1);
            assertInstanceOf(IllegalStateException.class, receiver, () -> "rank 1: " + receiver);
            String msg = receiver.getMessage();
            assertTrue(msg.contains("stage 1 on rank 1 expected the activation '") && msg.contains("from stage 0 on rank 0"), msg);
            assertTrue(msg.contains(mismatch.equals("shape") ? "DOUBLE [-1, 12]" : "FLOAT [-1, 16]"), msg);
            assertTrue(msg.contains("arrived as DOUBLE [4, 16]"), msg);
            RuntimeException sender = errors.get(0);
            CommAbortedException aborted = assertInstanceOf(CommAbortedException.class, sender, () -> "rank 0: " + sender);
            assertEquals(1, aborted.originRank());
            assertTrue(aborted.getMessage().contains("expected the activation"), aborted.getMessage());
        }
    }

    /** Rank 1 leaves after one step (its communicator closes, as when its process exits); rank 0's next step fails. */
    @Test
    void shouldFailTheNextStepNamingAPeerThatLeft() {
        Models.Factory m = Models.all()[0];
        try (LocalCluster cluster = cluster()) {
            List<RuntimeException> errors = cluster.run(comm -> {
                try (SameDiffPipeline p = SameDiffPipeline.launch(new SameDiffPipeline.Context()
                        .sameDiff(m.build().apply(new Sgd(0.1))).communicator(comm).microBatches(2)
                        .sample(m.batch().apply(2, 1L)))) {
                    p.step(m.batch().apply(6, 2L));
                    if (comm.rank() == 1) {
                        comm.close();
                        return null;
                    }
                    long t0 = System.nanoTime();
                    CommException e = assertThrows(CommException.class, () -> p.step(m.batch().apply(6, 3L)));
                    double secs = (System.nanoTime() - t0) / 1e9;
                    assertTrue(secs < 20, "rank 0 took " + secs + " s to notice");
                    return e;
                }
            });
            RuntimeException e = errors.get(0);
            assertNotNull(e);
            System.out.println("rank 0: " + e);
            assertTrue(e.getMessage().contains("rank 1"), e.getMessage());
        }
    }

    /** Rank 1 is handed a batch it refuses before any task runs; rank 0, already waiting for it, fails with the reason. */
    @Test
    void shouldFailBothRanksWhenOneRefusesItsBatch() {
        Models.Factory m = Models.all()[0];
        try (LocalCluster cluster = cluster()) {
            List<RuntimeException> errors = cluster.run(comm -> {
                try (SameDiffPipeline p = SameDiffPipeline.launch(new SameDiffPipeline.Context()
                        .sameDiff(m.build().apply(new Sgd(0.1))).communicator(comm).microBatches(2)
                        .sample(m.batch().apply(2, 1L)))) {
                    Map<String, INDArray> batch = new java.util.HashMap<>(m.batch().apply(6, 2L));
                    if (comm.rank() == 1) {
                        batch.put("labels", batch.get("label"));
                    }
                    return assertThrows(RuntimeException.class, () -> p.step(batch));
                }
            });
            assertInstanceOf(IllegalArgumentException.class, errors.get(1));
            assertTrue(errors.get(1).getMessage().contains("'labels' is not a placeholder"), errors.get(1).getMessage());
            CommAbortedException e = assertInstanceOf(CommAbortedException.class, errors.get(0), () -> "rank 0: " + errors.get(0));
            assertTrue(e.getMessage().contains("rank 1 refused the batch of step 0"), e.getMessage());
        }
    }

    @Test
    void shouldRefuseRanksThatDisagreeOnTheSchedule() {
        Models.Factory m = Models.all()[0];
        try (LocalCluster cluster = cluster()) {
            List<RuntimeException> errors = cluster.run(comm -> {
                Function<Integer, SameDiffPipeline.Context> ctx = micro -> new SameDiffPipeline.Context()
                        .sameDiff(m.build().apply(new Sgd(0.1))).communicator(comm).microBatches(micro)
                        .sample(m.batch().apply(2, 1L));
                return assertThrows(IllegalStateException.class,
                        () -> SameDiffPipeline.launch(ctx.apply(comm.rank() == 0 ? 4 : 2)).close());
            });
            for (RuntimeException e : errors) {
                assertTrue(e.getMessage().contains("disagree on the pipeline's microBatches"), e.getMessage());
            }
        }
    }

    @Test
    void shouldRejectABadPlacementNamingIt() {
        Models.Factory m = Models.all()[0];
        SameDiff sd = m.build().apply(new Sgd(0.1));
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> SameDiffPipeline.launch(
                new SameDiffPipeline.Context().sameDiff(sd).stages(2).placement(0).sample(m.batch().apply(2, 1L))));
        assertTrue(e.getMessage().contains("placement names 1 ranks but there are 2 stages"), e.getMessage());
        e = assertThrows(IllegalArgumentException.class, () -> SameDiffPipeline.launch(
                new SameDiffPipeline.Context().sameDiff(sd).stages(2).placement(0, 1).sample(m.batch().apply(2, 1L))));
        assertTrue(e.getMessage().contains("placement names rank 1 but the ranks are 0..0 (no communicator"), e.getMessage());
        e = assertThrows(IllegalArgumentException.class, () -> SameDiffPipeline.launch(
                new SameDiffPipeline.Context().sameDiff(sd).tagBase(-5).sample(m.batch().apply(2, 1L))));
        assertTrue(e.getMessage().contains("tagBase must be >= 0, got -5"), e.getMessage());
    }

    /** A communicator of one rank puts every stage on that rank: nothing is sent, and the result is the in-process one. */
    @Test
    void shouldRunAllStagesOnOneRankOfAOneRankCommunicator() {
        Models.Factory m = Models.all()[0];
        List<Map<String, INDArray>> batches = SameDiffDataParallelTest.batches(m, 8);   // 2 per micro-batch
        SameDiff reference = m.build().apply(new Adam(1e-2));
        SameDiffDataParallelTest.fitReference(reference, batches);
        SameDiff trained = m.build().apply(new Adam(1e-2));
        try (LocalCluster cluster = LocalCluster.launch(1)) {
            Communicator comm = cluster.comm(0);
            try (SameDiffPipeline p = SameDiffPipeline.launch(new SameDiffPipeline.Context().sameDiff(trained)
                    .communicator(comm).stages(2).sample(m.batch().apply(2, 1L)))) {
                assertArrayEquals(new int[] {0, 1}, p.localStages());
                batches.forEach(p::step);
            }
        }
        SameDiffDataParallelTest.assertSameParameters(reference, trained, parameters(reference), SameDiffDataParallelTest.REL);
    }
}
