package dev.poniard.bridge;

import dev.poniard.scheduler.Scheduler;
import dev.poniard.scheduler.TaskFailedException;
import dev.poniard.scheduler.TaskHandle;
import dev.poniard.scheduler.TaskOptions;
import java.time.Duration;
import java.util.ArrayDeque;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.BitSet;
import java.util.Collection;
import java.util.Collections;
import java.util.HashMap;
import java.util.HashSet;
import java.util.LinkedHashMap;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Map;
import java.util.Objects;
import java.util.PriorityQueue;
import java.util.Set;
import org.nd4j.autodiff.functions.DifferentialFunction;
import org.nd4j.autodiff.samediff.SDVariable;
import org.nd4j.autodiff.samediff.SameDiff;
import org.nd4j.autodiff.samediff.VariableType;
import org.nd4j.autodiff.samediff.internal.SameDiffOp;
import org.nd4j.autodiff.samediff.internal.Variable;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.api.ops.DynamicCustomOp;

/**
 * A SameDiff graph as a DAG of op tasks: every op with its input and output variables, a topological order, a cost
 * per op (estimated from its shapes, or timed), and a partition into contiguous pipeline stages.
 *
 * <pre>{@code
 * SameDiffDag dag = SameDiffDag.importGraph(sd).estimateCosts(Map.of("in", sampleBatch));
 * List<Stage> stages = dag.partition(2);                       // balanced by time, then parameter memory
 * try (Scheduler s = Scheduler.launch(new Scheduler.Context().workers(2))) {
 *     INDArray out = dag.output(s, Map.of("in", batch), "softmax").get("softmax");   // == sd.output(...)
 * }
 * }</pre>
 *
 * <p>Import refuses what a static DAG of kernels cannot express: control flow (Enter, Exit, Merge, Switch,
 * NextIteration, LoopCond, While), TensorArray lists, nested function calls and the ops SameDiff's session runs by
 * special code; {@link #requireDifferentiable()} also refuses ops without a gradient on the way from a trainable
 * parameter to the loss. Every refusal is an {@link UnsupportedGraphException} naming the op.
 *
 * <p>A dag holds the graph it came from and reads parameter and constant arrays at execution time, so it follows
 * training; it does not follow structural changes to the graph (re-import after adding ops).
 */
public final class SameDiffDag {
    /** What a variable is, in the terms of the DAG (SameDiff's {@link VariableType}). */
    public enum VarKind {
        /** Trainable parameter (VARIABLE). */
        PARAMETER,
        CONSTANT,
        /** Fed at execution time. */
        PLACEHOLDER,
        /** Produced by an op (ARRAY). */
        ACTIVATION
    }

    /** A variable of the graph; {@code producer} is the index of the op that outputs it, or -1. */
    public record Var(String name, VarKind kind, DataType dataType, int producer, List<Integer> consumers) {
    }

    /** One op: its inputs and outputs in the op's own argument order, and the ops it waits for. */
    public static final class OpNode {
        private final int index;
        private final String name;
        private final String type;
        private final List<String> inputs;
        private final List<String> outputs;
        private final int[] predecessors;
        private final List<String> parameters;
        private final long parameterBytes;
        private final OpCost cost;
        private final int backwardWeight;
        final DifferentialFunction fn;

        OpNode(int index, String name, String type, List<String> inputs, List<String> outputs, int[] predecessors,
               List<String> parameters, long parameterBytes, OpCost cost, int backwardWeight, DifferentialFunction fn) {
            this.index = index;
            this.name = name;
            this.type = type;
            this.inputs = List.copyOf(inputs);
            this.outputs = List.copyOf(outputs);
            this.predecessors = predecessors;
            this.parameters = List.copyOf(parameters);
            this.parameterBytes = parameterBytes;
            this.cost = cost;
            this.backwardWeight = backwardWeight;
            this.fn = fn;
        }

        OpNode withCost(OpCost c) {
            return new OpNode(index, name, type, inputs, outputs, predecessors, parameters, parameterBytes, c,
                    backwardWeight, fn);
        }

        /** Position in {@link SameDiffDag#ops()}, a topological order. */
        public int index() {
            return index;
        }

        /** The op's own name in the graph (unique). */
        public String name() {
            return name;
        }

        /** The op type, e.g. {@code matmul}, {@code conv2d}. */
        public String type() {
            return type;
        }

        public List<String> inputs() {
            return inputs;
        }

        public List<String> outputs() {
            return outputs;
        }

        /** Indices of the ops this op waits for (data and control dependencies), ascending. */
        public int[] predecessors() {
            return predecessors.clone();
        }

        /** Trainable parameters whose first use in topological order is this op. */
        public List<String> parameters() {
            return parameters;
        }

        public long parameterBytes() {
            return parameterBytes;
        }

        /**
         * The forward's cost: a shape-based estimate, or timed; {@link OpCost#ZERO} until {@link SameDiffDag#estimateCosts}
         * or {@link SameDiffDag#timeCosts} ran.
         */
        public OpCost cost() {
            return cost;
        }

        /**
         * The op's backward cost in units of its forward: one product per input that needs a gradient for a matrix
         * product or convolution (of its first two inputs), 1 for any other op that has an input needing a gradient
         * (a trainable parameter, or an activation computed from one), 0 for ops off the gradient path.
         */
        public int backwardWeight() {
            return backwardWeight;
        }

