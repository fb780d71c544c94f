package dev.poniard.bridge;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;

import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.CyclicBarrier;
import java.util.concurrent.TimeUnit;
import java.util.stream.Stream;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.Arguments;
import org.junit.jupiter.params.provider.MethodSource;
import org.nd4j.autodiff.samediff.SDVariable;
import org.nd4j.autodiff.samediff.SameDiff;
import org.nd4j.autodiff.samediff.TrainingConfig;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.dataset.DataSet;
import org.nd4j.linalg.factory.Nd4j;
import org.nd4j.linalg.indexing.NDArrayIndex;
import org.nd4j.linalg.learning.config.Adam;
import org.nd4j.linalg.learning.config.IUpdater;
import org.nd4j.linalg.learning.config.Sgd;

@Timeout(value = 120, unit = TimeUnit.SECONDS, threadMode = Timeout.ThreadMode.SEPARATE_THREAD)
class SameDiffDataParallelTest {
    static final int STEPS = 10;
    static final double REL = 1e-5;

    static Stream<Arguments> modelsAndUpdaters() {
        List<Arguments> a = new ArrayList<>();
        for (Models.Factory m : Models.all()) {
            a.add(Arguments.of(m, "adam"));
            a.add(Arguments.of(m, "sgd"));
        }
        return a.stream();
    }

    static IUpdater updater(String name) {
        return name.equals("adam") ? new Adam(1e-2) : new Sgd(0.1);
    }

    /** 10 global batches of 10 examples: over 3 workers the shards are 4, 3, 3. */
    static List<Map<String, INDArray>> batches(Models.Factory m, int size) {
        List<Map<String, INDArray>> b = new ArrayList<>();
        for (int s = 0; s < STEPS; s++) {
            b.add(m.batch().apply(size, 100L + s));
        }
        return b;
    }

    static void fitReference(SameDiff sd, List<Map<String, INDArray>> batches) {
        for (Map<String, INDArray> b : batches) {
            sd.fit(new DataSet(b.get("in"), b.get("label")));
        }
    }

    /** Element-wise |a − b| ≤ rel·|b| + a tiny absolute floor for elements that are (nearly) zero. */
    static void assertClose(String what, INDArray expected, INDArray actual, double rel) {
        assertEquals(java.util.Arrays.toString(expected.shape()), java.util.Arrays.toString(actual.shape()), what + " shape");
        double[] e = expected.dup().data().asDouble();
        double[] g = actual.dup().data().asDouble();
        for (int i = 0; i < e.length; i++) {
            if (Math.abs(e[i] - g[i]) > rel * Math.abs(e[i]) + 1e-12) {
                fail(what + "[" + i + "]: expected " + e[i] + " but got " + g[i] + " (relative error "
                        + Math.abs(e[i] - g[i]) / Math.abs(e[i]) + ")");
            }
        }
    }

    static void assertSameParameters(SameDiff expected, SameDiff actual, List<String> params, double rel) {
        for (String p : params) {
            assertClose(p, expected.getArrForVarName(p), actual.getArrForVarName(p), rel);
        }
    }

