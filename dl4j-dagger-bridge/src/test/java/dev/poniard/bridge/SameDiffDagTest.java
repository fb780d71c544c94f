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
    void shouldPartitionIntoContiguousStagesBalancedByCostAndParameters(Models.Factory m) {
        SameDiffDag dag = SameDiffDag.importGraph(m.build().apply(new Sgd(0.1))).estimateCosts(m.batch().apply(4, 1L));
        int n = dag.ops().size();
        double total = dag.totalCostNanos();
        long params = dag.ops().stream().mapToLong(SameDiffDag.OpNode::parameterBytes).sum();
        for (int s = 1; s <= 4; s++) {
            List<Stage> stages = dag.partition(s);
            assertEquals(s, stages.size());
            assertEquals(0, stages.get(0).firstOp());
            assertEquals(n, stages.get(s - 1).endOp());
            double largest = 0;
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
                largest = Math.max(largest, st.costNanos() / total + (double) st.parameterBytes() / params);
            }
            // Exhaustive check of optimality for two stages: no single cut gives a smaller largest stage.
            if (s == 2) {
                double bestCut = Double.MAX_VALUE;
                for (int cut = 1; cut < n; cut++) {
                    double a = 0, b = 0;
                    for (SameDiffDag.OpNode op : dag.ops()) {
                        double w = op.cost().nanos() / total + (double) op.parameterBytes() / params;
                        if (op.index() < cut) {
                            a += w;
                        } else {
                            b += w;
                        }
                    }
                    bestCut = Math.min(bestCut, Math.max(a, b));
                }
                assertEquals(bestCut, largest, 1e-9);
            }
        }
        assertThrows(IllegalArgumentException.class, () -> dag.partition(0));
        assertThrows(IllegalArgumentException.class, () -> dag.partition(n + 1));
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