        /**
         * Forward and backward, what the partition balances: the timed times where {@link SameDiffDag#timeCosts}
         * measured the backward, else {@code cost().nanos() * (1 + backwardWeight())}.
         */
        public double trainingNanos() {
            double backward = cost.timedBackwardNanos();
            return Double.isNaN(backward) ? cost.nanos() * (1 + backwardWeight) : cost.nanos() + backward;
        }

        @Override
        public String toString() {
            return name + " (" + type + ")";
        }
    }

    /** Op types that are matrix products, and convolutions: costed by flops, two gradient products each. */
    static final Set<String> PRODUCTS = Set.of("matmul", "mmul", "xw_plus_b", "tensormmul", "batched_gemm");
    static final Set<String> CONVOLUTIONS = Set.of("conv1d", "conv2d", "conv3dnew", "deconv2d", "deconv3d",
            "depthwise_conv2d", "sconv2d");

    private final SameDiff sd;
    private final List<OpNode> ops;
    private final Map<String, Var> vars;
    private final Map<String, Integer> opIndex;
    private final Map<String, long[]> shapes;

    private SameDiffDag(SameDiff sd, List<OpNode> ops, Map<String, Var> vars, Map<String, long[]> shapes) {
        this.sd = sd;
        this.ops = List.copyOf(ops);
        this.vars = Collections.unmodifiableMap(vars);
        this.shapes = Collections.unmodifiableMap(shapes);
        Map<String, Integer> idx = new HashMap<>();
        for (OpNode o : ops) {
            idx.put(o.name, o.index);
        }
        this.opIndex = idx;
    }

    /**
     * Walks {@code sd}'s ops and variables into a DAG in topological order (SameDiff's own insertion order wherever
     * that is valid). Costs are zero until {@link #estimateCosts}.
     *
     * @throws UnsupportedGraphException for control flow and other ops that cannot run as a plain kernel task
     */
    public static SameDiffDag importGraph(SameDiff sd) {
        Objects.requireNonNull(sd, "sd");
        Map<String, SameDiffOp> sdOps = sd.getOps();
        Map<String, Variable> sdVars = sd.getVariables();
        List<String> names = new ArrayList<>(sdOps.keySet());
        Map<String, Integer> insertion = new HashMap<>();
        for (int i = 0; i < names.size(); i++) {
            insertion.put(names.get(i), i);
            DifferentialFunction df = sdOps.get(names.get(i)).getOp();
            String reason = OpRunner.unsupportedReason(df);
            if (reason != null) {
                throw new UnsupportedGraphException(names.get(i), OpRunner.describe(df) + " is not supported by the bridge: "
                        + reason);
            }
        }
        for (Variable v : sdVars.values()) {
            if (v.getVariable().getVariableType() == VariableType.SEQUENCE) {
                String op = v.getOutputOfOp();
                throw new UnsupportedGraphException(op, "variable '" + v.getName() + "'"
                        + (op == null ? "" : " (output of op '" + op + "')")
                        + " is a SEQUENCE (a list of arrays); the bridge only schedules ops on arrays");
            }
        }

        // Dependencies between ops, by insertion index: data (inputs), control (ops, variables).
        int n = names.size();
        List<Set<Integer>> preds = new ArrayList<>(n);
        for (int i = 0; i < n; i++) {
            SameDiffOp op = sdOps.get(names.get(i));
            Set<Integer> p = new LinkedHashSet<>();
            for (String in : nullSafe(op.getInputsToOp())) {
                addProducer(p, sdVars.get(in), insertion);
            }
            for (String in : nullSafe(op.getVarControlDeps())) {
                addProducer(p, sdVars.get(in), insertion);
            }
            for (String c : nullSafe(op.getControlDeps())) {
                Integer j = insertion.get(c);
                if (j != null) {
                    p.add(j);
                }
            }
            p.remove(i);
            preds.add(p);
        }
        int[] order = topologicalOrder(names, preds);
        // Ops a loss depends on (all ops when the graph has no loss): only they run backward.
        BitSet towardLoss = new BitSet(n);
        List<String> losses = sd.getLossVariables();
        ArrayDeque<Integer> work = new ArrayDeque<>();
        for (String l : losses == null ? List.<String>of() : losses) {
            addProducer(work, sdVars.get(l), insertion);
        }
        while (!work.isEmpty()) {
            int i = work.poll();
            if (!towardLoss.get(i)) {
                towardLoss.set(i);
                work.addAll(preds.get(i));
            }
        }
        if (towardLoss.isEmpty()) {
            towardLoss.set(0, n);
        }
        int[] position = new int[n];
        for (int k = 0; k < n; k++) {
            position[order[k]] = k;
        }

        // Each parameter is charged to the first op that reads it.
        Set<String> charged = new LinkedHashSet<>();
        Set<String> needGradient = new HashSet<>();
        List<OpNode> nodes = new ArrayList<>(n);
        for (int k = 0; k < n; k++) {
            SameDiffOp op = sdOps.get(names.get(order[k]));
            List<String> inputs = nullSafe(op.getInputsToOp());
            List<String> params = new ArrayList<>();
            long paramBytes = 0;
            for (String in : inputs) {
                SDVariable v = sd.getVariable(in);
                if (v.getVariableType() == VariableType.VARIABLE && charged.add(in)) {
                    params.add(in);
                    INDArray arr = v.getArr();
                    paramBytes += arr == null ? 0 : arr.length() * arr.dataType().width();
                }
            }
            int[] p = preds.get(order[k]).stream().mapToInt(j -> position[j]).sorted().toArray();
            String type = op.getOp().opName();
            int needing = 0;
            int productsNeeding = 0;
            for (int i = 0; i < inputs.size(); i++) {
                SDVariable v = sd.getVariable(inputs.get(i));
                if (v.getVariableType() == VariableType.VARIABLE && v.dataType().isFPType()
                        || needGradient.contains(inputs.get(i))) {
                    needing++;
                    productsNeeding += i < 2 ? 1 : 0;
                }
            }
            if (needing > 0) {
                needGradient.addAll(nullSafe(op.getOutputsOfOp()));
            }
            boolean product = PRODUCTS.contains(type) || CONVOLUTIONS.contains(type);
            int backward = needing == 0 || !towardLoss.get(order[k]) ? 0 : product ? Math.max(1, productsNeeding) : 1;
            nodes.add(new OpNode(k, op.getName(), type, inputs, nullSafe(op.getOutputsOfOp()), p, params,
                    paramBytes, OpCost.ZERO, backward, op.getOp()));
        }

        Map<String, Var> vars = new LinkedHashMap<>();
        for (Map.Entry<String, Variable> e : sdVars.entrySet()) {
            SDVariable v = e.getValue().getVariable();
            Integer producer = e.getValue().getOutputOfOp() == null ? null : insertion.get(e.getValue().getOutputOfOp());
            List<Integer> consumers = new ArrayList<>();
            for (String c : nullSafe(e.getValue().getInputsForOp())) {
                Integer j = insertion.get(c);
                if (j != null && !consumers.contains(position[j])) {
                    consumers.add(position[j]);
                }
            }
            Collections.sort(consumers);
            vars.put(e.getKey(), new Var(e.getKey(), kind(v.getVariableType()), v.dataType(),
                    producer == null ? -1 : position[producer], List.copyOf(consumers)));
        }
        return new SameDiffDag(sd, nodes, vars, new HashMap<>());
    }