    @ParameterizedTest(name = "{0} {1}")
    @MethodSource("modelsAndUpdaters")
    void shouldEqualFullBatchFitAfterTenStepsWithUnevenShards(Models.Factory m, String updater) {
        List<Map<String, INDArray>> batches = batches(m, 10);
        SameDiff reference = m.build().apply(updater(updater));
        SameDiff trained = m.build().apply(updater(updater));
        List<Double> expectedLosses = new ArrayList<>();
        for (Map<String, INDArray> b : batches) {
            expectedLosses.add(reference.output(b, "loss").get("loss").getDouble(0));
            reference.fit(new DataSet(b.get("in"), b.get("label")));
        }

        try (SameDiffDataParallel dp = SameDiffDataParallel.launch(new SameDiffDataParallel.Context()
                .sameDiff(trained).workers(3))) {
            for (int s = 0; s < STEPS; s++) {
                double loss = dp.step(batches.get(s));
                assertEquals(expectedLosses.get(s), loss, 1e-9 * Math.abs(expectedLosses.get(s)), "loss of step " + s);
            }
            assertEquals(STEPS, trained.getTrainingConfig().getIterationCount());
            assertSameParameters(reference, trained, dp.parameters(), REL);
            // Every replica holds the same parameters, bit for bit.
            dp.syncReplicas();
            for (int r = 1; r < 3; r++) {
                for (String p : dp.parameters()) {
                    assertEquals(trained.getArrForVarName(p), dp.replica(r).getArrForVarName(p), "replica " + r + " " + p);
                }
            }
            // Training moved the parameters well beyond the tolerance, so the comparison above is not vacuous.
            SameDiff initial = m.build().apply(updater(updater));
            double moved = 0;
            for (String p : dp.parameters()) {
                moved = Math.max(moved, initial.getArrForVarName(p).sub(trained.getArrForVarName(p)).amaxNumber().doubleValue());
            }
            assertTrue(moved > 1e-3, "parameters moved only " + moved);
        }
    }

    /**
     * The same comparison in single precision. Shards sum in another order than the full batch, so float rounding
     * differs by a few ulps and Adam divides small gradients by small moments: an element near zero can drift by more
     * than 1e-5 of itself, so the bound here is 1e-5 of each parameter array's largest magnitude.
     */
    @ParameterizedTest(name = "{0}")
    @MethodSource("dev.poniard.bridge.SameDiffDagTest#models")
    void shouldEqualFullBatchFitInSinglePrecision(Models.Factory m) {
        DataType f = DataType.FLOAT;
        List<Map<String, INDArray>> batches = new ArrayList<>();
        for (int s = 0; s < STEPS; s++) {
            batches.add(m.batcher().batch(10, 100L + s, f));
        }
        SameDiff reference = m.builder().build(new Adam(1e-2), f);
        fitReference(reference, batches);
        SameDiff trained = m.builder().build(new Adam(1e-2), f);
        try (SameDiffDataParallel dp = SameDiffDataParallel.launch(new SameDiffDataParallel.Context()
                .sameDiff(trained).workers(3))) {
            batches.forEach(dp::step);
            double worst = 0;
            for (String p : dp.parameters()) {
                INDArray e = reference.getArrForVarName(p).castTo(DataType.DOUBLE);
                INDArray g = trained.getArrForVarName(p).castTo(DataType.DOUBLE);
                worst = Math.max(worst, e.sub(g).amaxNumber().doubleValue() / e.amaxNumber().doubleValue());
            }
            System.out.println(m + " float32: largest error relative to the array's magnitude " + worst);
            assertTrue(worst <= REL, m + ": parameters differ by " + worst + " of their magnitude");
        }
    }

    @ParameterizedTest(name = "{0}")
    @MethodSource("dev.poniard.bridge.SameDiffDagTest#models")
    void shouldCombineShardGradientsIntoTheFullBatchGradient(Models.Factory m) {
        Map<String, INDArray> batch = m.batch().apply(7, 5L);
        SameDiff sd = m.build().apply(new Sgd(0.1));
        try (SameDiffDataParallel dp = SameDiffDataParallel.launch(new SameDiffDataParallel.Context().sameDiff(sd).workers(2))) {
            Map<String, INDArray> expected = m.build().apply(new Sgd(0.1)).calculateGradients(batch, dp.parameters());
            Map<String, INDArray> got = dp.calculateGradients(batch);
            for (String p : dp.parameters()) {
                assertClose("gradient of " + p, expected.get(p), got.get(p), 1e-9);
            }
            // Plain (unweighted) averaging of the 4- and 3-example shards would be wrong: the shards differ.
            Map<String, INDArray> first = m.build().apply(new Sgd(0.1)).calculateGradients(
                    slice(batch, 0, 4), dp.parameters());
            Map<String, INDArray> second = m.build().apply(new Sgd(0.1)).calculateGradients(
                    slice(batch, 4, 7), dp.parameters());
            String p0 = dp.parameters().get(0);
            INDArray naive = first.get(p0).add(second.get(p0)).muli(0.5);
            assertTrue(naive.sub(expected.get(p0)).amaxNumber().doubleValue() > 1e-6, "the test batch cannot tell weightings apart");
        }
    }

