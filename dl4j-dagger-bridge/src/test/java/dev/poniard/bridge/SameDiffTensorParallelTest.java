package dev.poniard.bridge;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.ArrayList;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Random;
import java.util.Set;
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
import org.nd4j.autodiff.samediff.VariableType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.dataset.DataSet;
import org.nd4j.linalg.factory.Nd4j;
import org.nd4j.linalg.learning.config.Adam;
import org.nd4j.linalg.learning.config.IUpdater;
import org.nd4j.linalg.learning.config.Sgd;

@Timeout(value = 120, unit = TimeUnit.SECONDS, threadMode = Timeout.ThreadMode.SEPARATE_THREAD)
class SameDiffTensorParallelTest {
    /** Per model: the weights tensor parallelism must split (column → row pairs with their biases). */
    static Stream<Arguments> models() {
        Models.Factory[] m = Models.all();
        return Stream.of(
                Arguments.of(m[0], "adam", Map.of("w1", "column", "b1", "column bias", "w2", "row", "b2", "row bias")),
                Arguments.of(m[0], "sgd", Map.of("w1", "column", "b1", "column bias", "w2", "row", "b2", "row bias")),
                Arguments.of(m[1], "adam", Map.of("hw", "column", "hb", "column bias", "dw", "row", "db", "row bias")),
                Arguments.of(m[2], "adam", Map.of("wq", "column", "wk", "column", "wv", "column", "wo", "row",
                        "bo", "row bias", "f1", "column", "fb1", "column bias", "f2", "row", "fb2", "row bias")));
    }

    static SameDiffTensorParallel launch(SameDiff sd, Map<String, INDArray> sample) {
        return SameDiffTensorParallel.launch(new SameDiffTensorParallel.Context().sameDiff(sd).workers(2).minElements(0)
                .sample(sample));
    }

    static List<String> parameters(SameDiff sd) {
        List<String> params = new ArrayList<>();
        sd.variables().stream().filter(v -> v.getVariableType() == VariableType.VARIABLE).forEach(v -> params.add(v.name()));
        return params;
    }

    /** 10 steps of 10 examples on 2 workers equal 10 full-batch fits; the named weights are really split. */
    @ParameterizedTest(name = "{0} {1}")
    @MethodSource("models")
    void shouldEqualFullBatchFitAfterTenSteps(Models.Factory m, String updater, Map<String, String> expectedSplit) {
        List<Map<String, INDArray>> batches = SameDiffDataParallelTest.batches(m, 10);
        IUpdater u = SameDiffDataParallelTest.updater(updater);
        SameDiff reference = m.build().apply(u);
        SameDiff trained = m.build().apply(SameDiffDataParallelTest.updater(updater));
        List<Double> expectedLosses = new ArrayList<>();
        for (Map<String, INDArray> b : batches) {
            expectedLosses.add(reference.output(b, "loss").get("loss").getDouble(0));
            reference.fit(new DataSet(b.get("in"), b.get("label")));
        }
        try (SameDiffTensorParallel tp = launch(trained, m.batch().apply(2, 1L))) {
            assertEquals(expectedSplit, tp.splitWeights(), tp.toString());
            for (int s = 0; s < SameDiffDataParallelTest.STEPS; s++) {
                double loss = tp.step(batches.get(s));
                assertEquals(expectedLosses.get(s), loss, 1e-9 * Math.abs(expectedLosses.get(s)), "loss of step " + s);
            }
            SameDiffDataParallelTest.assertSameParameters(reference, trained, parameters(trained), SameDiffDataParallelTest.REL);
            assertEquals(SameDiffDataParallelTest.STEPS, trained.getTrainingConfig().getIterationCount());
            // Each worker holds only its block of a split weight: the blocks together are the whole weight.
            for (Map.Entry<String, String> e : expectedSplit.entrySet()) {
                long[] full = trained.getArrForVarName(e.getKey()).shape();
                long[] a = tp.workerParameter(0, e.getKey()).shape();
                long[] b = tp.workerParameter(1, e.getKey()).shape();
                if (e.getValue().equals("row bias")) {
                    assertArrayEquals(full, a);
                    assertEquals(0.0, tp.workerParameter(1, e.getKey()).amaxNumber().doubleValue(), e.getKey());
                } else {
                    int axis = e.getValue().equals("column") ? 1 : 0;
                    assertEquals(full[axis], a[axis] + b[axis], e.getKey());
                    assertTrue(a[axis] < full[axis], e.getKey() + " is not split");
                }
            }
        }
        // Training moved the parameters well beyond the tolerance, so the comparison is not vacuous.
        SameDiff initial = m.build().apply(SameDiffDataParallelTest.updater(updater));
        double moved = 0;
        for (String p : parameters(trained)) {
            moved = Math.max(moved, initial.getArrForVarName(p).sub(trained.getArrForVarName(p)).amaxNumber().doubleValue());
        }
        assertTrue(moved > 1e-3, "parameters moved only " + moved);
    }

