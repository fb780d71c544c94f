package dev.poniard.bridge;

import java.util.ArrayList;
import java.util.HashSet;
import java.util.Iterator;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import org.nd4j.autodiff.samediff.SDVariable;
import org.nd4j.autodiff.samediff.SameDiff;
import org.nd4j.autodiff.samediff.VariableType;
import org.nd4j.autodiff.samediff.api.OutAndGrad;
import org.nd4j.autodiff.samediff.internal.SameDiffOp;
import org.nd4j.autodiff.samediff.internal.Variable;
import org.nd4j.linalg.api.ndarray.INDArray;

/**
 * One pipeline stage as a SameDiff graph of its own: a {@code dup()} of the whole graph pruned to the stage's ops,
 * in which the activations the stage receives from earlier stages become placeholders. Its backward pass is a
 * vector-Jacobian product computed by SameDiff's own gradient function: the stage's objective is
 *
 * <pre>
 *   J = Σ (losses produced in this stage) + Σ_o sum(o ⊙ ∂L/∂o)      for every output o handed to later stages
 * </pre>
 *
 * with ∂L/∂o fed as a placeholder, so ∂J/∂θ and ∂J/∂x (x: the stage's received activations) are exactly the
 * gradients of the full loss with respect to the stage's parameters and inputs (chain rule). Backward recomputes the
 * stage's forward inside SameDiff; only the stage's boundary activations are kept between forward and backward.
 *
 * <p>Pruning edits the duplicate's op and variable tables through SameDiff's public accessors; it never touches the
 * caller's graph. A stage graph is used by one thread at a time.
 */
final class StageGraph {
    static final String GRAD_PREFIX = "poniard-grad/";
    static final String OBJECTIVE = "poniard-stage-objective";

    final Stage stage;
    final SameDiff sd;
    /** Activations from earlier stages, now placeholders of this graph (gradients are computed for them). */
    final List<String> receivedActivations;
    /** Original placeholders (features, labels) this stage reads. */
    final List<String> placeholders;
    /** Activations handed to later stages. */
    final List<String> outputs;
    /** Parameters of this stage (their arrays are this graph's own copies). */
    final List<String> parameters;
    /** The graph's loss variables that this stage computes. */
    final List<String> losses;

    private StageGraph(Stage stage, SameDiff sd, List<String> received, List<String> placeholders, List<String> outputs,
                       List<String> parameters, List<String> losses) {
        this.losses = List.copyOf(losses);
        this.stage = stage;
        this.sd = sd;
        this.receivedActivations = List.copyOf(received);
        this.placeholders = List.copyOf(placeholders);
        this.outputs = List.copyOf(outputs);
        this.parameters = List.copyOf(parameters);
    }