    static Map<String, INDArray> slice(Map<String, INDArray> batch, long from, long to) {
        Map<String, INDArray> s = new java.util.HashMap<>();
        batch.forEach((k, v) -> {
            org.nd4j.linalg.indexing.INDArrayIndex[] idx = new org.nd4j.linalg.indexing.INDArrayIndex[v.rank()];
            idx[0] = NDArrayIndex.interval(from, to);
            for (int d = 1; d < idx.length; d++) {
                idx[d] = NDArrayIndex.all();
            }
            s.put(k, v.get(idx).dup());
        });
        return s;
    }

    @Test
    void shouldIdleWorkersBeyondTheExampleCount() {
        // Idle workers mean one-example shards; SameDiff M2.1's own calculateGradients fails on one-example batches of
        // the MLP and the CNN (a legacy reduction in a bias gradient), so this uses the transformer.
        Models.Factory m = Models.all()[2];
        List<Map<String, INDArray>> batches = batches(m, 2);
        SameDiff reference = m.build().apply(new Adam(1e-2));
        fitReference(reference, batches);
        SameDiff trained = m.build().apply(new Adam(1e-2));
        try (SameDiffDataParallel dp = SameDiffDataParallel.launch(new SameDiffDataParallel.Context().sameDiff(trained).workers(3))) {
            batches.forEach(dp::step);
            assertSameParameters(reference, trained, dp.parameters(), REL);
        }
    }

    @Test
    void shouldTrainFromDataSetsWithTheTrainingConfigMapping() {
        Models.Factory m = Models.all()[0];
        List<Map<String, INDArray>> batches = batches(m, 9);
        SameDiff reference = m.build().apply(new Adam(1e-2));
        fitReference(reference, batches);
        SameDiff trained = m.build().apply(new Adam(1e-2));
        try (SameDiffDataParallel dp = SameDiffDataParallel.launch(new SameDiffDataParallel.Context().sameDiff(trained).workers(2))) {
            for (Map<String, INDArray> b : batches) {
                dp.fit(new DataSet(b.get("in"), b.get("label")));
            }
            assertSameParameters(reference, trained, dp.parameters(), REL);
        }
    }

    /** Two in-process "ranks", each with its own instance and half of every global batch, summing through a barrier. */
    static final class BarrierExchange {
        private final CyclicBarrier barrier;
        private final INDArray[] slots;

        BarrierExchange(int ranks) {
            slots = new INDArray[ranks];
            barrier = new CyclicBarrier(ranks);
        }

        GradientExchange rank(int r) {
            return new GradientExchange() {
                @Override
                public int rank() {
                    return r;
                }

                @Override
                public int worldSize() {
                    return slots.length;
                }

                @Override
                public void allReduceSum(INDArray buffer) {
                    try {
                        slots[r] = buffer.dup();
                        barrier.await(30, TimeUnit.SECONDS);
                        INDArray sum = slots[0].dup();
                        for (int k = 1; k < slots.length; k++) {
                            sum.addi(slots[k]);                    // rank order: identical on every rank
                        }
                        barrier.await(30, TimeUnit.SECONDS);
                        buffer.assign(sum);
                    } catch (Exception e) {
                        throw new IllegalStateException("exchange of rank " + r + " failed", e);
                    }
                }
            };
        }
    }