    /**
     * Imports the backward pass: SameDiff's gradient function of {@code sd} (created if it does not exist yet), which
     * holds the forward ops and, for each, the ops of its gradient. Its outputs are the gradient variables, named by
     * {@link #gradientNames}; {@code output(scheduler, feeds, gradientNames(sd).values()...)} equals
     * {@code sd.calculateGradients(feeds, ...)}.
     *
     * @throws UnsupportedGraphException if an op between a parameter and the loss has no gradient, or if the gradient
     *                                   function contains an op the bridge cannot run
     */
    public static SameDiffDag importGradient(SameDiff sd) {
        importGraph(sd).requireDifferentiable();
        if (!sd.hasGradientFunction()) {
            sd.createGradFunction();
        }
        return importGraph(sd.getFunction("grad"));
    }

    /** For every trainable parameter of {@code sd} with a gradient: the name of its gradient variable. */
    public static Map<String, String> gradientNames(SameDiff sd) {
        Map<String, String> m = new LinkedHashMap<>();
        for (SDVariable v : sd.variables()) {
            if (v.getVariableType() == VariableType.VARIABLE && v.getGradient() != null) {
                m.put(v.name(), v.getGradient().name());
            }
        }
        return m;
    }

    private static void addProducer(Collection<Integer> p, Variable v, Map<String, Integer> insertion) {
        if (v != null && v.getOutputOfOp() != null) {
            Integer j = insertion.get(v.getOutputOfOp());
            if (j != null) {
                p.add(j);
            }
        }
    }

    /** Kahn's algorithm, always taking the ready op that came first in the graph, so the order is deterministic. */
    private static int[] topologicalOrder(List<String> names, List<Set<Integer>> preds) {
        int n = names.size();
        int[] missing = new int[n];
        List<List<Integer>> succ = new ArrayList<>(n);
        for (int i = 0; i < n; i++) {
            succ.add(new ArrayList<>());
        }
        for (int i = 0; i < n; i++) {
            missing[i] = preds.get(i).size();
            for (int j : preds.get(i)) {
                succ.get(j).add(i);
            }
        }
        PriorityQueue<Integer> ready = new PriorityQueue<>();
        for (int i = 0; i < n; i++) {
            if (missing[i] == 0) {
                ready.add(i);
            }
        }
        int[] order = new int[n];
        int k = 0;
        while (!ready.isEmpty()) {
            int i = ready.poll();
            order[k++] = i;
            for (int j : succ.get(i)) {
                if (--missing[j] == 0) {
                    ready.add(j);
                }
            }
        }
        if (k < n) {
            for (int i = 0; i < n; i++) {
                if (missing[i] > 0) {
                    throw new UnsupportedGraphException(names.get(i), "op '" + names.get(i)
                            + "' is on a dependency cycle; a cyclic graph needs control flow, which the bridge refuses");
                }
            }
        }
        return order;
    }

    private static VarKind kind(VariableType t) {
        return switch (t) {
            case VARIABLE -> VarKind.PARAMETER;
            case CONSTANT -> VarKind.CONSTANT;
            case PLACEHOLDER -> VarKind.PLACEHOLDER;
            default -> VarKind.ACTIVATION;
        };
    }

