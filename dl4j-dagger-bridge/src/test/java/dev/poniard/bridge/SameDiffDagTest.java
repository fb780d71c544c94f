package dev.poniard.bridge;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.poniard.scheduler.Scheduler;
import java.util.ArrayList;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.MethodSource;
import org.nd4j.autodiff.samediff.SDVariable;
import org.nd4j.autodiff.samediff.SameDiff;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;
import org.nd4j.linalg.learning.config.Sgd;

@Timeout(value = 120, unit = TimeUnit.SECONDS, threadMode = Timeout.ThreadMode.SEPARATE_THREAD)
class SameDiffDagTest {
    static Models.Factory[] models() {
        return Models.all();
    }

    @ParameterizedTest(name = "{0}")
    @MethodSource("models")
    void shouldImportEveryOpInTopologicalOrder(Models.Factory m) {
        SameDiff sd = m.build().apply(new Sgd(0.1));
        SameDiffDag dag = SameDiffDag.importGraph(sd);

        assertEquals(sd.getOps().size(), dag.ops().size());
        Set<String> produced = new HashSet<>();
        for (SameDiffDag.OpNode op : dag.ops()) {
            for (int p : op.predecessors()) {
                assertTrue(p < op.index(), op + " waits for a later op " + dag.ops().get(p));
            }
            for (String in : op.inputs()) {
                SameDiffDag.Var v = dag.variable(in);
                assertTrue(v.kind() != SameDiffDag.VarKind.ACTIVATION || produced.contains(in),
                        op + " reads " + in + " before it is produced");
            }
            produced.addAll(op.outputs());
        }
        // Every trainable parameter is charged to exactly one op.
        List<String> charged = new ArrayList<>();
        dag.ops().forEach(o -> charged.addAll(o.parameters()));
        assertEquals(sd.variables().stream().filter(v -> v.getVariableType() == org.nd4j.autodiff.samediff.VariableType.VARIABLE)
                .count(), charged.size());
    }

    @Test
    void shouldEstimateMatmulAndConvolutionFlopsFromShapes() {
        SameDiffDag mlp = SameDiffDag.importGraph(Models.mlp(new Sgd(0.1))).estimateCosts(Models.mlpBatch(32, 1));
        assertEquals(2.0 * 32 * 8 * 16, mlp.producerOf("l1").cost().flops(), 1e-9);           // [32,8] x [8,16]
        assertEquals(2.0 * 32 * 16 * 4, mlp.producerOf("logits0").cost().flops(), 1e-9);      // [32,16] x [16,4]
        assertEquals(0.0, mlp.producerOf("h1").cost().flops());
        assertEquals((32 * 16 * 2) * 8.0, mlp.producerOf("h1").cost().bytes(), 1e-9);          // tanh reads and writes 32x16 doubles
        assertArrayEquals(new long[] {32, 16}, mlp.shape("h1"));

        SameDiffDag cnn = SameDiffDag.importGraph(Models.cnn(new Sgd(0.1))).estimateCosts(Models.cnnBatch(5, 1));
        assertEquals(2.0 * (5 * 4 * 4 * 4) * (3 * 3 * 1), cnn.producerOf("conv").cost().flops(), 1e-9);

        SameDiffDag tr = SameDiffDag.importGraph(Models.transformer(new Sgd(0.1))).estimateCosts(Models.transformerBatch(3, 1));
        // Batched q·kᵀ: 3 examples × 2 heads of [4,4] x [4,4].
        assertEquals(2.0 * 3 * 2 * 4 * 4 * 4, tr.producerOf("scores").cost().flops(), 1e-9);
        assertTrue(tr.producerOf("scores").cost().nanos() > OpCost.FIXED_NS);
    }

