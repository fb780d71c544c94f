package dev.poniard.bridge;

import java.util.ArrayList;
import java.util.BitSet;
import java.util.Collection;
import java.util.Collections;
import java.util.HashMap;
import java.util.HashSet;
import java.util.IdentityHashMap;
import java.util.Iterator;
import java.util.LinkedHashMap;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.concurrent.atomic.AtomicLong;
import java.util.function.Function;
import org.nd4j.autodiff.functions.DifferentialFunction;
import org.nd4j.autodiff.samediff.SDVariable;
import org.nd4j.autodiff.samediff.SameDiff;
import org.nd4j.autodiff.samediff.VariableType;
import org.nd4j.autodiff.samediff.api.OutAndGrad;
import org.nd4j.autodiff.samediff.internal.SameDiffOp;
import org.nd4j.autodiff.samediff.internal.Variable;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

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
 * gradients of the full loss with respect to the stage's parameters and inputs (chain rule).
 *
 * <p>By default the forward is not recomputed: the stage's gradient function is imported as a {@link SameDiffDag} and
 * split in two. {@link #forwardKeeping} runs, op by op through {@link OpRunner}, the ops the stage's outputs and losses
 * need (they never read the {@code poniard-grad/} placeholders) and keeps the values the remaining ops read;
 * {@link #backward(Map, Map, Kept)} runs only the remaining ops on those values. Parameters are read from this stage
 * graph, which the updater changes in place. When recompute is asked for, or the gradient function holds an op the
 * executor refuses, backward recomputes the forward inside SameDiff and only the boundary activations are kept.
 *
 * <p>Pruning edits the duplicate's op and variable tables through SameDiff's public accessors; it never touches the
 * caller's graph. A stage graph is used by one thread at a time.
 */
final class StageGraph {
    static final String GRAD_PREFIX = "poniard-grad/";
    static final String OBJECTIVE = "poniard-stage-objective";
    private static final Logger LOG = LoggerFactory.getLogger(StageGraph.class);

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
    /** The forward/backward split of the gradient function, or null when backward recomputes the forward. */
    private final Split split;
    /** Executions of the stage's forward ops by {@link #forwardKeeping} and split backward (a test hook). */
    final AtomicLong forwardOpRuns = new AtomicLong();

    private StageGraph(Stage stage, SameDiff sd, List<String> received, List<String> placeholders, List<String> outputs,
                       List<String> parameters, List<String> losses, boolean recompute,
                       Function<DifferentialFunction, String> refuse) {
        this.losses = List.copyOf(losses);
        this.stage = stage;
        this.sd = sd;
        this.receivedActivations = List.copyOf(received);
        this.placeholders = List.copyOf(placeholders);
        this.outputs = List.copyOf(outputs);
        this.parameters = List.copyOf(parameters);
        this.split = recompute ? null : split(refuse);
    }

    /** Builds stage {@code stage} of {@code dag}, keeping its forward values for backward (no recompute). */
    static StageGraph build(SameDiffDag dag, Stage stage, List<String> losses) {
        return build(dag, stage, losses, false, OpRunner::unsupportedReason);
    }

    /**
     * Builds stage {@code stage} of {@code dag}; {@code losses} are the graph's losses. With {@code recompute} backward
     * recomputes the forward; otherwise it does so only if {@code refuse} names a reason for an op of the gradient
     * function ({@link OpRunner#unsupportedReason} outside tests).
     */
    static StageGraph build(SameDiffDag dag, Stage stage, List<String> losses, boolean recompute,
                            Function<DifferentialFunction, String> refuse) {
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
        return new StageGraph(stage, sd, received, placeholders, outputs, params, stageLosses,
                recompute || needGrad.isEmpty(), refuse);
    }

    /** The split of the gradient function, or null (with a debug log naming the op) if an op must run in SameDiff. */
    private Split split(Function<DifferentialFunction, String> refuse) {
        SameDiff gradFn = sd.getFunction("grad");
        SameDiffDag gd;
        try {
            gd = SameDiffDag.importGraph(gradFn);
        } catch (UnsupportedGraphException e) {
            LOG.debug("stage {} recomputes its forward in backward: {}", stage.index(), e.getMessage());
            return null;
        }
        List<String> wrt = new ArrayList<>(parameters);
        wrt.addAll(receivedActivations);
        Map<String, String> gradName = new LinkedHashMap<>();
        for (String w : wrt) {
            SDVariable g = sd.getVariable(w).getGradient();
            if (g != null && gd.variables().containsKey(g.name())) {
                gradName.put(w, g.name());
            }
        }
        Set<String> fwdTargets = new LinkedHashSet<>(outputs);
        fwdTargets.addAll(losses);
        BitSet fwd = gd.requiredOps(fwdTargets);
        Map<String, String> seeds = outputGradientSeeds(gd);
        BitSet bwd = gd.requiredOps(gradName.values(), seeds.keySet());
        bwd.andNot(fwd);
        BitSet all = (BitSet) fwd.clone();
        all.or(bwd);
        for (int i = all.nextSetBit(0); i >= 0; i = all.nextSetBit(i + 1)) {
            DifferentialFunction fn = gd.ops().get(i).fn;
            String reason = refuse.apply(fn);
            if (reason != null) {
                LOG.debug("stage {} recomputes its forward in backward: {} cannot run outside SameDiff: {}", stage.index(),
                        OpRunner.describe(fn), reason);
                return null;
            }
        }
        List<SameDiffDag.OpNode> fwdOps = new ArrayList<>();
        List<SameDiffDag.OpNode> bwdOps = new ArrayList<>();
        for (int i = fwd.nextSetBit(0); i >= 0; i = fwd.nextSetBit(i + 1)) {
            fwdOps.add(gd.ops().get(i));
        }
        // Keep what backward reads from the forward, and the losses it reports.
        Set<String> keep = new LinkedHashSet<>(losses);
        for (int i = bwd.nextSetBit(0); i >= 0; i = bwd.nextSetBit(i + 1)) {
            SameDiffDag.OpNode op = gd.ops().get(i);
            bwdOps.add(op);
            for (String in : op.inputs()) {
                int p = gd.variable(in).producer();
                if (p >= 0 && fwd.get(p)) {
                    keep.add(in);
                }
            }
        }
        return new Split(gradFn, gd, fwdOps, bwdOps, keep, gradName, seeds);
    }

    /**
     * The gradient of the objective's term sum(o ⊙ g) with respect to an output o is the fed g itself: the
     * {@code multiply_bp} output that carries it, mapped to g's placeholder, for every output whose term SameDiff
     * differentiated that way. Backward seeds those variables with g and skips the product, its sum and their
     * gradients, three ops per output and micro-batch that cost ~0.4 ms per micro-batch on the bench model.
     */
    private Map<String, String> outputGradientSeeds(SameDiffDag gd) {
        Map<String, String> seeds = new LinkedHashMap<>();
        for (String o : outputs) {
            String g = GRAD_PREFIX + o;
            for (SameDiffDag.OpNode op : gd.ops()) {
                List<String> in = op.inputs();
                if (op.type().equals("multiply_bp") && in.size() == 3 && in.get(0).equals(o) && in.get(1).equals(g)) {
                    seeds.put(op.outputs().get(0), g);
                }
            }
        }
        return seeds;
    }

    /** Whether backward recomputes the forward (by choice, or because an op must run inside SameDiff). */
    boolean recomputes() {
        return split == null;
    }

    /**
     * The forward of a stage that keeps what its backward needs: its outputs for later stages and the kept values,
     * which {@link #backward(Map, Map, Kept)} consumes and releases. With recompute the kept values are empty (and the
     * last stage computes nothing).
     */
    Kept forwardKeeping(Map<String, INDArray> feeds) {
        if (split == null) {
            return new Kept(forward(feeds), new HashMap<>(), 0);
        }
        Map<String, INDArray> values = run(split.forwardOps, feeds, new HashMap<>(), true);
        Map<String, INDArray> out = new LinkedHashMap<>();
        for (String o : outputs) {
            out.put(o, values.get(o));
        }
        Map<String, INDArray> kept = new HashMap<>();
        for (String k : split.keep) {
            kept.put(k, values.get(k));
        }
        // Count each kept array once, unless it is a stage output or a feed (accounted as boundary activations).
        Set<INDArray> boundary = identitySet(out.values());
        boundary.addAll(feeds.values());
        long bytes = 0;
        for (INDArray a : identitySet(kept.values())) {
            if (!boundary.contains(a)) {
                bytes += a.length() * a.dataType().width();
            }
        }
        // What is neither kept nor handed on is no longer referenced: free it now rather than at the next GC.
        Set<INDArray> referenced = identitySet(kept.values());
        referenced.addAll(boundary);
        closeComputed(values.values(), referenced, feeds);
        return new Kept(out, kept, bytes);
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
        return backward(feeds, outputGrads, null);
    }

    /**
     * The backward of a micro-batch whose forward ran through {@link #forwardKeeping}: only the gradient ops run, on
     * the kept values, which are released (and the arrays this graph allocated for them freed) before it returns.
     * Without kept values (recompute) SameDiff recomputes the forward.
     */
    OutAndGrad backward(Map<String, INDArray> feeds, Map<String, INDArray> outputGrads, Kept kept) {
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
        if (split == null || kept == null) {
            return sd.calculateGradientsAndOutputs(all, losses.isEmpty() ? List.of(OBJECTIVE) : losses, wrt);
        }
        Map<String, INDArray> keptValues = kept.take();
        Map<String, INDArray> values = new HashMap<>(keptValues);
        split.seeds.forEach((seed, g) -> values.put(seed, all.get(g)));
        run(split.backwardOps, all, values, false);
        Map<String, INDArray> grads = new LinkedHashMap<>();
        for (String w : wrt) {
            String g = split.gradName.get(w);
            grads.put(w, g == null ? null : values.get(g));
        }
        Map<String, INDArray> lossValues = new LinkedHashMap<>();
        for (String l : losses) {
            lossValues.put(l, keptValues.get(l));
        }
        // Free what this graph allocated and nobody else holds: not the feeds, gradients, outputs handed on or losses.
        Set<INDArray> referenced = identitySet(grads.values());
        referenced.addAll(all.values());
        referenced.addAll(kept.outputs.values());
        referenced.addAll(lossValues.values());
        closeComputed(values.values(), referenced, all);
        return new OutAndGrad(lossValues, grads);
    }

    /**
     * Runs {@code ops} of the gradient function in order through {@link OpRunner}; {@code values} holds (and receives)
     * the activations, {@code feeds} the placeholders. Parameters come from this graph (the updater's copies).
     */
    private Map<String, INDArray> run(List<SameDiffDag.OpNode> ops, Map<String, INDArray> feeds,
                                      Map<String, INDArray> values, boolean forward) {
        SameDiffDag gd = split.dag;
        for (SameDiffDag.OpNode op : ops) {
            INDArray[] in = new INDArray[op.inputs().size()];
            for (int i = 0; i < in.length; i++) {
                String name = op.inputs().get(i);
                in[i] = switch (gd.variable(name).kind()) {
                    case PLACEHOLDER -> feeds.get(name);
                    // The stage's parameters live in this graph; the gradient function adds a few of its own.
                    case PARAMETER -> sd.hasVariable(name) ? sd.getArrForVarName(name) : split.gradFn.getArrForVarName(name);
                    case CONSTANT -> split.gradFn.getArrForVarName(name);
                    case ACTIVATION -> values.get(name);
                };
                if (in[i] == null) {
                    throw new IllegalStateException("stage " + stage.index() + " has no value for '" + name + "', read by "
                            + OpRunner.describe(op.fn) + (forward ? " in its forward" : " in its backward (the forward did "
                            + "not keep it)"));
                }
            }
            INDArray[] out = OpRunner.run(split.gradFn, op.fn, in);
            for (int i = 0; i < out.length; i++) {
                values.put(op.outputs().get(i), out[i]);
            }
            if (forward) {
                forwardOpRuns.incrementAndGet();
            }
        }
        return values;
    }

    /**
     * Closes each array of {@code computed} once unless it is {@code referenced} or is a feed, parameter or constant
     * passed through (an Identity op returns its input itself).
     */
    /**
     * Frees the parameter gradients a split backward returned (this graph allocated them) once the caller has added
     * them up: left to the GC, every micro-batch's gradients land on fresh pages (~13 us per page here, milliseconds
     * for a first layer's weight gradient). Never closes {@code keep} (input gradients still being sent), feeds,
     * parameters or the gradient function's constants. With recompute the arrays came from SameDiff and are left alone.
     */
    void releaseGradients(OutAndGrad og, Collection<INDArray> keep, Map<String, INDArray> feeds) {
        if (split == null) {
            return;
        }
        List<INDArray> computed = new ArrayList<>();
        for (String p : parameters) {
            computed.add(og.getGradients().get(p));
        }
        closeComputed(computed, identitySet(keep), feeds);
    }

    private void closeComputed(Collection<INDArray> computed, Set<INDArray> referenced, Map<String, INDArray> feeds) {
        Set<INDArray> keepOpen = identitySet(referenced);
        keepOpen.addAll(feeds.values());
        for (String p : parameters) {
            keepOpen.add(sd.getArrForVarName(p));
        }
        for (SDVariable c : split.gradFn.variables()) {
            if (c.getVariableType() == VariableType.CONSTANT || c.getVariableType() == VariableType.VARIABLE) {
                keepOpen.add(split.gradFn.getArrForVarName(c.name()));
            }
        }
        for (INDArray a : identitySet(computed)) {
            if (a != null && !keepOpen.contains(a) && !a.wasClosed() && a.closeable()) {
                a.close();
            }
        }
    }

    private static Set<INDArray> identitySet(Collection<INDArray> arrays) {
        Set<INDArray> s = Collections.newSetFromMap(new IdentityHashMap<>());
        for (INDArray a : arrays) {
            if (a != null) {
                s.add(a);
            }
        }
        return s;
    }

    /** The gradient function cut into the ops the stage's outputs and losses need, and the rest. */
    private record Split(SameDiff gradFn, SameDiffDag dag, List<SameDiffDag.OpNode> forwardOps,
                         List<SameDiffDag.OpNode> backwardOps, Set<String> keep, Map<String, String> gradName,
                         Map<String, String> seeds) {
    }

    /** The ops a split backward runs, in order; empty with recompute (a test hook). */
    List<SameDiffDag.OpNode> backwardOps() {
        return split == null ? List.of() : split.backwardOps;
    }

    /** Number of forward ops {@link #forwardKeeping} runs per micro-batch, or -1 with recompute. */
    int forwardOpCount() {
        return split == null ? -1 : split.forwardOps.size();
    }

    /**
     * One micro-batch's forward: the outputs handed to later stages and the values kept for its backward, which
     * {@link #backward(Map, Map, Kept)} takes (once) and then releases.
     */
    static final class Kept {
        final Map<String, INDArray> outputs;
        private Map<String, INDArray> values;
        /** Bytes of the kept values that are neither outputs nor feeds. */
        final long bytes;

        Kept(Map<String, INDArray> outputs, Map<String, INDArray> values, long bytes) {
            this.outputs = outputs;
            this.values = values;
            this.bytes = bytes;
        }

        /** Names of the kept values. */
        Set<String> names() {
            Map<String, INDArray> v = values;
            return v == null ? Set.of() : Set.copyOf(v.keySet());
        }

        private synchronized Map<String, INDArray> take() {
            if (values == null) {
                throw new IllegalStateException("the kept forward values were already consumed by a backward");
            }
            Map<String, INDArray> v = values;
            values = null;
            return v;
        }
    }
}