    private static <T> List<T> nullSafe(List<T> l) {
        return l == null ? List.of() : l;
    }

    // ------------------------------------------------------------------------------------------------
    // Queries

    /** The graph this DAG was imported from. */
    public SameDiff sameDiff() {
        return sd;
    }

    /** All ops in topological order. */
    public List<OpNode> ops() {
        return ops;
    }

    /** The op with this own name. */
    public OpNode op(String name) {
        Integer i = opIndex.get(name);
        if (i == null) {
            throw new IllegalArgumentException("no op named '" + name + "' in the graph");
        }
        return ops.get(i);
    }

    /** The op that outputs {@code variable} (SameDiff names ops by type, e.g. {@code xw_plus_b_1}; variables by you). */
    public OpNode producerOf(String variable) {
        int p = variable(variable).producer();
        if (p < 0) {
            throw new IllegalArgumentException("variable '" + variable + "' is a " + variable(variable).kind().name()
                    .toLowerCase() + ", not the output of an op");
        }
        return ops.get(p);
    }

    public Map<String, Var> variables() {
        return vars;
    }

    public Var variable(String name) {
        Var v = vars.get(name);
        if (v == null) {
            throw new IllegalArgumentException("no variable named '" + name + "' in the graph");
        }
        return v;
    }

    /** The shape a variable had in the sample of {@link #estimateCosts}, or null if unknown. */
    public long[] shape(String variable) {
        long[] s = shapes.get(variable);
        return s == null ? null : s.clone();
    }

    /** Sum of the ops' estimated times, in nanoseconds on one worker. */
    public double totalCostNanos() {
        double t = 0;
        for (OpNode o : ops) {
            t += o.cost.nanos();
        }
        return t;
    }

    /** The ops that {@code outputs} depend on, as a set of op indices. */
    public BitSet requiredOps(Collection<String> outputs) {
        return requiredOps(outputs, Set.of());
    }

    /**
     * The ops that {@code outputs} depend on when the variables {@code given} are supplied from outside: their
     * producers, and what only those need, are left out.
     */
    public BitSet requiredOps(Collection<String> outputs, Set<String> given) {
        BitSet need = new BitSet(ops.size());
        ArrayDeque<Integer> work = new ArrayDeque<>();
        for (String o : outputs) {
            int p = given.contains(o) ? -1 : variable(o).producer();
            if (p >= 0 && !need.get(p)) {
                need.set(p);
                work.add(p);
            }
        }
        while (!work.isEmpty()) {
            OpNode q = ops.get(work.poll());
            for (int p : q.predecessors) {
                if (!need.get(p) && !onlyThroughGiven(q, p, given)) {
                    need.set(p);
                    work.add(p);
                }
            }
        }
        return need;
    }

    /** Whether op {@code q} reads what op {@code p} produces only through {@code given} variables (not control deps). */
    private boolean onlyThroughGiven(OpNode q, int p, Set<String> given) {
        boolean reads = false;
        for (String in : q.inputs) {
            if (variable(in).producer() == p) {
                if (!given.contains(in)) {
                    return false;
                }
                reads = true;
            }
        }
        return reads;
    }

    // ------------------------------------------------------------------------------------------------
    // Costs

    /**
     * Runs every op once, in topological order on the calling thread and outside the graph (as tasks will), on a
     * sample batch, and returns a DAG whose ops carry cost estimates from the shapes seen: flops for matrix products
     * and convolutions, bytes moved otherwise. A small batch is enough; costs scale with it.
     *
     * @param sampleFeeds a value for every placeholder that some op reads
     * @throws UnsupportedGraphException if an op cannot run outside the graph
     * @throws IllegalArgumentException naming a missing placeholder
     */
    public SameDiffDag estimateCosts(Map<String, INDArray> sampleFeeds) {
        Map<String, INDArray> values = new HashMap<>();
        Map<String, long[]> seen = new HashMap<>();
        List<OpNode> costed = new ArrayList<>(ops.size());
        for (OpNode op : ops) {
            INDArray[] in = new INDArray[op.inputs.size()];
            for (int i = 0; i < in.length; i++) {
                in[i] = valueOf(op.inputs.get(i), sampleFeeds, values, op);
                seen.put(op.inputs.get(i), in[i].shape());
            }
            INDArray[] out = OpRunner.run(sd, op.fn, in);
            for (int i = 0; i < out.length; i++) {
                values.put(op.outputs.get(i), out[i]);
                seen.put(op.outputs.get(i), out[i].shape());
            }
            costed.add(op.withCost(estimate(op.type, in, out)));
        }
        return new SameDiffDag(sd, costed, new LinkedHashMap<>(vars), seen);
    }

