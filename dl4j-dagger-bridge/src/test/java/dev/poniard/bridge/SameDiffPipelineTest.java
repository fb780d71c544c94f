package dev.poniard.bridge;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.poniard.bridge.SameDiffPipeline.Schedule;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicLong;
import java.util.stream.Stream;
import org.junit.jupiter.api.Tag;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.Arguments;
import org.junit.jupiter.params.provider.EnumSource;
import org.junit.jupiter.params.provider.MethodSource;
import org.nd4j.autodiff.listeners.At;
import org.nd4j.autodiff.listeners.BaseListener;
import org.nd4j.autodiff.listeners.Operation;
import org.nd4j.autodiff.samediff.SameDiff;
import org.nd4j.autodiff.samediff.internal.SameDiffOp;
import org.nd4j.linalg.api.ops.OpContext;
import org.nd4j.linalg.dataset.api.MultiDataSet;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.dataset.DataSet;
import org.nd4j.linalg.learning.config.Adam;
import org.nd4j.linalg.learning.config.Sgd;

@Timeout(value = 120, unit = TimeUnit.SECONDS, threadMode = Timeout.ThreadMode.SEPARATE_THREAD)
class SameDiffPipelineTest {
    static Stream<Arguments> adamCases() {
        return cases("adam");
    }

    static Stream<Arguments> sgdCases() {
        return cases("sgd");
    }

    static Stream<Arguments> cases(String updater) {
        List<Arguments> a = new ArrayList<>();
        for (Models.Factory m : Models.all()) {
            for (Schedule s : Schedule.values()) {
                a.add(Arguments.of(m, s, updater));
            }
        }
        return a.stream();
    }

    static SameDiffPipeline launch(SameDiff sd, Models.Factory m, int stages, int micro, Schedule schedule) {
        return SameDiffPipeline.launch(new SameDiffPipeline.Context().sameDiff(sd).stages(stages).microBatches(micro)
                .schedule(schedule).sample(m.batch().apply(2, 1L)));
    }

    /** SGD variants of {@link #shouldEqualFullBatchFitAfterTenSteps} (slow: 6 more 10-step runs). */
    @Tag("slow")
    @ParameterizedTest(name = "{0} {1} {2}")
    @MethodSource("sgdCases")
    void shouldEqualFullBatchFitAfterTenStepsWithSgd(Models.Factory m, Schedule schedule, String updater) {
        shouldEqualFullBatchFitAfterTenSteps(m, schedule, updater);
    }

    /** 10 steps of 10 examples in 4 micro-batches (3, 3, 2, 2) over 2 stages equal 10 full-batch fits. */
    @ParameterizedTest(name = "{0} {1} {2}")
    @MethodSource("adamCases")
    void shouldEqualFullBatchFitAfterTenSteps(Models.Factory m, Schedule schedule, String updater) {
        List<Map<String, INDArray>> batches = SameDiffDataParallelTest.batches(m, 10);
        SameDiff reference = m.build().apply(SameDiffDataParallelTest.updater(updater));
        SameDiff trained = m.build().apply(SameDiffDataParallelTest.updater(updater));
        List<Double> expectedLosses = new ArrayList<>();
        for (Map<String, INDArray> b : batches) {
            expectedLosses.add(reference.output(b, "loss").get("loss").getDouble(0));
            reference.fit(new DataSet(b.get("in"), b.get("label")));
        }
        try (SameDiffPipeline p = launch(trained, m, 2, 4, schedule)) {
            assertEquals(2, p.stages().size());
            for (int s = 0; s < SameDiffDataParallelTest.STEPS; s++) {
                double loss = p.step(batches.get(s));
                assertEquals(expectedLosses.get(s), loss, 1e-9 * Math.abs(expectedLosses.get(s)), "loss of step " + s);
            }
            List<String> params = new ArrayList<>();
            trained.variables().stream().filter(v -> v.getVariableType() == org.nd4j.autodiff.samediff.VariableType.VARIABLE)
                    .forEach(v -> params.add(v.name()));
            SameDiffDataParallelTest.assertSameParameters(reference, trained, params, SameDiffDataParallelTest.REL);
            assertEquals(SameDiffDataParallelTest.STEPS, trained.getTrainingConfig().getIterationCount());
        }
    }