    @Test
    void shouldEqualFullBatchFitWhenRanksSumThroughTheExchange() throws Exception {
        Models.Factory m = Models.all()[2];
        List<Map<String, INDArray>> batches = batches(m, 11);          // rank 0 gets 6 examples, rank 1 gets 5
        SameDiff reference = m.build().apply(new Adam(1e-2));
        fitReference(reference, batches);

        BarrierExchange exchange = new BarrierExchange(2);
        SameDiff[] ranks = {m.build().apply(new Adam(1e-2)), m.build().apply(new Adam(1e-2))};
        List<CompletableFuture<Void>> runs = new ArrayList<>();
        for (int r = 0; r < 2; r++) {
            int rank = r;
            runs.add(CompletableFuture.runAsync(() -> {
                try (SameDiffDataParallel dp = SameDiffDataParallel.launch(new SameDiffDataParallel.Context()
                        .sameDiff(ranks[rank]).workers(2).exchange(exchange.rank(rank)))) {
                    for (Map<String, INDArray> b : batches) {
                        dp.step(rank == 0 ? slice(b, 0, 6) : slice(b, 6, 11));
                    }
                }
            }));
        }
        for (CompletableFuture<Void> f : runs) {
            f.get(100, TimeUnit.SECONDS);
        }
        List<String> params = new ArrayList<>();
        ranks[0].variables().stream().filter(v -> v.getVariableType() == org.nd4j.autodiff.samediff.VariableType.VARIABLE)
                .forEach(v -> params.add(v.name()));
        assertSameParameters(reference, ranks[0], params, REL);
        for (String p : params) {
            assertEquals(ranks[0].getArrForVarName(p), ranks[1].getArrForVarName(p), "rank 1 drifted on " + p);
        }
    }

    /** Two ranks over Aeron IPC (a LocalCluster in this JVM), each with 2 workers and its part of every batch. */
    @Test
    void shouldEqualFullBatchFitWhenRanksAllReduceOverTheCommunicator() {
        Models.Factory m = Models.all()[0];
        List<Map<String, INDArray>> batches = batches(m, 12);          // rank 0 gets rows 0..6, rank 1 rows 7..11
        SameDiff reference = m.build().apply(new Adam(1e-2));
        fitReference(reference, batches);
        SameDiff[] ranks = {m.build().apply(new Adam(1e-2)), m.build().apply(new Adam(1e-2))};
        try (dev.poniard.scheduler.comm.LocalCluster cluster = dev.poniard.scheduler.comm.LocalCluster.launch(2)) {
            cluster.run(comm -> {
                int r = comm.rank();
                try (SameDiffDataParallel dp = SameDiffDataParallel.launch(new SameDiffDataParallel.Context()
                        .sameDiff(ranks[r]).workers(2).exchange(new CommunicatorExchange(comm)))) {
                    for (Map<String, INDArray> b : batches) {
                        dp.step(r == 0 ? slice(b, 0, 7) : slice(b, 7, 12));
                    }
                }
                return null;
            });
        }
        List<String> params = new ArrayList<>(SameDiffDag.gradientNames(ranks[0]).keySet());
        assertSameParameters(reference, ranks[0], params, REL);
        for (String p : params) {
            assertEquals(ranks[0].getArrForVarName(p), ranks[1].getArrForVarName(p), "rank 1 drifted on " + p);
        }
    }

    /** A summed loss with L2 and weight decay: LossReduction.SUM adds shard gradients unscaled; MEAN would be wrong. */
    @Test
    void shouldEqualFullBatchFitForASummedLossWithRegularization() {
        List<Map<String, INDArray>> batches = new ArrayList<>();
        for (int s = 0; s < STEPS; s++) {
            batches.add(Models.regressionBatch(10, 300L + s));
        }
        SameDiff reference = Models.summedRegularized(new Adam(1e-2));
        fitReference(reference, batches);
        for (LossReduction reduction : LossReduction.values()) {
            SameDiff trained = Models.summedRegularized(new Adam(1e-2));
            try (SameDiffDataParallel dp = SameDiffDataParallel.launch(new SameDiffDataParallel.Context().sameDiff(trained)
                    .workers(3).lossReduction(reduction))) {
                batches.forEach(dp::step);
                if (reduction == LossReduction.SUM) {
                    assertSameParameters(reference, trained, dp.parameters(), REL);
                } else {
                    double diff = reference.getArrForVarName("w1").sub(trained.getArrForVarName("w1")).amaxNumber().doubleValue();
                    assertTrue(diff > 1e-4, "MEAN weighting of a summed loss should differ, but differs by only " + diff);
                }
            }
        }
    }