    /**
     * {@link #estimateCosts} with each op's times measured on {@code sampleFeeds}: for a graph with a loss its
     * gradient function (forward and gradient ops) runs op by op {@code passes} times, stopping early once
     * {@code budget} has passed after at least three, and each op's median time becomes its forward cost, the median
     * times of the gradient ops that compute its inputs' gradients from its outputs' its backward cost (a gradient op
     * shared by several ops counts for the last of them). A graph without a loss, or whose gradient function holds an
     * op the bridge cannot run, has its forward ops timed alone.
     *
     * <p>Stages balanced by these times match the run when the sample has the shape of a micro-batch: shape-based
     * estimates miss what an op costs beyond its flops and bytes (a transcendental function per element, a fixed launch
     * cost of tens of microseconds), which on small layers is most of it. The graph is left as it was (the gradient
     * function is built on a duplicate).
     *
     * @param sampleFeeds a value for every placeholder that some op reads
     * @param passes      timed passes (the untimed pass of {@link #estimateCosts} comes before them)
     * @param budget      wall time after which no further pass starts
     * @throws IllegalArgumentException if {@code passes} is below 1, or naming a missing placeholder
     */
    public SameDiffDag timeCosts(Map<String, INDArray> sampleFeeds, int passes, Duration budget) {
        if (passes < 1) {
            throw new IllegalArgumentException("passes must be at least 1, got " + passes);
        }
        SameDiffDag estimated = estimateCosts(sampleFeeds);
        SameDiffDag timedDag = this;
        Map<String, BitSet> backwardOps = Map.of();
        List<String> losses = sd.getLossVariables();
        if (losses != null && !losses.isEmpty()) {
            try {
                requireDifferentiable();
                SameDiff withGradient = sd.dup();
                // Gradients of the trainable parameters only, as training computes them: not of the placeholders.
                withGradient.createGradFunction(vars.values().stream()
                        .filter(v -> v.kind() == VarKind.PARAMETER && v.dataType().isFPType()).map(Var::name)
                        .toArray(String[]::new));
                timedDag = importGraph(withGradient.getFunction("grad"));
                backwardOps = attributeGradientOps(withGradient, timedDag);
            } catch (UnsupportedGraphException e) {
                timedDag = this;
            }
        }
        long[] median = timedDag.medianOpTimes(sampleFeeds, passes, budget);
        List<OpNode> timed = new ArrayList<>(ops.size());
        for (OpNode op : estimated.ops) {
            Integer at = timedDag.opIndex.get(op.name);
            double forward = at == null ? Double.NaN : median[at];
            BitSet b = backwardOps.get(op.name);
            double backward = Double.NaN;
            if (b != null) {
                backward = 0;
                for (int i = b.nextSetBit(0); i >= 0; i = b.nextSetBit(i + 1)) {
                    backward += median[i];
                }
            }
            timed.add(op.withCost(op.cost.timed(forward, backward)));
        }
        return new SameDiffDag(sd, timed, new LinkedHashMap<>(vars), estimated.shapes);
    }

    /**
     * For every op of this graph, in reverse topological order, the ops of {@code gd} (the gradient function of
     * {@code withGradient}, a duplicate of this graph) that compute the gradients of its inputs from the gradients of
     * everything else, less the forward ops, the ops already given to a later op and the ops that no parameter's
     * gradient needs.
     */
    private Map<String, BitSet> attributeGradientOps(SameDiff withGradient, SameDiffDag gd) {
        Map<String, String> gradOf = new HashMap<>();
        for (SDVariable v : withGradient.variables()) {
            SDVariable g = v.getGradient();
            if (g != null && gd.vars.containsKey(g.name())) {
                gradOf.put(v.name(), g.name());
            }
        }
        BitSet claimed = new BitSet(gd.ops.size());
        for (OpNode op : ops) {
            Integer at = gd.opIndex.get(op.name);
            if (at != null) {
                claimed.set(at);
            }
        }
        // Only what the parameters' gradients need runs in training (not, say, the gradient of a placeholder).
        List<String> parameterGradients = new ArrayList<>();
        for (Var v : vars.values()) {
            if (v.kind() == VarKind.PARAMETER && gradOf.containsKey(v.name())) {
                parameterGradients.add(gradOf.get(v.name()));
            }
        }
        BitSet needed = gd.requiredOps(parameterGradients);
        Set<String> allGradients = new HashSet<>(gradOf.values());
        Map<String, BitSet> attributed = new HashMap<>();
        for (int k = ops.size() - 1; k >= 0; k--) {
            OpNode op = ops.get(k);
            Set<String> targets = new LinkedHashSet<>();
            for (String in : op.inputs) {
                if (gradOf.containsKey(in)) {
                    targets.add(gradOf.get(in));
                }
            }
            BitSet b = new BitSet(gd.ops.size());
            if (!targets.isEmpty()) {
                Set<String> given = new HashSet<>(allGradients);
                given.removeAll(targets);
                b = gd.requiredOps(targets, given);
                b.and(needed);
                b.andNot(claimed);
                claimed.or(b);
            }
            attributed.put(op.name, b);
        }
        return attributed;
    }

    /** Runs every op in topological order on {@code feeds}, passes times (see {@link #timeCosts}); median per op. */
    private long[] medianOpTimes(Map<String, INDArray> feeds, int passes, Duration budget) {
        long[][] times = new long[ops.size()][passes];
        int done = 0;
        long end = System.nanoTime() + budget.toNanos();
        while (done < passes && (done < 3 || System.nanoTime() < end)) {
            Map<String, INDArray> values = new HashMap<>();
            for (OpNode op : ops) {
                INDArray[] in = new INDArray[op.inputs.size()];
                for (int i = 0; i < in.length; i++) {
                    in[i] = valueOf(op.inputs.get(i), feeds, values, op);
                }
                long start = System.nanoTime();
                INDArray[] out = OpRunner.run(sd, op.fn, in);
                times[op.index][done] = System.nanoTime() - start;
                for (int i = 0; i < out.length; i++) {
                    values.put(op.outputs.get(i), out[i]);
                }
            }
            closeComputed(values.values(), feeds.values());
            done++;
        }
        long[] median = new long[ops.size()];
        for (int k = 0; k < median.length; k++) {
            long[] t = Arrays.copyOf(times[k], done);
            Arrays.sort(t);
            median[k] = Math.max(1, t[done / 2]);
        }
        return median;
    }