    @ParameterizedTest(name = "{0}")
    @MethodSource("dev.poniard.bridge.SameDiffDagTest#models")
    void shouldEqualFullBatchFitWithThreeStages(Models.Factory m) {
        List<Map<String, INDArray>> batches = SameDiffDataParallelTest.batches(m, 12);
        SameDiff reference = m.build().apply(new Adam(1e-2));
        SameDiffDataParallelTest.fitReference(reference, batches);
        SameDiff trained = m.build().apply(new Adam(1e-2));
        try (SameDiffPipeline p = launch(trained, m, 3, 3, Schedule.ONE_F_ONE_B)) {
            batches.forEach(p::step);
        }
        List<String> params = new ArrayList<>();
        trained.variables().stream().filter(v -> v.getVariableType() == org.nd4j.autodiff.samediff.VariableType.VARIABLE)
                .forEach(v -> params.add(v.name()));
        SameDiffDataParallelTest.assertSameParameters(reference, trained, params, SameDiffDataParallelTest.REL);
    }

    @Test
    void shouldEqualFullBatchFitForASummedLossWithRegularization() {
        List<Map<String, INDArray>> batches = new ArrayList<>();
        for (int s = 0; s < SameDiffDataParallelTest.STEPS; s++) {
            batches.add(Models.regressionBatch(10, 300L + s));
        }
        SameDiff reference = Models.summedRegularized(new Adam(1e-2));
        SameDiffDataParallelTest.fitReference(reference, batches);
        SameDiff trained = Models.summedRegularized(new Adam(1e-2));
        try (SameDiffPipeline p = SameDiffPipeline.launch(new SameDiffPipeline.Context().sameDiff(trained).stages(2)
                .microBatches(4).schedule(Schedule.GPIPE).lossReduction(LossReduction.SUM)
                .sample(Models.regressionBatch(2, 1L)))) {
            batches.forEach(p::step);
        }
        SameDiffDataParallelTest.assertSameParameters(reference, trained,
                new ArrayList<>(SameDiffDag.gradientNames(reference).keySet()), SameDiffDataParallelTest.REL);
    }

    static Stream<Arguments> modelsAndSchedules() {
        List<Arguments> a = new ArrayList<>();
        for (Models.Factory m : Models.all()) {
            for (Schedule s : Schedule.values()) {
                a.add(Arguments.of(m, s));
            }
        }
        return a.stream();
    }

    /** Keeping the forward values (the default) and recomputing the forward train alike, and both as sd.fit. */
    @ParameterizedTest(name = "{0} {1}")
    @MethodSource("modelsAndSchedules")
    void shouldTrainAlikeWithAndWithoutRecomputingTheForward(Models.Factory m, Schedule schedule) {
        List<Map<String, INDArray>> batches = SameDiffDataParallelTest.batches(m, 10);
        SameDiff reference = m.build().apply(new Adam(1e-2));
        SameDiffDataParallelTest.fitReference(reference, batches);
        SameDiff kept = m.build().apply(new Adam(1e-2));
        SameDiff recomputed = m.build().apply(new Adam(1e-2));
        List<Double> keptLosses = new ArrayList<>();
        List<Double> recomputedLosses = new ArrayList<>();
        try (SameDiffPipeline p = launch(kept, m, 2, 4, schedule);
             SameDiffPipeline q = SameDiffPipeline.launch(new SameDiffPipeline.Context().sameDiff(recomputed).stages(2)
                     .microBatches(4).schedule(schedule).sample(m.batch().apply(2, 1L)).recomputeForward(true))) {
            for (int s = 0; s < 2; s++) {
                assertFalse(p.graph(s).recomputes(), "stage " + s + " fell back to recomputing its forward");
                assertTrue(q.graph(s).recomputes());
            }
            for (Map<String, INDArray> b : batches) {
                keptLosses.add(p.step(b));
                recomputedLosses.add(q.step(b));
            }
            // Kept forward values cost memory beyond the boundary activations; recompute holds only the latter.
            assertTrue(p.lastStep().peakHeldBytes() > p.lastStep().peakActivationBytes(), p.lastStep().toString());
            assertEquals(q.lastStep().peakActivationBytes(), q.lastStep().peakHeldBytes(), q.lastStep().toString());
        }
        for (int s = 0; s < batches.size(); s++) {
            assertEquals(recomputedLosses.get(s), keptLosses.get(s), 1e-9 * Math.abs(recomputedLosses.get(s)), "step " + s);
        }
        List<String> params = new ArrayList<>(SameDiffDag.gradientNames(reference).keySet());
        SameDiffDataParallelTest.assertSameParameters(recomputed, kept, params, 1e-9);
        SameDiffDataParallelTest.assertSameParameters(reference, kept, params, SameDiffDataParallelTest.REL);
    }