    @ParameterizedTest(name = "{0}")
    @MethodSource("models")
    void shouldPartitionIntoContiguousStagesBalancedByTimeThenParameters(Models.Factory m) {
        SameDiffDag dag = SameDiffDag.importGraph(m.build().apply(new Sgd(0.1))).estimateCosts(m.batch().apply(4, 1L));
        int n = dag.ops().size();
        for (int s = 1; s <= 4; s++) {
            List<Stage> stages = dag.partition(s);
            assertEquals(s, stages.size());
            assertEquals(0, stages.get(0).firstOp());
            assertEquals(n, stages.get(s - 1).endOp());
            double slowest = 0;
            long largest = 0;
            Set<String> available = new HashSet<>();
            for (Stage st : stages) {
                assertTrue(st.size() > 0);
                if (st.index() > 0) {
                    assertEquals(stages.get(st.index() - 1).endOp(), st.firstOp());
                }
                for (String in : st.inputs()) {
                    assertTrue(dag.variable(in).kind() == SameDiffDag.VarKind.PLACEHOLDER || available.contains(in),
                            "stage " + st.index() + " reads " + in + " which no earlier stage hands over");
                }
                available.addAll(st.outputs());
                slowest = Math.max(slowest, dag.ops().subList(st.firstOp(), st.endOp()).stream()
                        .mapToDouble(SameDiffDag.OpNode::trainingNanos).sum());
                largest = Math.max(largest, st.parameterBytes());
            }
            // Exhaustive check for two stages: no cut has a faster slowest stage, and none within the time tolerance
            // of the fastest has a smaller largest parameter memory.
            if (s == 2) {
                double fastest = Double.MAX_VALUE;
                double[] time = new double[n];
                long[] params = new long[n];
                for (int cut = 1; cut < n; cut++) {
                    double a = 0, b = 0;
                    long pa = 0, pb = 0;
                    for (SameDiffDag.OpNode op : dag.ops()) {
                        if (op.index() < cut) {
                            a += op.trainingNanos();
                            pa += op.parameterBytes();
                        } else {
                            b += op.trainingNanos();
                            pb += op.parameterBytes();
                        }
                    }
                    time[cut] = Math.max(a, b);
                    params[cut] = Math.max(pa, pb);
                    fastest = Math.min(fastest, time[cut]);
                }
                long leanest = Long.MAX_VALUE;
                for (int cut = 1; cut < n; cut++) {
                    if (time[cut] <= fastest * (1 + SameDiffDag.TIME_TOLERANCE)) {
                        leanest = Math.min(leanest, params[cut]);
                    }
                }
                assertTrue(slowest <= fastest * (1 + SameDiffDag.TIME_TOLERANCE) * (1 + 1e-12), slowest + " vs " + fastest);
                assertEquals(leanest, largest);
            }
        }
        assertThrows(IllegalArgumentException.class, () -> dag.partition(0));
        assertThrows(IllegalArgumentException.class, () -> dag.partition(n + 1));
    }

    /**
     * Backward weights: two products for a matrix product whose data and weights both need gradients, one when its
     * data is a placeholder, one for other ops on the gradient path, none off it.
     */
    @org.junit.jupiter.api.Test
    void shouldWeighEachOpsBackwardByTheGradientsItComputes() {
        SameDiffDag dag = SameDiffDag.importGraph(Models.mlp(new Sgd(0.1)));
        assertEquals(1, dag.producerOf("l1").backwardWeight(), "input placeholder: only the weight gradient");
        assertEquals(2, dag.producerOf("l2").backwardWeight());
        assertEquals(1, dag.producerOf("h1").backwardWeight());
        assertEquals(2, dag.producerOf("logits0").backwardWeight());
        assertEquals(0, dag.producerOf("out").backwardWeight(), "the softmax output is off the loss path");
        SameDiffDag.OpNode l2 = dag.estimateCosts(Models.mlpBatch(2, 1L)).producerOf("l2");
        assertEquals(3 * l2.cost().nanos(), l2.trainingNanos(), 1e-9);
    }