    /** 8 → 7 (tanh) → 3: the 7 hidden columns split 4 / 3. */
    static SameDiff oddWidthMlp(IUpdater updater) {
        Random r = new Random(7);
        SameDiff sd = SameDiff.create();
        SDVariable in = sd.placeHolder("in", Models.DT, -1, 8);
        SDVariable label = sd.placeHolder("label", Models.DT, -1, 3);
        SDVariable h = sd.nn.tanh("h", sd.nn.linear("l1", in, sd.var("w1", Models.randn(r, 0.4, 8, 7)),
                sd.var("b1", Models.randn(r, 0.1, 7))));
        SDVariable logits = sd.nn.linear("logits", h, sd.var("w2", Models.randn(r, 0.3, 7, 3)), sd.var("b2", Models.randn(r, 0.1, 3)));
        sd.loss.softmaxCrossEntropy("loss", label, logits, null);
        sd.setTrainingConfig(TrainingConfig.builder().updater(updater).dataSetFeatureMapping("in").dataSetLabelMapping("label")
                .build());
        return sd;
    }

    @Test
    void shouldSplitAWidthThatWorkersDoNotDivideIntoUnevenBlocks() {
        List<Map<String, INDArray>> batches = new ArrayList<>();
        for (int s = 0; s < SameDiffDataParallelTest.STEPS; s++) {
            Random r = new Random(400 + s);
            batches.add(Map.of("in", Models.randn(r, 1.0, 6, 8), "label", Models.oneHot(r, 6, 3)));
        }
        SameDiff reference = oddWidthMlp(new Adam(1e-2));
        SameDiffDataParallelTest.fitReference(reference, batches);
        SameDiff trained = oddWidthMlp(new Adam(1e-2));
        try (SameDiffTensorParallel tp = launch(trained, batches.get(0))) {
            assertEquals(Set.of("w1", "b1", "w2", "b2"), tp.splitWeights().keySet());
            assertArrayEquals(new long[] {8, 4}, tp.workerParameter(0, "w1").shape());
            assertArrayEquals(new long[] {8, 3}, tp.workerParameter(1, "w1").shape());
            assertArrayEquals(new long[] {3, 3}, tp.workerParameter(1, "w2").shape());
            batches.forEach(tp::step);
        }
        SameDiffDataParallelTest.assertSameParameters(reference, trained, parameters(trained), SameDiffDataParallelTest.REL);
    }

    /** Three heads of width 4 over two workers: the attention splits in whole heads, 8 + 4 columns. */
    @Test
    void shouldSplitAttentionInWholeHeadsWhenWorkersDoNotDivideTheHeads() {
        List<Map<String, INDArray>> batches = new ArrayList<>();
        for (int s = 0; s < SameDiffDataParallelTest.STEPS; s++) {
            Random r = new Random(500 + s);
            batches.add(Map.of("in", Models.randn(r, 1.0, 5, Models.T, 12), "label", Models.randn(r, 1.0, 5, Models.T, 12)));
        }
        SameDiff reference = Models.transformer(new Adam(1e-2), Models.DT, 3, 12);
        SameDiffDataParallelTest.fitReference(reference, batches);
        SameDiff trained = Models.transformer(new Adam(1e-2), Models.DT, 3, 12);
        try (SameDiffTensorParallel tp = launch(trained, batches.get(0))) {
            assertEquals("column", tp.splitWeights().get("wq"), tp.toString());
            assertArrayEquals(new long[] {12, 8}, tp.workerParameter(0, "wk").shape());
            assertArrayEquals(new long[] {12, 4}, tp.workerParameter(1, "wk").shape());
            assertArrayEquals(new long[] {4, 12}, tp.workerParameter(1, "wo").shape());
            batches.forEach(tp::step);
        }
        SameDiffDataParallelTest.assertSameParameters(reference, trained, parameters(trained), SameDiffDataParallelTest.REL);
    }

    @Test
    void shouldKeepAWeightReplicatedWhenItsSplitWouldReachAnOpThatNeedsTheWholeValue() {
        SameDiff sd = Models.mlp(new Sgd(0.1));
        try (SameDiffTensorParallel tp = launch(sd, Models.mlpBatch(2, 1L))) {
            // w3's output would be split by columns, but the bias add and the softmax need every column.
            assertTrue(tp.replicatedWeights().containsKey("w3"), tp.replicatedWeights().toString());
            assertTrue(tp.replicatedWeights().get("w3").contains("'logits"), tp.replicatedWeights().get("w3"));
            assertEquals(2, tp.segments(), tp.toString());     // l1, h1, l2 parallel; the rest replicated
        }
    }

    @Test
    void shouldKeepSmallWeightsReplicatedByDefaultAndRefuseWhenNothingIsLeftToSplit() {
        SameDiff sd = Models.mlp(new Sgd(0.1));
        UnsupportedGraphException e = assertThrows(UnsupportedGraphException.class, () -> SameDiffTensorParallel.launch(
                new SameDiffTensorParallel.Context().sameDiff(sd).workers(2).sample(Models.mlpBatch(2, 1L))));
        assertTrue(e.getMessage().contains("w1") && e.getMessage().contains("below minElements 65536"), e.getMessage());
    }