    /**
     * Counts every execution of a stage's forward ops, by the op executor and (through a listener) inside SameDiff:
     * without recompute each runs once per micro-batch; recomputing runs the forward again in the backward.
     */
    @ParameterizedTest(name = "{0}")
    @EnumSource(Schedule.class)
    void shouldRunEachForwardOpOncePerMicroBatchUnlessRecomputing(Schedule schedule) {
        Models.Factory m = Models.all()[0];
        int steps = 2;
        int micro = 4;
        int[] opsPerForward = new int[2];
        int[] cut = null; // the second run cuts where the first did (costs are timed, so a new cut may differ)
        for (boolean recompute : new boolean[] {false, true}) {
            SameDiffPipeline.Context ctx = new SameDiffPipeline.Context().sameDiff(m.build().apply(new Sgd(0.1)))
                    .stages(2).microBatches(micro).schedule(schedule).sample(m.batch().apply(2, 1L))
                    .recomputeForward(recompute);
            try (SameDiffPipeline p = SameDiffPipeline.launch(cut == null ? ctx : ctx.cut(cut))) {
                cut = new int[] {0, p.stages().get(0).endOp(), p.stages().get(1).endOp()};
                AtomicLong[] inSameDiff = new AtomicLong[2];
                for (int s = 0; s < 2; s++) {
                    StageGraph g = p.graph(s);
                    Set<String> forwardOps = new HashSet<>();
                    for (int i = p.stages().get(s).firstOp(); i < p.stages().get(s).endOp(); i++) {
                        forwardOps.add(SameDiffDag.importGraph(p.sameDiff()).ops().get(i).name());
                    }
                    AtomicLong count = inSameDiff[s] = new AtomicLong();
                    g.sd.addListeners(new BaseListener() {
                        @Override
                        public boolean isActive(Operation operation) {
                            return true;
                        }

                        @Override
                        public void opExecution(SameDiff sd, At at, MultiDataSet batch, SameDiffOp op, OpContext oc,
                                                INDArray[] outputs) {
                            if (forwardOps.contains(op.getName())) {
                                count.incrementAndGet();
                            }
                        }
                    });
                }
                for (int k = 0; k < steps; k++) {
                    p.step(m.batch().apply(8, 40L + k));
                }
                for (int s = 0; s < 2; s++) {
                    StageGraph g = p.graph(s);
                    if (!recompute) {
                        assertTrue(g.forwardOpCount() > 0);
                        assertEquals((long) steps * micro * g.forwardOpCount(), g.forwardOpRuns.get(), "stage " + s);
                        assertEquals(0, inSameDiff[s].get(), "stage " + s + " ran forward ops inside SameDiff");
                        opsPerForward[s] = g.forwardOpCount();
                    } else {
                        // The hook sees recomputation: stage 0's backward runs its forward ops again; the last stage
                        // has no outputs and runs its forward only in its backward.
                        assertEquals(0, g.forwardOpRuns.get());
                        long once = (long) steps * micro * opsPerForward[s];
                        assertEquals(s == 0 ? 2 * once : once, inSameDiff[s].get(), "stage " + s);
                    }
                }
            }
        }
    }