    /**
     * Timed costs are the ops' measured times, in place of the shape-based prior (shapes and flops stay): the
     * forward's, and for an op on the way to the loss the gradient ops that compute its inputs' gradients.
     */
    @ParameterizedTest(name = "{0}")
    @MethodSource("models")
    void shouldTimeEveryOpAndItsGradientOnTheSample(Models.Factory m) {
        SameDiff sd = m.build().apply(new Sgd(0.1));
        SameDiffDag dag = SameDiffDag.importGraph(sd);
        SameDiffDag estimated = dag.estimateCosts(m.batch().apply(4, 1L));
        SameDiffDag timed = dag.timeCosts(m.batch().apply(4, 1L), 5, java.time.Duration.ofSeconds(10));
        assertFalse(sd.hasGradientFunction(), "timing built the gradient function on the caller's graph");
        assertEquals(estimated.ops().size(), timed.ops().size());
        int withBackward = 0;
        for (SameDiffDag.OpNode op : timed.ops()) {
            SameDiffDag.OpNode e = estimated.ops().get(op.index());
            assertTrue(op.cost().timedNanos() > 0, op.name() + " was not timed");
            assertEquals(op.cost().timedNanos(), op.cost().nanos());
            assertEquals(e.cost().flops(), op.cost().flops());
            assertTrue(Double.isNaN(e.cost().timedNanos()));
            assertTrue(op.cost().timedBackwardNanos() >= 0, op.name() + " has no backward time");
            assertEquals(op.cost().nanos() + op.cost().timedBackwardNanos(), op.trainingNanos(), 1e-9);
            if (op.backwardWeight() == 0) {
                assertEquals(0, op.cost().timedBackwardNanos(), op.name() + " is off the gradient path");
            }
            withBackward += op.cost().timedBackwardNanos() > 0 ? 1 : 0;
        }
        assertTrue(withBackward > 0);
        // The sample's arrays survive the passes (only what the passes computed is freed).
        assertEquals(estimated.totalCostNanos(), dag.estimateCosts(m.batch().apply(4, 1L)).totalCostNanos(), 1e-6);
        assertThrows(IllegalArgumentException.class, () -> dag.timeCosts(m.batch().apply(4, 1L), 0, java.time.Duration.ZERO));
    }

    @Test
    void shouldRefuseControlFlowNamingTheOp() {
        SameDiff sd = SameDiff.create();
        SDVariable x = sd.placeHolder("x", Models.DT, 2);
        SDVariable i = sd.constant("i", Nd4j.scalar(Models.DT, 0.0));
        sd.whileLoop(new String[] {"iOut", "xOut"}, "loop", new SDVariable[] {i, x},
                (s, vars) -> vars[0].lt(3.0), (s, vars) -> new SDVariable[] {vars[0].add(1.0), vars[1].mul(2.0)});
        UnsupportedGraphException e = assertThrows(UnsupportedGraphException.class, () -> SameDiffDag.importGraph(sd));
        assertTrue(e.getMessage().contains("control flow"), e.getMessage());
        assertTrue(sd.getOps().containsKey(e.opName()), e.opName());
        assertTrue(e.getMessage().contains("'" + e.opName() + "'"), e.getMessage());
    }

    @Test
    void shouldRefuseAnOpWithoutGradientOnTheWayToTheLoss() {
        SameDiff sd = SameDiff.create();
        SDVariable in = sd.placeHolder("in", Models.DT, -1, 4);
        SDVariable w = sd.var("w", Nd4j.rand(Models.DT, 4, 3));
        SDVariable h = sd.mmul("h", in, w);
        SDVariable picked = sd.gatherNd("picked", h, sd.constant("idx", Nd4j.createFromArray(new int[][] {{0, 1}, {1, 2}})));
        picked.sum("loss");
        sd.setLossVariables("loss");
        SameDiffDag dag = SameDiffDag.importGraph(sd);
        UnsupportedGraphException e = assertThrows(UnsupportedGraphException.class, dag::requireDifferentiable);
        assertEquals(dag.producerOf("picked").name(), e.opName());
        assertTrue(e.getMessage().contains("'picked'"), e.getMessage());
        assertTrue(e.getMessage().contains("gather_nd") && e.getMessage().contains("no gradient"), e.getMessage());
    }