    @Test
    void shouldSplitParametersIntoBucketsOfSimilarSize() {
        assertEquals("[0, 2, 4]", java.util.Arrays.toString(SameDiffDataParallel.buckets(new long[] {0, 10, 20, 30, 40}, 2)));
        assertEquals("[0, 1, 3]", java.util.Arrays.toString(SameDiffDataParallel.buckets(new long[] {0, 100, 101, 102}, 2)));
        assertEquals("[0, 1, 2]", java.util.Arrays.toString(SameDiffDataParallel.buckets(new long[] {0, 5, 9}, 8)));
        assertEquals("[0, 3]", java.util.Arrays.toString(SameDiffDataParallel.buckets(new long[] {0, 5, 9, 12}, 1)));
    }

    @Test
    void shouldRejectBadConfigurationNamingTheValue() {
        SameDiff sd = Models.mlp(new Sgd(0.1));
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> SameDiffDataParallel.launch(new SameDiffDataParallel.Context().sameDiff(sd).workers(0)));
        assertTrue(e.getMessage().contains("workers must be >= 1, got 0"), e.getMessage());
        e = assertThrows(IllegalArgumentException.class, () -> SameDiffDataParallel.launch(new SameDiffDataParallel.Context()));
        assertTrue(e.getMessage().contains("sameDiff must be set"), e.getMessage());

        SameDiff untrained = SameDiff.create();
        SDVariable in = untrained.placeHolder("in", Models.DT, -1, 2);
        in.mmul(untrained.var("w", Nd4j.ones(Models.DT, 2, 2))).sum("loss");
        untrained.setLossVariables("loss");
        e = assertThrows(IllegalArgumentException.class,
                () -> SameDiffDataParallel.launch(new SameDiffDataParallel.Context().sameDiff(untrained)));
        assertTrue(e.getMessage().contains("setTrainingConfig"), e.getMessage());

        e = assertThrows(IllegalArgumentException.class,
                () -> SameDiffDataParallel.launch(new SameDiffDataParallel.Context().sameDiff(sd).unsharded("w1")));
        assertTrue(e.getMessage().contains("'w1'"), e.getMessage());
    }

    @Test
    void shouldRejectBatchesWhosePlaceholdersDisagreeOnRows() {
        SameDiff sd = Models.mlp(new Sgd(0.1));
        try (SameDiffDataParallel dp = SameDiffDataParallel.launch(new SameDiffDataParallel.Context().sameDiff(sd).workers(2))) {
            Map<String, INDArray> bad = Map.of("in", Nd4j.rand(Models.DT, 6, 8), "label", Models.oneHot(new java.util.Random(1), 5, 4));
            IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> dp.step(bad));
            assertTrue(e.getMessage().contains("rows"), e.getMessage());
            e = assertThrows(IllegalArgumentException.class, () -> dp.step(Map.of("nope", Nd4j.rand(Models.DT, 6, 8))));
            assertTrue(e.getMessage().contains("'nope' is not a placeholder"), e.getMessage());
            assertEquals(0, dp.steps());
        }
    }

    @Test
    void shouldRefuseAGraphWithoutGradientAtLaunch() {
        SameDiff sd = SameDiff.create();
        SDVariable in = sd.placeHolder("in", Models.DT, -1, 4);
        SDVariable h = sd.mmul("h", in, sd.var("w", Nd4j.rand(Models.DT, 4, 3)));
        sd.gatherNd("picked", h, sd.constant("idx", Nd4j.createFromArray(new int[][] {{0, 1}}))).sum("loss");
        sd.setLossVariables("loss");
        sd.setTrainingConfig(TrainingConfig.builder().updater(new Sgd(0.1)).dataSetFeatureMapping("in")
                .markLabelsUnused().build());
        UnsupportedGraphException e = assertThrows(UnsupportedGraphException.class,
                () -> SameDiffDataParallel.launch(new SameDiffDataParallel.Context().sameDiff(sd)));
        assertTrue(e.getMessage().contains("gather_nd"), e.getMessage());
    }
}