    /** A stage whose gradient function holds an op the executor refuses trains by recomputing, as sd.fit. */
    @Test
    void shouldFallBackToRecomputeForAStageWithARefusedOp() {
        Models.Factory m = Models.all()[0];
        List<Map<String, INDArray>> batches = SameDiffDataParallelTest.batches(m, 8);
        SameDiff reference = m.build().apply(new Adam(1e-2));
        SameDiffDataParallelTest.fitReference(reference, batches);
        SameDiff trained = m.build().apply(new Adam(1e-2));
        try (SameDiffPipeline p = SameDiffPipeline.launch(new SameDiffPipeline.Context().sameDiff(trained).stages(2)
                .microBatches(4).sample(m.batch().apply(2, 1L))
                .refuseOp(fn -> fn.opName().equals("tanh_bp") ? "refused by the test" : null))) {
            assertTrue(p.graph(0).recomputes(), "stage 0 (tanh) should recompute");
            assertFalse(p.graph(1).recomputes(), "stage 1 (no tanh) should keep its forward values");
            batches.forEach(p::step);
        }
        SameDiffDataParallelTest.assertSameParameters(reference, trained,
                new ArrayList<>(SameDiffDag.gradientNames(reference).keySet()), SameDiffDataParallelTest.REL);
    }

    @Test
    void shouldOrderGpipeAndOneForwardOneBackwardAsPublished() {
        // GPipe: all forwards, then backwards in reverse.
        assertEquals("F0 F1 F2 B2 B1 B0", text(SameDiffPipeline.order(Schedule.GPIPE, 0, 2, 3)));
        // 1F1B, 3 stages, 4 micro-batches: stage 0 warms up with 2 forwards, the last stage with none.
        assertEquals("F0 F1 F2 B0 F3 B1 B2 B3", text(SameDiffPipeline.order(Schedule.ONE_F_ONE_B, 0, 3, 4)));
        assertEquals("F0 F1 B0 F2 B1 F3 B2 B3", text(SameDiffPipeline.order(Schedule.ONE_F_ONE_B, 1, 3, 4)));
        assertEquals("F0 B0 F1 B1 F2 B2 F3 B3", text(SameDiffPipeline.order(Schedule.ONE_F_ONE_B, 2, 3, 4)));
        // Fewer micro-batches than warm-up slots.
        assertEquals("F0 B0", text(SameDiffPipeline.order(Schedule.ONE_F_ONE_B, 0, 4, 1)));
    }

    static String text(List<int[]> order) {
        StringBuilder b = new StringBuilder();
        for (int[] o : order) {
            b.append(b.length() == 0 ? "" : " ").append(o[0] == 1 ? "F" : "B").append(o[1]);
        }
        return b.toString();
    }

    @Test
    void replayingEqualStagesGivesTheTheoreticalBubbleAndAHeavierStageMore() {
        int[][] producers = {{}, {0}, {1}};
        int[][] consumers = {{1}, {2}, {}};
        for (Schedule schedule : Schedule.values()) {
            List<List<int[]>> orders = new ArrayList<>();
            long[][][] ns = new long[3][2][8];
            for (int s = 0; s < 3; s++) {
                orders.add(SameDiffPipeline.order(schedule, s, 3, 8));
                Arrays.fill(ns[s][0], 1_000);
                Arrays.fill(ns[s][1], 2_000);
            }
            assertEquals(2.0 / 10.0, SameDiffPipeline.replayBubble(orders, ns, producers, consumers), 1e-12, schedule.name());
            // the middle stage 50% heavier: the others wait for it every cycle
            Arrays.fill(ns[1][0], 1_500);
            Arrays.fill(ns[1][1], 3_000);
            double replayed = SameDiffPipeline.replayBubble(orders, ns, producers, consumers);
            assertTrue(replayed > 0.25, schedule + ": " + replayed);
        }
    }