    /** Builds stage {@code stage} of {@code dag} (imported from {@code full}); {@code losses} are the graph's losses. */
    static StageGraph build(SameDiffDag dag, Stage stage, List<String> losses) {
        SameDiff sd = dag.sameDiff().dup();
        Set<String> keep = new HashSet<>();
        for (int i = stage.firstOp(); i < stage.endOp(); i++) {
            keep.add(dag.ops().get(i).name());
        }
        Map<String, SameDiffOp> ops = sd.getOps();
        ops.keySet().retainAll(keep);
        if (ops.size() != keep.size()) {
            throw new IllegalStateException("stage " + stage.index() + ": the duplicate graph lost ops (" + keep.size()
                    + " expected, " + ops.size() + " found); op names did not survive dup()");
        }
        for (SameDiffOp op : ops.values()) {
            if (op.getControlDeps() != null) {
                op.getControlDeps().retainAll(keep);
            }
            if (op.getControlDepFor() != null) {
                op.getControlDepFor().retainAll(keep);
            }
        }

        List<String> received = new ArrayList<>();
        List<String> placeholders = new ArrayList<>();
        List<String> params = new ArrayList<>();
        Map<String, Variable> vars = sd.getVariables();
        for (Iterator<Map.Entry<String, Variable>> it = vars.entrySet().iterator(); it.hasNext(); ) {
            Variable v = it.next().getValue();
            if (v.getInputsForOp() != null) {
                v.getInputsForOp().retainAll(keep);
            }
            if (v.getControlDepsForOp() != null) {
                v.getControlDepsForOp().retainAll(keep);
            }
            boolean producedHere = v.getOutputOfOp() != null && keep.contains(v.getOutputOfOp());
            boolean readHere = v.getInputsForOp() != null && !v.getInputsForOp().isEmpty();
            SDVariable sv = v.getVariable();
            if (producedHere) {
                continue;
            }
            if (!readHere) {
                it.remove();
                continue;
            }
            switch (sv.getVariableType()) {
                case ARRAY -> {
                    // Produced by an earlier stage: arrives as a placeholder.
                    long[] shape = dag.shape(v.getName());
                    v.setOutputOfOp(null);
                    v.setControlDeps(null);
                    sv.setVariableType(VariableType.PLACEHOLDER);
                    if (shape != null) {
                        shape[0] = -1;
                        sv.setShape(shape);
                    }
                    received.add(v.getName());
                }
                case PLACEHOLDER -> placeholders.add(v.getName());
                case VARIABLE -> params.add(v.getName());
                default -> {
                }
            }
        }
        // Control dependencies may only name what is left.
        for (Variable v : vars.values()) {
            if (v.getControlDeps() != null) {
                v.getControlDeps().retainAll(keep);
            }
            if (v.getControlDepsForVar() != null) {
                v.getControlDepsForVar().retainAll(vars.keySet());
            }
        }
        for (SameDiffOp op : ops.values()) {
            if (op.getVarControlDeps() != null) {
                op.getVarControlDeps().retainAll(vars.keySet());
            }
        }
        List<String> outputs = new ArrayList<>(stage.outputs());

        // The objective: this stage's losses plus the vector-Jacobian terms of its outputs.
        SDVariable objective = null;
        List<String> stageLosses = new ArrayList<>();
        for (String l : losses) {
            if (vars.containsKey(l) && vars.get(l).getOutputOfOp() != null) {
                stageLosses.add(l);
                SDVariable lv = sd.getVariable(l);
                SDVariable term = lv.sum();
                objective = objective == null ? term : objective.add(term);
            }
        }
        for (String o : outputs) {
            SDVariable ov = sd.getVariable(o);
            long[] shape = dag.shape(o);
            if (shape != null) {
                shape[0] = -1;
            }
            SDVariable g = sd.placeHolder(GRAD_PREFIX + o, ov.dataType(), shape == null ? new long[0] : shape);
            SDVariable term = ov.mul(g).sum();
            objective = objective == null ? term : objective.add(term);
        }
        if (objective == null) {
            throw new IllegalStateException("stage " + stage.index() + " neither computes a loss nor hands anything on");
        }
        sd.updateVariableNameAndReference(objective, OBJECTIVE);
        sd.setLossVariables(OBJECTIVE);
        List<String> needGrad = new ArrayList<>(received);
        needGrad.addAll(params);
        if (!needGrad.isEmpty()) {
            // A stage that reads only placeholders and has no parameters (a leading reshape) has no backward.
            sd.createGradFunction(needGrad.toArray(new String[0]));
        }
        return new StageGraph(stage, sd, received, placeholders, outputs, params, stageLosses);
    }

    /** The stage's forward: its outputs for later stages, from its received activations and placeholders. */
    Map<String, INDArray> forward(Map<String, INDArray> feeds) {
        if (outputs.isEmpty()) {
            return Map.of();
        }
        return new LinkedHashMap<>(sd.output(feeds, outputs.toArray(new String[0])));
    }

    /**
     * The stage's backward: gradients of the loss for its parameters and received activations, given the gradient
     * of the loss for each of its outputs ({@code outputGrads}, keyed by output name). The outputs hold the values of
     * the stage's {@link #losses}.
     */
    OutAndGrad backward(Map<String, INDArray> feeds, Map<String, INDArray> outputGrads) {
        Map<String, INDArray> all = new LinkedHashMap<>(feeds);
        for (String o : outputs) {
            INDArray g = outputGrads.get(o);
            if (g == null) {
                throw new IllegalStateException("stage " + stage.index() + " got no gradient for its output '" + o + "'");
            }
            all.put(GRAD_PREFIX + o, g);
        }
        List<String> wrt = new ArrayList<>(parameters);
        wrt.addAll(receivedActivations);
        return sd.calculateGradientsAndOutputs(all, losses.isEmpty() ? List.of(OBJECTIVE) : losses, wrt);
    }
}