    /** Frees the arrays a pass computed, but never a feed, parameter or constant that an op passed through. */
    private void closeComputed(Collection<INDArray> computed, Collection<INDArray> feeds) {
        Set<INDArray> keep = Collections.newSetFromMap(new java.util.IdentityHashMap<>());
        keep.addAll(feeds);
        for (Var v : vars.values()) {
            if (v.kind() == VarKind.PARAMETER || v.kind() == VarKind.CONSTANT) {
                keep.add(sd.getArrForVarName(v.name()));
            }
        }
        Set<INDArray> closed = Collections.newSetFromMap(new java.util.IdentityHashMap<>());
        for (INDArray a : computed) {
            if (a != null && !keep.contains(a) && closed.add(a) && !a.wasClosed() && a.closeable()) {
                a.close();
            }
        }
    }

    private INDArray valueOf(String name, Map<String, INDArray> feeds, Map<String, INDArray> computed, OpNode reader) {
        Var v = variable(name);
        INDArray a = switch (v.kind()) {
            case PLACEHOLDER -> feeds.get(name);
            case PARAMETER, CONSTANT -> sd.getArrForVarName(name);
            case ACTIVATION -> computed.get(name);
        };
        if (a == null) {
            throw new IllegalArgumentException("no value for " + v.kind().name().toLowerCase() + " '" + name
                    + "'" + (reader == null ? "" : ", read by op '" + reader.name + "'") + (v.kind() == VarKind.PLACEHOLDER
                    ? ": add it to the feeds" : ""));
        }
        return a;
    }

    /** The cost of one op from the shapes of its inputs and outputs. */
    static OpCost estimate(String type, INDArray[] in, INDArray[] out) {
        double bytes = 0;
        for (INDArray a : in) {
            bytes += (double) a.length() * a.dataType().width();
        }
        for (INDArray a : out) {
            bytes += (double) a.length() * a.dataType().width();
        }
        double flops = 0;
        if (in.length >= 2 && out.length >= 1 && out[0].rank() >= 2) {
            double pa = in[0].length(), pb = in[1].length(), po = out[0].length();
            long[] os = out[0].shape();
            if (PRODUCTS.contains(type)) {
                // a = batch·M·K, b = batch·K·N, out = batch·M·N, so K = sqrt(pa·pb / (po·batch)), whatever the
                // transposes: no need to read the op's flags.
                double batch = po / ((double) os[os.length - 2] * os[os.length - 1]);
                double k = Math.sqrt(pa * pb / (po * Math.max(1, batch)));
                flops = 2 * po * Math.max(1, k);
            } else if (CONVOLUTIONS.contains(type)) {
                // Each output element is a dot product over one output channel's slice of the weights.
                long[] w = in[1].shape();
                long last = w[w.length - 1];
                boolean lastIsOut = os[1] == last || os[os.length - 1] == last;
                double outChannels = lastIsOut ? last : w[0];
                flops = 2 * po * (pb / Math.max(1, outChannels));
            }
        }
        return new OpCost(flops, bytes);
    }

    // ------------------------------------------------------------------------------------------------
    // Training checks

    /**
     * Refuses the graph for training if an op on the way from a trainable parameter to a loss variable has no
     * gradient in SameDiff (its class does not implement {@code doDiff}).
     *
     * @throws IllegalStateException if the graph has no loss variables
     * @throws UnsupportedGraphException naming the first such op in topological order
     */
    public void requireDifferentiable() {
        List<String> losses = sd.getLossVariables();
        if (losses == null || losses.isEmpty()) {
            throw new IllegalStateException("the graph has no loss variables: call sd.setLossVariables(...) "
                    + "or create the loss with sd.loss.*");
        }
        BitSet upstreamOfLoss = requiredOps(losses);
        BitSet downstreamOfParams = new BitSet(ops.size());
        for (OpNode op : ops) {
            boolean reads = false;
            for (String in : op.inputs) {
                Var v = variable(in);
                if (v.kind() == VarKind.PARAMETER && v.dataType().isFPType()
                        || v.kind() == VarKind.ACTIVATION && v.producer() >= 0 && downstreamOfParams.get(v.producer())) {
                    reads = true;
                    break;
                }
            }
            if (reads) {
                downstreamOfParams.set(op.index);
            }
        }
        downstreamOfParams.and(upstreamOfLoss);
        for (int i = downstreamOfParams.nextSetBit(0); i >= 0; i = downstreamOfParams.nextSetBit(i + 1)) {
            OpNode op = ops.get(i);
            if (!hasGradient(op.fn)) {
                throw new UnsupportedGraphException(op.name, OpRunner.describe(op.fn) + " has no gradient in "
                        + "SameDiff 1.0.0-M2.1 but lies between a trainable parameter and the loss "
                        + losses + "; replace it with differentiable ops or stop the gradient before it");
            }
        }
    }