    /** With S = 2 and M = 8 equal micro-batches, GPipe keeps 8 micro-batches' boundary activations, 1F1B 2. */
    @Test
    void shouldHoldAtMostSMicroBatchesOfActivationsWithOneForwardOneBackward() {
        Models.Factory m = Models.all()[2];
        Map<String, INDArray> batch = m.batch().apply(16, 3L);
        long[] peak = new long[2];
        double[] bubble = new double[2];
        for (Schedule s : Schedule.values()) {
            try (SameDiffPipeline p = launch(m.build().apply(new Sgd(0.1)), m, 2, 8, s)) {
                p.step(batch);
                SameDiffPipeline.StepStats st = p.lastStep();
                peak[s.ordinal()] = st.peakActivationBytes();
                bubble[s.ordinal()] = st.bubbleFraction();
                assertEquals(1.0 / 9.0, st.theoreticalBubble(), 1e-12);
                assertEquals(8, st.microBatches());
                assertTrue(st.bubbleFraction() >= 0 && st.bubbleFraction() < 1, "bubble " + st.bubbleFraction());
                assertTrue(st.makespanNs() > 0);
                // the same order and task times without gaps can only be as fast or faster
                assertTrue(st.replayedBubble() >= 0 && st.replayedBubble() <= st.bubbleFraction() + 1e-9,
                        "replayed " + st.replayedBubble() + ", measured " + st.bubbleFraction());
                // the bubble is the idle share left by the stages' busy times
                long[] busy = st.stageBusyNs();
                assertEquals(2, busy.length);
                assertTrue(busy[0] > 0 && busy[1] > 0, java.util.Arrays.toString(busy));
                assertEquals(st.bubbleFraction(), 1 - (busy[0] + busy[1]) / (2.0 * st.makespanNs()), 1e-9);
            }
        }
        assertTrue(peak[0] > 0, "GPipe kept no activations");
        assertEquals(4.0, peak[0] / (double) peak[1], 1e-12, "GPipe " + peak[0] + " B vs 1F1B " + peak[1] + " B");
        System.out.println("bubble GPipe " + bubble[0] + ", 1F1B " + bubble[1] + "; peak " + peak[0] + " vs " + peak[1]);
    }

    @Test
    void shouldUseOneMicroBatchPerExampleWhenTheBatchIsSmallerThanM() {
        Models.Factory m = Models.all()[2];      // the transformer: SameDiff M2.1 handles its one-example batches
        List<Map<String, INDArray>> batches = List.of(m.batch().apply(3, 31L), m.batch().apply(3, 32L));
        SameDiff reference = m.build().apply(new Adam(1e-2));
        SameDiffDataParallelTest.fitReference(reference, batches);
        SameDiff trained = m.build().apply(new Adam(1e-2));
        try (SameDiffPipeline p = launch(trained, m, 2, 8, Schedule.ONE_F_ONE_B)) {
            batches.forEach(p::step);
            assertEquals(3, p.lastStep().microBatches());
            assertEquals(1.0 / 4.0, p.lastStep().theoreticalBubble(), 1e-12);
        }
        SameDiffDataParallelTest.assertSameParameters(reference, trained,
                new ArrayList<>(SameDiffDag.gradientNames(reference).keySet()), SameDiffDataParallelTest.REL);
    }

    @Test
    void shouldRunEveryStageOnItsOwnProcessor() {
        Models.Factory m = Models.all()[0];
        try (SameDiffPipeline p = SameDiffPipeline.launch(new SameDiffPipeline.Context().sameDiff(m.build().apply(new Sgd(0.1)))
                .stages(2).microBatches(4).sample(m.batch().apply(2, 1L)).trace(true))) {
            p.step(m.batch().apply(8, 2L));
            Set<String> seen = new HashSet<>();
            p.scheduler().trace().records().forEach(r -> {
                String name = r.name();
                if (name.startsWith("F s") || name.startsWith("B s")) {
                    int stage = name.charAt(3) - '0';
                    assertEquals(stage, r.processor(), name + " ran on processor " + r.processor());
                    seen.add(name.substring(0, name.indexOf('#')));
                }
            });
            assertEquals(2 * 2 * 4, seen.size(), "one forward and one backward per stage and micro-batch: " + seen);
        }
    }