    @Test
    void shouldAcceptOpsWithoutGradientOffTheLossPath() {
        SameDiff sd = Models.mlp(new Sgd(0.1));
        sd.argmax("predicted", sd.getVariable("out"), 1); // accuracy, not differentiated
        SameDiffDag dag = SameDiffDag.importGraph(sd);
        assertFalse(SameDiffDag.hasGradient(dag.producerOf("predicted").fn), "argmax is expected to have no gradient in M2.1");
        dag.requireDifferentiable();
    }

    @ParameterizedTest(name = "{0}")
    @MethodSource("models")
    void shouldRunTheForwardGraphAsOpTasksEqualToSameDiffOutput(Models.Factory m) {
        SameDiff sd = m.build().apply(new Sgd(0.1));
        Map<String, INDArray> batch = m.batch().apply(7, 11L);
        SameDiffDag dag = SameDiffDag.importGraph(sd).estimateCosts(m.batch().apply(2, 1L));
        INDArray expectedOut = sd.output(batch, "out").get("out");
        INDArray expectedLoss = sd.output(batch, "loss").get("loss");
        try (Scheduler s = Scheduler.launch(new Scheduler.Context().workers(2).trace(true)
                .workerStart(NativeThreads::oneThreadPerWorker))) {
            Map<String, INDArray> got = dag.output(s, batch, "out", "loss");
            assertEquals(expectedOut, got.get("out"));
            assertEquals(expectedLoss.getDouble(0), got.get("loss").getDouble(0), 1e-12);
            // One task per op that the outputs need, named after the op.
            int needed = dag.requiredOps(List.of("out", "loss")).cardinality();
            assertEquals(needed, s.trace().records().size());
            assertTrue(s.trace().records().stream().anyMatch(ev -> ev.name().startsWith(dag.ops().get(0).name() + "#")));
        }
    }

    @ParameterizedTest(name = "{0}")
    @MethodSource("models")
    void shouldRunTheBackwardGraphAsOpTasksEqualToCalculateGradients(Models.Factory m) {
        SameDiff sd = m.build().apply(new Sgd(0.1));
        Map<String, INDArray> batch = m.batch().apply(5, 2L);
        SameDiffDag backward = SameDiffDag.importGradient(sd);
        Map<String, String> grads = SameDiffDag.gradientNames(sd);
        assertTrue(backward.ops().size() > SameDiffDag.importGraph(sd).ops().size(), "the gradient graph adds ops");
        Map<String, INDArray> expected = sd.calculateGradients(batch, new ArrayList<>(grads.keySet()));
        try (Scheduler s = Scheduler.launch(new Scheduler.Context().workers(2).workerStart(NativeThreads::oneThreadPerWorker))) {
            Map<String, INDArray> got = backward.output(s, batch, grads.values().toArray(new String[0]));
            for (Map.Entry<String, String> e : grads.entrySet()) {
                SameDiffDataParallelTest.assertClose("gradient of " + e.getKey(), expected.get(e.getKey()),
                        got.get(e.getValue()), 1e-12);
            }
        }
    }

    @Test
    void shouldNameTheOpThatFailsAtRunTime() {
        SameDiff sd = Models.mlp(new Sgd(0.1));
        SameDiffDag dag = SameDiffDag.importGraph(sd);
        try (Scheduler s = Scheduler.launch(new Scheduler.Context().workers(2))) {
            Map<String, INDArray> wrong = Map.of("in", Nd4j.rand(Models.DT, 3, 5)); // 5 features, the model takes 8
            OpExecutionException e = assertThrows(OpExecutionException.class, () -> dag.output(s, wrong, "out"));
            assertEquals(dag.producerOf("l1").name(), e.opName());
            assertTrue(e.getMessage().contains("-> 'l1'"), e.getMessage());
            IllegalArgumentException missing = assertThrows(IllegalArgumentException.class,
                    () -> dag.output(s, Map.of(), "out"));
            assertTrue(missing.getMessage().contains("'in'"), missing.getMessage());
        }
    }
}