    /** Whether the op's class implements {@code doDiff} (DynamicCustomOp's default only throws). */
    static boolean hasGradient(DifferentialFunction fn) {
        try {
            return fn.getClass().getMethod("doDiff", List.class).getDeclaringClass() != DynamicCustomOp.class;
        } catch (NoSuchMethodException e) {
            return false;
        }
    }

    // ------------------------------------------------------------------------------------------------
    // Stages

    /** How much slower than the fastest cut a cut may be and still be chosen for a smaller parameter memory. */
    static final double TIME_TOLERANCE = 0.02;

    /**
     * Splits the topological order into {@code stages} contiguous, non-empty groups that minimise the largest stage
     * time, forward and backward ({@link OpNode#trainingNanos}: the slowest stage paces the pipeline); among the cuts whose largest stage time is within
     * {@link #TIME_TOLERANCE} of that minimum, the one with the smallest largest stage parameter memory. Adding the
     * two as one weight would trade time for memory: on an MLP with a loss head it cut mid-layer, 15% off balance.
     * A cut never separates two ops that read the same trainable parameter ({@link #cuttable()}).
     *
     * @throws UnsupportedGraphException when no such cut into {@code stages} stages exists (weight tying)
     */
    public List<Stage> partition(int stages) {
        int n = ops.size();
        if (stages < 1 || stages > n) {
            throw new IllegalArgumentException("stages must be between 1 and the number of ops (" + n + "), got " + stages);
        }
        double[] time = new double[n + 1];
        double[] params = new double[n + 1];
        for (int i = 0; i < n; i++) {
            time[i + 1] = time[i] + ops.get(i).trainingNanos();
            params[i + 1] = params[i] + ops.get(i).parameterBytes;
        }
        boolean[] cuttable = cuttable();
        int[] fastest = minMaxCut(time, stages, time, Double.POSITIVE_INFINITY, cuttable);
        if (fastest == null) {
            List<String> tied = new ArrayList<>();
            for (Var v : vars.values()) {
                if (v.kind() == VarKind.PARAMETER && v.consumers().size() > 1) {
                    tied.add("'" + v.name() + "' (ops " + Collections.min(v.consumers()) + " to "
                            + Collections.max(v.consumers()) + ")");
                }
            }
            throw new UnsupportedGraphException(null, "the graph cannot be cut into " + stages + " stages without "
                    + "splitting the ops that read one parameter (weight tying), and a pipeline keeps each parameter "
                    + "in one stage; parameters read by several ops: " + String.join(", ", tied)
                    + "; use fewer stages or untie them");
        }
        double slowest = 0;
        for (int s = 0; s < stages; s++) {
            slowest = Math.max(slowest, time[fastest[s + 1]] - time[fastest[s]]);
        }
        int[] bounds = params[n] == 0 ? fastest
                : minMaxCut(params, stages, time, slowest * (1 + TIME_TOLERANCE), cuttable);
        return stagesAt(bounds);
    }

    /**
     * Where a pipeline cut may fall: {@code result[i]} (0 &lt;= i &lt;= ops) is false when some trainable parameter is
     * read both by an op before i and by an op from i on (weight tying), since a stage holds each parameter alone.
     */
    public boolean[] cuttable() {
        boolean[] ok = new boolean[ops.size() + 1];
        Arrays.fill(ok, true);
        for (Var v : vars.values()) {
            if (v.kind() == VarKind.PARAMETER && v.consumers().size() > 1) {
                for (int i = Collections.min(v.consumers()) + 1; i <= Collections.max(v.consumers()); i++) {
                    ok[i] = false;
                }
            }
        }
        return ok;
    }

    /**
     * The bounds of {@code stages} contiguous, non-empty groups of ops that minimise the largest group weight, weights
     * given as prefix sums, among the groups whose {@code limited} prefix-sum difference is at most {@code limit} (the
     * unconstrained optimum always satisfies its own limit), cutting only where {@code cuttable} allows; null when no
     * cut is allowed (null: every cut is).
     */
    static int[] minMaxCut(double[] weight, int stages, double[] limited, double limit, boolean[] cuttable) {
        int n = weight.length - 1;
        // best[s][i]: the smallest possible largest weight when ops [0, i) form s groups; cut[s][i] the last cut.
        double[][] best = new double[stages + 1][n + 1];
        int[][] cut = new int[stages + 1][n + 1];
        for (double[] row : best) {
            Arrays.fill(row, Double.POSITIVE_INFINITY);
        }
        best[0][0] = 0;
        for (int s = 1; s <= stages; s++) {
            for (int i = s; i <= n - (stages - s); i++) {
                for (int j = s - 1; j < i; j++) {
                    if (limited[i] - limited[j] > limit || j > 0 && cuttable != null && !cuttable[j]) {
                        continue;
                    }
                    double v = Math.max(best[s - 1][j], weight[i] - weight[j]);
                    if (v < best[s][i]) {
                        best[s][i] = v;
                        cut[s][i] = j;
                    }
                }
            }
        }
        if (best[stages][n] == Double.POSITIVE_INFINITY) {
            return null;
        }
        int[] bounds = new int[stages + 1];
        bounds[stages] = n;
        for (int s = stages; s >= 1; s--) {
            bounds[s - 1] = cut[s][bounds[s]];
        }
        return bounds;
    }