    @Test
    void shouldKeepATiedWeightInOneStageOrRefuseNamingIt() {
        SameDiff sd = SameDiff.create();
        java.util.Random r = new java.util.Random(4);
        org.nd4j.autodiff.samediff.SDVariable in = sd.placeHolder("in", Models.DT, -1, 6);
        org.nd4j.autodiff.samediff.SDVariable w = sd.var("tied", Models.randn(r, 0.3, 6, 6));
        org.nd4j.autodiff.samediff.SDVariable h = sd.nn.tanh("h", sd.mmul("z", in, w));
        org.nd4j.autodiff.samediff.SDVariable h2 = sd.nn.tanh("h2", sd.mmul("z2", h, sd.var("mid", Models.randn(r, 0.3, 6, 6))));
        org.nd4j.autodiff.samediff.SDVariable out = sd.mmul("out", h2, w, false, true, false);   // the same weight, transposed
        sd.loss.meanSquaredError("loss", sd.placeHolder("label", Models.DT, -1, 6), out, null);
        sd.setTrainingConfig(org.nd4j.autodiff.samediff.TrainingConfig.builder().updater(new Sgd(0.1))
                .dataSetFeatureMapping("in").dataSetLabelMapping("label").build());
        Map<String, INDArray> sample = Map.of("in", Models.randn(r, 1, 2, 6), "label", Models.randn(r, 1, 2, 6));
        // Ops 0 (z) and 4 (out) read 'tied': two stages can only cut before the loss.
        try (SameDiffPipeline p = SameDiffPipeline.launch(new SameDiffPipeline.Context().sameDiff(sd).stages(2)
                .sample(sample))) {
            assertEquals(5, p.stages().get(0).endOp(), p.stages().toString());
        }
        UnsupportedGraphException e = assertThrows(UnsupportedGraphException.class, () -> SameDiffPipeline.launch(
                new SameDiffPipeline.Context().sameDiff(sd).stages(3).sample(sample)));
        assertTrue(e.getMessage().contains("'tied' (ops 0 to 4)") && e.getMessage().contains("weight tying"),
                e.getMessage());
        e = assertThrows(UnsupportedGraphException.class, () -> SameDiffPipeline.launch(
                new SameDiffPipeline.Context().sameDiff(sd).cut(0, 2, 6).sample(sample)));
        assertTrue(e.getMessage().contains("'tied'") && e.getMessage().contains("weight tying"), e.getMessage());
    }

    @Test
    void shouldRejectBadConfigurationNamingTheValue() {
        Models.Factory m = Models.all()[0];
        SameDiff sd = m.build().apply(new Sgd(0.1));
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> SameDiffPipeline.launch(
                new SameDiffPipeline.Context().sameDiff(sd).stages(0).sample(m.batch().apply(2, 1L))));
        assertTrue(e.getMessage().contains("stages must be >= 1, got 0"), e.getMessage());
        e = assertThrows(IllegalArgumentException.class, () -> SameDiffPipeline.launch(
                new SameDiffPipeline.Context().sameDiff(sd).microBatches(-1).sample(m.batch().apply(2, 1L))));
        assertTrue(e.getMessage().contains("microBatches must be >= 1, got -1"), e.getMessage());
        e = assertThrows(IllegalArgumentException.class, () -> SameDiffPipeline.launch(new SameDiffPipeline.Context().sameDiff(sd)));
        assertTrue(e.getMessage().contains("sample must be set"), e.getMessage());
        e = assertThrows(IllegalArgumentException.class, () -> SameDiffPipeline.launch(
                new SameDiffPipeline.Context().sameDiff(sd).stages(1000).sample(m.batch().apply(2, 1L))));
        assertTrue(e.getMessage().contains("stages must be between 1 and the number of ops"), e.getMessage());
    }
}
