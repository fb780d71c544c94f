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
 * estimate per op from its shapes, and a partition into contiguous pipeline stages.
 *
 * <pre>{@code
 * SameDiffDag dag = SameDiffDag.importGraph(sd).estimateCosts(Map.of("in", sampleBatch));
 * List<Stage> stages = dag.partition(2);                       // balanced by estimated time and parameter memory
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
        final DifferentialFunction fn;

        OpNode(int index, String name, String type, List<String> inputs, List<String> outputs, int[] predecessors,
               List<String> parameters, long parameterBytes, OpCost cost, DifferentialFunction fn) {
            this.index = index;
            this.name = name;
            this.type = type;
            this.inputs = List.copyOf(inputs);
            this.outputs = List.copyOf(outputs);
            this.predecessors = predecessors;
            this.parameters = List.copyOf(parameters);
            this.parameterBytes = parameterBytes;
            this.cost = cost;
            this.fn = fn;
        }

        OpNode withCost(OpCost c) {
            return new OpNode(index, name, type, inputs, outputs, predecessors, parameters, parameterBytes, c, fn);
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

        /** The shape-based estimate; {@link OpCost#ZERO} until {@link SameDiffDag#estimateCosts} ran. */
        public OpCost cost() {
            return cost;
        }

        @Override
        public String toString() {
            return name + " (" + type + ")";
        }
    }

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
        int[] position = new int[n];
        for (int k = 0; k < n; k++) {
            position[order[k]] = k;
        }

        // Each parameter is charged to the first op that reads it.
        Set<String> charged = new LinkedHashSet<>();
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
            nodes.add(new OpNode(k, op.getName(), op.getOp().opName(), inputs, nullSafe(op.getOutputsOfOp()), p, params,
                    paramBytes, OpCost.ZERO, op.getOp()));
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

    private static void addProducer(Set<Integer> p, Variable v, Map<String, Integer> insertion) {
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
        BitSet need = new BitSet(ops.size());
        ArrayDeque<Integer> work = new ArrayDeque<>();
        for (String o : outputs) {
            int p = variable(o).producer();
            if (p >= 0 && !need.get(p)) {
                need.set(p);
                work.add(p);
            }
        }
        while (!work.isEmpty()) {
            for (int p : ops.get(work.poll()).predecessors) {
                if (!need.get(p)) {
                    need.set(p);
                    work.add(p);
                }
            }
        }
        return need;
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
            switch (type) {
                case "matmul", "mmul", "xw_plus_b", "tensormmul", "batched_gemm" -> {
                    // a = batch·M·K, b = batch·K·N, out = batch·M·N, so K = sqrt(pa·pb / (po·batch)), whatever the
                    // transposes: no need to read the op's flags.
                    double batch = po / ((double) os[os.length - 2] * os[os.length - 1]);
                    double k = Math.sqrt(pa * pb / (po * Math.max(1, batch)));
                    flops = 2 * po * Math.max(1, k);
                }
                case "conv1d", "conv2d", "conv3dnew", "deconv2d", "deconv3d", "depthwise_conv2d", "sconv2d" -> {
                    // Each output element is a dot product over one output channel's slice of the weights.
                    long[] w = in[1].shape();
                    long last = w[w.length - 1];
                    boolean lastIsOut = os[1] == last || os[os.length - 1] == last;
                    double outChannels = lastIsOut ? last : w[0];
                    flops = 2 * po * (pb / Math.max(1, outChannels));
                }
                default -> {
                }
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

    /**
     * Splits the topological order into {@code stages} contiguous, non-empty groups that minimise the largest stage
     * weight, where an op weighs its share of the estimated time plus its share of the parameter memory (so both
     * compute and memory are balanced; a graph without parameters is balanced by time alone).
     */
    public List<Stage> partition(int stages) {
        int n = ops.size();
        if (stages < 1 || stages > n) {
            throw new IllegalArgumentException("stages must be between 1 and the number of ops (" + n + "), got " + stages);
        }
        double totalCost = totalCostNanos();
        long totalParams = 0;
        for (OpNode o : ops) {
            totalParams += o.parameterBytes;
        }
        double[] prefix = new double[n + 1];
        for (int i = 0; i < n; i++) {
            double w = ops.get(i).cost.nanos() / totalCost
                    + (totalParams == 0 ? 0 : ops.get(i).parameterBytes / (double) totalParams);
            prefix[i + 1] = prefix[i] + w;
        }
        // best[s][i]: the smallest possible largest weight when ops [0, i) form s stages; cut[s][i] the last cut.
        double[][] best = new double[stages + 1][n + 1];
        int[][] cut = new int[stages + 1][n + 1];
        for (double[] row : best) {
            Arrays.fill(row, Double.POSITIVE_INFINITY);
        }
        best[0][0] = 0;
        for (int s = 1; s <= stages; s++) {
            for (int i = s; i <= n - (stages - s); i++) {
                for (int j = s - 1; j < i; j++) {
                    double v = Math.max(best[s - 1][j], prefix[i] - prefix[j]);
                    if (v < best[s][i]) {
                        best[s][i] = v;
                        cut[s][i] = j;
                    }
                }
            }
        }
        int[] bounds = new int[stages + 1];
        bounds[stages] = n;
        for (int s = stages; s >= 1; s--) {
            bounds[s - 1] = cut[s][bounds[s]];
        }
        return stagesAt(bounds);
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
        long paramBytes = 0;
        List<String> params = new ArrayList<>();
        Set<String> inputs = new LinkedHashSet<>();
        Set<String> outputs = new LinkedHashSet<>();
        for (int i = from; i < to; i++) {
            OpNode op = ops.get(i);
            cost += op.cost.nanos();
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
        return new Stage(index, from, to, cost, paramBytes, params, new ArrayList<>(inputs), new ArrayList<>(outputs));
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
