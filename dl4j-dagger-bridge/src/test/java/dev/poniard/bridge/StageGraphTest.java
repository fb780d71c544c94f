package dev.poniard.bridge;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.MethodSource;
import org.nd4j.autodiff.samediff.SameDiff;
import org.nd4j.autodiff.samediff.api.OutAndGrad;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.learning.config.Sgd;

@Timeout(value = 120, unit = TimeUnit.SECONDS, threadMode = Timeout.ThreadMode.SEPARATE_THREAD)
class StageGraphTest {
    static Models.Factory[] models() {
        return Models.all();
    }

    /** Chains the stage graphs forward, then backward from the last: gradients equal the whole graph's. */
    @ParameterizedTest(name = "{0}")
    @MethodSource("models")
    void shouldComputeTheWholeGraphsGradientsStageByStage(Models.Factory m) {
        SameDiff sd = m.build().apply(new Sgd(0.1));
        Map<String, INDArray> batch = m.batch().apply(6, 9L);
        SameDiffDag dag = SameDiffDag.importGraph(sd).estimateCosts(m.batch().apply(2, 1L));
        List<String> losses = sd.getLossVariables();
        for (int s = 2; s <= 3; s++) {
            List<Stage> stages = dag.partition(s);
            List<StageGraph> graphs = new ArrayList<>();
            for (Stage st : stages) {
                graphs.add(StageGraph.build(dag, st, losses));
            }
            Map<String, INDArray> acts = new HashMap<>(batch);
            for (StageGraph g : graphs) {
                acts.putAll(g.forward(feeds(g, acts)));
            }
            Map<String, INDArray> grads = new HashMap<>();
            Map<String, INDArray> paramGrads = new HashMap<>();
            for (int k = graphs.size() - 1; k >= 0; k--) {
                StageGraph g = graphs.get(k);
                OutAndGrad og = g.backward(feeds(g, acts), grads);
                for (String p : g.parameters) {
                    paramGrads.put(p, og.getGradients().get(p));
                }
                for (String x : g.receivedActivations) {
                    INDArray gx = og.getGradients().get(x);
                    assertNotNull(gx, "no gradient for received " + x);
                    grads.merge(x, gx, INDArray::add);
                }
            }
            Map<String, INDArray> expected = sd.calculateGradients(batch, new ArrayList<>(paramGrads.keySet()));
            for (String p : expected.keySet()) {
                SameDiffDataParallelTest.assertClose(s + " stages, " + p, expected.get(p), paramGrads.get(p), 1e-9);
            }
            assertEquals(expected.size(), paramGrads.size());
        }
    }

    /**
     * Keeping the forward values and running only the gradient ops gives the recompute path's gradients and losses,
     * and runs each forward op once per micro-batch.
     */
    @ParameterizedTest(name = "{0}")
    @MethodSource("models")
    void shouldGiveTheRecomputedGradientsWithoutRecomputingTheForward(Models.Factory m) {
        SameDiff sd = m.build().apply(new Sgd(0.1));
        Map<String, INDArray> batch = m.batch().apply(6, 9L);
        SameDiffDag dag = SameDiffDag.importGraph(sd).estimateCosts(m.batch().apply(2, 1L));
        List<String> losses = sd.getLossVariables();
        for (Stage st : dag.partition(3)) {
            StageGraph kept = StageGraph.build(dag, st, losses);
            StageGraph recompute = StageGraph.build(dag, st, losses, true, OpRunner::unsupportedReason);
            assertFalse(kept.recomputes(), "stage " + st.index() + " fell back to recompute");
            assertTrue(recompute.recomputes());
            Map<String, INDArray> acts = new HashMap<>(batch);
            String[] received = st.inputs().stream().filter(x -> !batch.containsKey(x)).toArray(String[]::new);
            if (received.length > 0) {
                acts.putAll(sd.output(batch, received));
            }
            Map<String, INDArray> outGrads = new HashMap<>();
            java.util.Random r = new java.util.Random(st.index());
            for (Map.Entry<String, INDArray> o : recompute.forward(feeds(recompute, acts)).entrySet()) {
                outGrads.put(o.getKey(), Models.randn(r, 1, o.getValue().shape()));
            }
            OutAndGrad expected = recompute.backward(feeds(recompute, acts), outGrads);
            StageGraph.Kept f = kept.forwardKeeping(feeds(kept, acts));
            assertEquals(kept.forwardOpCount(), kept.forwardOpRuns.get());
            OutAndGrad got = kept.backward(feeds(kept, acts), outGrads, f);
            assertEquals(kept.forwardOpCount(), kept.forwardOpRuns.get(), "backward ran forward ops");
            assertEquals(Set.of(), f.names(), "backward released the kept values");
            for (Map.Entry<String, INDArray> e : expected.getGradients().entrySet()) {
                SameDiffDataParallelTest.assertClose("stage " + st.index() + " " + e.getKey(), e.getValue(),
                        got.getGradients().get(e.getKey()), 1e-12);
            }
            for (String l : kept.losses) {
                SameDiffDataParallelTest.assertClose("loss " + l, expected.getOutputs().get(l), got.getOutputs().get(l), 1e-12);
            }
        }
    }

    /**
     * The gradient of the objective's term sum(o ⊙ g) for an output o is g itself: backward is seeded with it and
     * runs neither the product nor anything that reads g.
     */
    @ParameterizedTest(name = "{0}")
    @MethodSource("models")
    void shouldSeedTheOutputGradientsInsteadOfDifferentiatingTheOutputTerms(Models.Factory m) {
        SameDiff sd = m.build().apply(new Sgd(0.1));
        SameDiffDag dag = SameDiffDag.importGraph(sd).estimateCosts(m.batch().apply(2, 1L));
        for (Stage st : dag.partition(3)) {
            StageGraph g = StageGraph.build(dag, st, sd.getLossVariables());
            assertFalse(g.backwardOps().isEmpty(), "stage " + st.index() + " has no split backward");
            for (SameDiffDag.OpNode op : g.backwardOps()) {
                assertFalse(op.inputs().stream().anyMatch(in -> in.startsWith(StageGraph.GRAD_PREFIX)),
                        "stage " + st.index() + " runs " + op);
            }
        }
    }

    static Map<String, INDArray> feeds(StageGraph g, Map<String, INDArray> acts) {
        Map<String, INDArray> f = new HashMap<>();
        for (String x : g.receivedActivations) {
            f.put(x, acts.get(x));
        }
        for (String x : g.placeholders) {
            f.put(x, acts.get(x));
        }
        return f;
    }
}