    /**
     * The stages whose ops are {@code [bounds[s], bounds[s+1])} of the topological order: another process's
     * {@link #partition} applied to this DAG (ranks must cut the graph at the same places).
     *
     * @throws IllegalArgumentException unless the bounds rise strictly from 0 to the number of ops
     */
    public List<Stage> stagesAt(int[] bounds) {
        int n = ops.size();
        if (bounds.length < 2 || bounds[0] != 0 || bounds[bounds.length - 1] != n) {
            throw new IllegalArgumentException("stage bounds must run from 0 to the number of ops (" + n + "), got "
                    + Arrays.toString(bounds));
        }
        List<Stage> result = new ArrayList<>(bounds.length - 1);
        for (int s = 0; s + 1 < bounds.length; s++) {
            if (bounds[s + 1] <= bounds[s]) {
                throw new IllegalArgumentException("stage bounds must rise strictly (no empty stage), got "
                        + Arrays.toString(bounds));
            }
            result.add(stage(s, bounds[s], bounds[s + 1]));
        }
        return result;
    }

    private Stage stage(int index, int from, int to) {
        double cost = 0;
        double backward = 0;
        long paramBytes = 0;
        List<String> params = new ArrayList<>();
        Set<String> inputs = new LinkedHashSet<>();
        Set<String> outputs = new LinkedHashSet<>();
        for (int i = from; i < to; i++) {
            OpNode op = ops.get(i);
            cost += op.cost.nanos();
            backward += op.trainingNanos() - op.cost.nanos();
            paramBytes += op.parameterBytes;
            params.addAll(op.parameters);
            for (String in : op.inputs) {
                Var v = variable(in);
                if (v.kind() == VarKind.PLACEHOLDER || v.kind() == VarKind.ACTIVATION && v.producer() < from) {
                    inputs.add(in);
                }
            }
            for (String out : op.outputs) {
                for (int c : variable(out).consumers()) {
                    if (c >= to) {
                        outputs.add(out);
                        break;
                    }
                }
            }
        }
        return new Stage(index, from, to, cost, backward, paramBytes, params, new ArrayList<>(inputs), new ArrayList<>(outputs));
    }

    // ------------------------------------------------------------------------------------------------
    // Execution

    /**
     * Computes {@code outputs} by spawning one scheduler task per required op (named after the op, with its cost
     * estimate as the hint); each task runs its op outside the graph on its inputs' arrays. Equals
     * {@code sd.output(feeds, outputs)} for deterministic ops.
     *
     * @throws OpExecutionException naming the op that failed
     */
    public Map<String, INDArray> output(Scheduler scheduler, Map<String, INDArray> feeds, String... outputs) {
        Objects.requireNonNull(scheduler, "scheduler");
        BitSet need = requiredOps(Arrays.asList(outputs));
        @SuppressWarnings({"unchecked", "rawtypes"})
        TaskHandle<INDArray[]>[] handles = new TaskHandle[ops.size()];
        for (int i = need.nextSetBit(0); i >= 0; i = need.nextSetBit(i + 1)) {
            handles[i] = spawnOp(scheduler, ops.get(i), feeds, handles);
        }
        Map<String, INDArray> result = new LinkedHashMap<>();
        for (String o : outputs) {
            Var v = variable(o);
            if (v.producer() >= 0) {
                result.put(o, join(handles[v.producer()])[ops.get(v.producer()).outputs.indexOf(o)]);
            } else {
                result.put(o, valueOf(o, feeds, Map.of(), null));
            }
        }
        return result;
    }

    private TaskHandle<INDArray[]> spawnOp(Scheduler s, OpNode op, Map<String, INDArray> feeds,
                                           TaskHandle<INDArray[]>[] handles) {
        // Argument k of the task is predecessor k's outputs; an input is either one of those or a value bound now.
        int[] preds = op.predecessors;
        Object[] args = new Object[preds.length];
        for (int k = 0; k < preds.length; k++) {
            args[k] = handles[preds[k]];
        }
        int m = op.inputs.size();
        int[] fromPred = new int[m];
        int[] fromOutput = new int[m];
        INDArray[] bound = new INDArray[m];
        for (int i = 0; i < m; i++) {
            Var v = variable(op.inputs.get(i));
            if (v.producer() >= 0) {
                fromPred[i] = Arrays.binarySearch(preds, v.producer());
                fromOutput[i] = ops.get(v.producer()).outputs.indexOf(v.name());
            } else {
                fromPred[i] = -1;
                bound[i] = valueOf(v.name(), feeds, Map.of(), op);
            }
        }
        TaskOptions options = TaskOptions.named(op.name).costHint(Duration.ofNanos(Math.max(1, (long) op.cost.nanos())));
        return s.spawnN(options, a -> {
            INDArray[] in = new INDArray[m];
            for (int i = 0; i < m; i++) {
                in[i] = fromPred[i] < 0 ? bound[i] : ((INDArray[]) a[fromPred[i]])[fromOutput[i]];
            }
            return OpRunner.run(sd, op.fn, in);
        }, args);
    }

    /** Joins a task, rethrowing the bridge's own exception (which names the op) rather than the scheduler's wrapper. */
    static <T> T join(TaskHandle<T> h) {
        try {
            return h.join();
        } catch (TaskFailedException e) {
            for (Throwable c = e; c != null; c = c.getCause()) {
                if (c instanceof OpExecutionException || c instanceof UnsupportedGraphException) {
                    throw (RuntimeException) c;
                }
            }
            throw e;
        }
    }
}