    @Test
    void shouldRefuseAWeightThatMustBeSplitButCannotNamingTheOp() {
        SameDiff sd = Models.mlp(new Sgd(0.1));
        UnsupportedGraphException e = assertThrows(UnsupportedGraphException.class, () -> SameDiffTensorParallel.launch(
                new SameDiffTensorParallel.Context().sameDiff(sd).workers(2).minElements(0).split("w3")
                        .sample(Models.mlpBatch(2, 1L))));
        assertTrue(e.getMessage().contains("weight 'w3'") && e.getMessage().contains("op '"), e.getMessage());
    }

    @Test
    void shouldRefuseSingleHeadAttentionSplitAcrossTheContractedAxis() {
        // The old single-head block: q·kᵀ sums over the split columns, so the attention weights stay whole; a graph
        // with nothing else to split is refused, naming the batched matmul.
        SameDiff sd = SameDiff.create();
        Random r = new Random(9);
        SDVariable in = sd.placeHolder("in", Models.DT, -1, 4, 6);
        SDVariable x2 = sd.reshape("x2", in, -1, 6);
        SDVariable q = sd.reshape("q", sd.mmul("q2", x2, sd.var("wq", Models.randn(r, 0.3, 6, 6))), -1, 4, 6);
        SDVariable k = sd.reshape("k", sd.mmul("k2", x2, sd.var("wk", Models.randn(r, 0.3, 6, 6))), -1, 4, 6);
        SDVariable scores = sd.mmul("scores", q, k, false, true, false);
        sd.loss.meanSquaredError("loss", sd.placeHolder("label", Models.DT, -1, 4, 4), scores, null);
        sd.setTrainingConfig(TrainingConfig.builder().updater(new Sgd(0.1)).dataSetFeatureMapping("in")
                .dataSetLabelMapping("label").build());
        UnsupportedGraphException e = assertThrows(UnsupportedGraphException.class, () -> launch(sd,
                Map.of("in", Models.randn(r, 1, 2, 4, 6), "label", Models.randn(r, 1, 2, 4, 4))));
        assertTrue(e.getMessage().contains("'scores'") && e.getMessage().contains("by heads"), e.getMessage());
    }

    @Test
    void shouldRunEveryWorkersShardTasksOnItsOwnProcessor() {
        Models.Factory m = Models.all()[2];
        try (SameDiffTensorParallel tp = SameDiffTensorParallel.launch(new SameDiffTensorParallel.Context()
                .sameDiff(m.build().apply(new Sgd(0.1))).workers(2).minElements(0).sample(m.batch().apply(2, 1L))
                .trace(true))) {
            tp.step(m.batch().apply(4, 2L));
            Set<String> seen = new HashSet<>();
            tp.scheduler().trace().records().forEach(rec -> {
                String name = rec.name();
                if (name.startsWith("tp-F") || name.startsWith("tp-B")) {
                    int w = name.charAt(name.indexOf(" w") + 2) - '0';
                    assertEquals(w, rec.processor(), name + " ran on processor " + rec.processor());
                    seen.add(name.substring(0, name.contains("#") ? name.indexOf('#') : name.length()));
                }
            });
            assertEquals(2 * 2 * tp.segments(), seen.size(), "a forward and a backward per segment and worker: " + seen);
        }
    }

    @Test
    void shouldRejectBadConfigurationNamingTheValue() {
        SameDiff sd = Models.mlp(new Sgd(0.1));
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> SameDiffTensorParallel.launch(
                new SameDiffTensorParallel.Context().sameDiff(sd).workers(0).sample(Models.mlpBatch(2, 1L))));
        assertTrue(e.getMessage().contains("workers must be >= 1, got 0"), e.getMessage());
        e = assertThrows(IllegalArgumentException.class, () -> SameDiffTensorParallel.launch(
                new SameDiffTensorParallel.Context().sameDiff(sd)));
        assertTrue(e.getMessage().contains("sample must be set"), e.getMessage());
        e = assertThrows(IllegalArgumentException.class, () -> SameDiffTensorParallel.launch(
                new SameDiffTensorParallel.Context().sameDiff(sd).split("nope").sample(Models.mlpBatch(2, 1L))));
        assertTrue(e.getMessage().contains("'nope'"), e.getMessage());
        SameDiff untrained = SameDiff.create();
        untrained.var("x", Nd4j.ones(Models.DT, 2));
        e = assertThrows(IllegalArgumentException.class, () -> SameDiffTensorParallel.launch(
                new SameDiffTensorParallel.Context().sameDiff(untrained).sample(Models.mlpBatch(2, 1L))));
        assertTrue(e.getMessage().contains("setTrainingConfig"), e.getMessage());
    }
}
