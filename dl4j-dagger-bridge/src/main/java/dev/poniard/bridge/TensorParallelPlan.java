package dev.poniard.bridge;

import java.lang.reflect.Field;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashMap;
import java.util.HashSet;
import java.util.LinkedHashMap;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.TreeSet;
import org.nd4j.autodiff.functions.DifferentialFunction;
import org.nd4j.autodiff.samediff.SameDiff;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.api.ops.DynamicCustomOp;
import org.nd4j.linalg.api.ops.ScalarOp;
import org.nd4j.linalg.api.ops.TransformOp;
import org.nd4j.linalg.factory.Nd4j;
import org.nd4j.linalg.indexing.INDArrayIndex;
import org.nd4j.linalg.indexing.NDArrayIndex;

/**
 * Where a graph's matmul weights are split for {@link SameDiffTensorParallel}: a sharding state for every activation,
 * the split of every weight, the reshape ops whose shape arguments change on a shard, and the cut of the op order into
 * replicated and parallel segments.
 *
 * <p>States (propagated in topological order over the sample shapes): REP (the whole value, identical on every
 * worker), SPLIT (each worker holds a contiguous block of one axis; blocks are counted in columns of the group's
 * column-parallel weights, {@code scale} columns per index of that axis) and PARTIAL (each worker holds a summand of
 * the value: the output of a row-parallel matmul). Rules:
 * <ul>
 *   <li>matmul / xw_plus_b of a REP 2-D input by a large enough 2-D parameter read by no other op: column-parallel
 *       (a new group); its xw_plus_b bias is split with it.</li>
 *   <li>matmul / xw_plus_b of an input SPLIT along its last axis by a 2-D parameter: row-parallel, PARTIAL; its
 *       xw_plus_b bias is held by worker 0 only (zeros elsewhere), so the sum adds it once.</li>
 *   <li>batched matmul of two inputs SPLIT along the same batch axis (attention heads): SPLIT, the groups merge.</li>
 *   <li>element-wise ops (legacy transforms and scalar ops, add/sub/mul/div of equally split arrays or scalars),
 *       softmax over another axis, permute/transpose, reshape that keeps whole blocks: SPLIT follows the axis.</li>
 *   <li>anything else reading a SPLIT value, a SPLIT value nobody reads, or a loss that is not REP is a conflict: the
 *       groups involved are not split (their weights stay replicated) and planning starts again.</li>
 * </ul>
 * A PARTIAL value is summed over the workers before any op reads it, so readers see REP.
 */
final class TensorParallelPlan {
    enum Kind { REP, SPLIT, PARTIAL }

    /** Sharding of an activation; {@code group}, {@code axis}, {@code scale} only for SPLIT. */
    record Sh(Kind kind, int group, int axis, long scale) {
        static final Sh REP = new Sh(Kind.REP, -1, -1, 0);
        static final Sh PARTIAL = new Sh(Kind.PARTIAL, -1, -1, 0);

        boolean replicatedValue() {
            return kind != Kind.SPLIT;
        }
    }

    /** How a weight is split. */
    enum Placement {
        /** Split along {@code axis} (a column-parallel weight's columns or bias, a row-parallel weight's rows). */
        BLOCKS,
        /** A row-parallel layer's bias: the real value on worker 0, zeros elsewhere. */
        WORKER_ZERO
    }

    /** {@code name} is split along {@code axis} at the group's boundaries divided by {@code scale}. */
    record Split(String name, Placement placement, int group, int axis, long scale, String role) {
    }

    /**
     * Reshape op {@code op} (output rank {@code rank}) gets the local size at output {@code axis}: the worker's columns
     * divided by {@code scale}.
     */
    record Rewrite(String op, int group, int axis, long scale, int rank) {
    }

    /** Ops {@code [firstOp, endOp)} of the order; {@code parallel} when they compute SPLIT or PARTIAL values. */
    record Segment(int index, int firstOp, int endOp, boolean parallel) {
    }

    private static final Set<String> ELEMENTWISE_BINARY = Set.of("add", "subtract", "multiply", "divide", "pow_pairwise");

    final int workers;
    final Map<String, Sh> states;
    final Map<String, Split> splits;
    final List<Rewrite> rewrites;
    /** Group id → boundaries in the group's columns, workers + 1 values. */
    final Map<Integer, long[]> bounds;
    final List<Segment> segments;
    /** Column-parallel candidates that were not split, with the reason. */
    final Map<String, String> notSplit;

    private TensorParallelPlan(int workers, Map<String, Sh> states, Map<String, Split> splits, List<Rewrite> rewrites,
                               Map<Integer, long[]> bounds, List<Segment> segments, Map<String, String> notSplit) {
        this.workers = workers;
        this.states = states;
        this.splits = splits;
        this.rewrites = rewrites;
        this.bounds = bounds;
        this.segments = segments;
        this.notSplit = notSplit;
    }

    /** A planning conflict: the groups to give up and why. */
    private static final class Conflict extends RuntimeException {
        private static final long serialVersionUID = 1L;
        final Set<Integer> groups;

        Conflict(Set<Integer> groups, String message) {
            super(message, null, false, false);
            this.groups = groups;
        }
    }

    /** One propagation pass with a set of disabled column-parallel seeds (op indices). */
    private static final class Pass {
        final SameDiffDag dag;
        final int workers;
        final long minElements;
        final Set<Integer> disabled;
        final Map<String, Sh> st = new HashMap<>();
        final Map<Integer, Integer> parent = new HashMap<>();
        final Map<Integer, Long> columns = new HashMap<>();
        final Map<Integer, Long> unit = new HashMap<>();
        final Map<Integer, List<Integer>> seeds = new HashMap<>();
        final List<Split> splits = new ArrayList<>();
        final List<Rewrite> rewrites = new ArrayList<>();
        final Map<String, String> notCandidates = new LinkedHashMap<>();

        Pass(SameDiffDag dag, int workers, long minElements, Set<Integer> disabled) {
            this.dag = dag;
            this.workers = workers;
            this.minElements = minElements;
            this.disabled = disabled;
        }

        int find(int g) {
            int p = parent.get(g);
            return p == g ? g : find(p);
        }

        Sh state(String v) {
            Sh s = st.get(v);
            return s == null || s.kind == Kind.PARTIAL ? Sh.REP : s;   // PARTIAL values are summed before use
        }

        void require(int group, long u) {
            int g = find(group);
            unit.merge(g, u, TensorParallelPlan::lcm);
        }

        void run() {
            for (SameDiffDag.OpNode op : dag.ops()) {
                visit(op);
            }
            for (Map.Entry<String, Sh> e : st.entrySet()) {
                SameDiffDag.Var v = dag.variable(e.getKey());
                if (e.getValue().kind == Kind.SPLIT && v.consumers().isEmpty()) {
                    throw new Conflict(Set.of(e.getValue().group), "activation '" + e.getKey() + "' would be split across "
                            + "workers but no op reads it (gathering it is not supported)");
                }
            }
            for (String loss : dag.sameDiff().getLossVariables()) {
                Sh s = st.get(loss);
                if (s != null && s.kind != Kind.REP) {
                    throw new Conflict(s.kind == Kind.SPLIT ? Set.of(s.group) : groupsOf(dag.producerOf(loss)),
                            "the loss '" + loss + "' would be computed from split values");
                }
            }
        }

        private Set<Integer> groupsOf(SameDiffDag.OpNode op) {
            Set<Integer> g = new HashSet<>();
            for (String in : op.inputs()) {
                Sh s = st.get(in);
                if (s != null && s.kind == Kind.SPLIT) {
                    g.add(s.group);
                }
            }
            return g;
        }

        private void out(SameDiffDag.OpNode op, Sh s) {
            for (String o : op.outputs()) {
                st.put(o, s);
            }
        }

        private Conflict conflict(SameDiffDag.OpNode op, String why) {
            return new Conflict(groupsOf(op), OpRunner.describe(op.fn) + " " + why);
        }

        private void visit(SameDiffDag.OpNode op) {
            List<Sh> in = new ArrayList<>();
            boolean anySplit = false;
            for (String x : op.inputs()) {
                Sh s = state(x);
                in.add(s);
                anySplit |= s.kind == Kind.SPLIT;
            }
            boolean matmul = op.type().equals("matmul") || op.type().equals("xw_plus_b");
            if (matmul && op.inputs().size() >= 2) {
                if (visitMatmul(op, in)) {
                    return;
                }
            }
            if (!anySplit) {
                out(op, Sh.REP);
                return;
            }
            // Every SPLIT input must agree; the groups of a binary op's inputs merge.
            Sh first = null;
            for (Sh s : in) {
                if (s.kind != Kind.SPLIT) {
                    continue;
                }
                if (first == null) {
                    first = s;
                } else {
                    unite(op, first, s);
                }
            }
            Sh split = new Sh(Kind.SPLIT, find(first.group), first.axis, first.scale);
            DifferentialFunction fn = op.fn;
            long[] outShape = dag.shape(op.outputs().get(0));
            long[] inShape = dag.shape(op.inputs().get(in.indexOf(first)));
            if (fn instanceof TransformOp || fn instanceof ScalarOp || ELEMENTWISE_BINARY.contains(op.type())) {
                for (int i = 0; i < in.size(); i++) {
                    long[] s = dag.shape(op.inputs().get(i));
                    boolean scalar = s != null && lengthOf(s) == 1;
                    if (in.get(i).kind != Kind.SPLIT && !scalar) {
                        throw conflict(op, "combines a split value with the whole value '" + op.inputs().get(i)
                                + "'; only scalars can be mixed with split values");
                    }
                }
                if (!Arrays.equals(outShape, inShape)) {
                    throw conflict(op, "changes the shape of a split value (broadcasting is not supported)");
                }
                out(op, split);
                return;
            }
            if (in.size() != 1) {
                throw conflict(op, "reads a split value; this op type cannot run on shards");
            }
            switch (op.type()) {
                case "softmax", "log_softmax" -> {
                    long[] ia = ((DynamicCustomOp) fn).iArgs();
                    int dim = ia.length == 0 ? inShape.length - 1 : (int) ia[0];
                    if (dim < 0) {
                        dim += inShape.length;
                    }
                    if (dim == split.axis) {
                        throw conflict(op, "normalises over the split axis " + dim + " of '" + op.inputs().get(0) + "'");
                    }
                    out(op, split);
                }
                case "permute", "transpose" -> {
                    long[] perm = ((DynamicCustomOp) fn).iArgs();
                    int axis = -1;
                    if (perm.length == 0) {
                        axis = inShape.length - 1 - split.axis;
                    } else {
                        for (int i = 0; i < perm.length; i++) {
                            if (perm[i] == split.axis) {
                                axis = i;
                            }
                        }
                    }
                    if (axis < 0) {
                        throw conflict(op, "has no static permutation");
                    }
                    out(op, new Sh(Kind.SPLIT, split.group, axis, split.scale));
                }
                case "reshape" -> out(op, reshape(op, split, inShape, outShape));
                default -> throw conflict(op, "reads a split value; this op type cannot run on shards");
            }
        }

        private void unite(SameDiffDag.OpNode op, Sh a, Sh b) {
            int ga = find(a.group);
            int gb = find(b.group);
            if (a.axis != b.axis || a.scale != b.scale) {
                throw conflict(op, "combines values split along different axes");
            }
            if (ga != gb) {
                if (!columns.get(ga).equals(columns.get(gb))) {
                    throw conflict(op, "combines values split from weights of different widths (" + columns.get(ga)
                            + " and " + columns.get(gb) + " columns)");
                }
                parent.put(gb, ga);
                unit.merge(ga, unit.get(gb), TensorParallelPlan::lcm);
                seeds.get(ga).addAll(seeds.get(gb));
            }
        }

        /** Returns true when the op was handled as a column-, row- or batch-parallel matmul. */
        private boolean visitMatmul(SameDiffDag.OpNode op, List<Sh> in) {
            long[] ia = op.fn instanceof DynamicCustomOp d ? d.iArgs() : new long[0];
            boolean transposed = false;
            for (long v : ia) {
                transposed |= v != 0;
            }
            String a = op.inputs().get(0);
            String w = op.inputs().get(1);
            long[] as = dag.shape(a);
            long[] ws = dag.shape(w);
            boolean xw = op.type().equals("xw_plus_b");
            String bias = xw && op.inputs().size() == 3 ? op.inputs().get(2) : null;
            Sh sa = in.get(0);
            Sh sw = in.get(1);
            if (sa.kind == Kind.SPLIT && sw.kind == Kind.SPLIT) {
                // Batched matmul over a split batch axis (attention heads): each worker multiplies its own heads.
                if (xw || as.length < 3 || as.length != ws.length || sa.axis >= as.length - 2) {
                    throw conflict(op, "multiplies two split values over the split axis (a sum across workers "
                            + "inside the op); split attention by heads instead");
                }
                unite(op, sa, sw);
                out(op, new Sh(Kind.SPLIT, find(sa.group), sa.axis, sa.scale));
                return true;
            }
            String weightProblem = weightProblem(op, w, ws, bias, transposed);
            if (sa.kind == Kind.SPLIT) {
                if (sa.axis != as.length - 1) {
                    throw conflict(op, "multiplies a value split along axis " + sa.axis + " that is not contracted");
                }
                if (weightProblem != null) {
                    throw conflict(op, "cannot be row-parallel: " + weightProblem);
                }
                require(sa.group, sa.scale);
                splits.add(new Split(w, Placement.BLOCKS, sa.group, 0, sa.scale, "row"));
                if (bias != null) {
                    splits.add(new Split(bias, Placement.WORKER_ZERO, sa.group, 0, 1, "row bias"));
                }
                out(op, Sh.PARTIAL);
                return true;
            }
            if (sa.kind != Kind.REP || sw.kind != Kind.REP || as.length != 2) {
                return false;
            }
            String why = weightProblem;
            if (why == null && ws[1] < workers) {
                why = "it has " + ws[1] + " columns, fewer than " + workers + " workers";
            } else if (why == null && lengthOf(ws) < minElements) {
                why = "it has " + lengthOf(ws) + " elements, below minElements " + minElements;
            } else if (why == null && disabled.contains(op.index())) {
                why = "disabled";
            }
            if (why != null) {
                if (weightProblem == null || dag.variable(w).kind() == SameDiffDag.VarKind.PARAMETER) {
                    notCandidates.putIfAbsent(w, why);
                }
                return false;
            }
            int g = op.index();
            parent.put(g, g);
            columns.put(g, ws[1]);
            unit.put(g, 1L);
            seeds.put(g, new ArrayList<>(List.of(g)));
            splits.add(new Split(w, Placement.BLOCKS, g, 1, 1, "column"));
            if (bias != null) {
                splits.add(new Split(bias, Placement.BLOCKS, g, 0, 1, "column bias"));
            }
            out(op, new Sh(Kind.SPLIT, g, 1, 1));
            return true;
        }

        /** Why {@code w} (and {@code bias}) of {@code op} cannot be split, or null. */
        private String weightProblem(SameDiffDag.OpNode op, String w, long[] ws, String bias, boolean transposed) {
            SameDiffDag.Var v = dag.variable(w);
            if (v.kind() != SameDiffDag.VarKind.PARAMETER) {
                return "its right operand '" + w + "' is not a trainable parameter";
            }
            if (ws == null || ws.length != 2) {
                return "its weight '" + w + "' is not 2-D";
            }
            if (transposed) {
                return "it transposes an operand (iArgs " + Arrays.toString(((DynamicCustomOp) op.fn).iArgs()) + ")";
            }
            if (v.consumers().size() != 1) {
                return "its weight '" + w + "' is read by " + v.consumers().size() + " ops (tied weights stay whole)";
            }
            if (bias != null) {
                SameDiffDag.Var b = dag.variable(bias);
                long[] bs = dag.shape(bias);
                if (b.kind() == SameDiffDag.VarKind.ACTIVATION || b.consumers().size() != 1 || bs == null || bs.length != 1) {
                    return "its bias '" + bias + "' is not a 1-D parameter or constant of its own";
                }
            }
            return null;
        }

        /** The SPLIT state after a reshape, if the workers' blocks stay whole along one output axis. */
        private Sh reshape(SameDiffDag.OpNode op, Sh s, long[] inShape, long[] outShape) {
            if (op.inputs().size() != 1 || ((DynamicCustomOp) op.fn).iArgs().length < outShape.length) {
                throw conflict(op, "takes its shape as an array input; give the shape as numbers");
            }
            long suffix = 1;
            for (int i = s.axis; i < inShape.length; i++) {
                suffix *= inShape[i];
            }
            long innerIn = suffix / inShape[s.axis];
            long prod = 1;
            for (int j = outShape.length - 1; j >= 0; j--) {
                long innerOut = prod;
                prod *= outShape[j];
                if (prod == suffix && outShape[j] > 1) {
                    // Block boundaries (in columns) must fall on whole rows of output axis j.
                    long step = innerOut / gcd(innerOut, innerIn);
                    long u = s.scale * step;
                    if ((s.scale * innerOut) % innerIn != 0) {
                        break;
                    }
                    require(s.group, u);
                    long scale = s.scale * innerOut / innerIn;
                    rewrites.add(new Rewrite(op.name(), s.group, j, scale, outShape.length));
                    return new Sh(Kind.SPLIT, find(s.group), j, scale);
                }
                if (prod > suffix) {
                    break;
                }
            }
            throw conflict(op, "reshapes " + Arrays.toString(inShape) + " split along axis " + s.axis + " to "
                    + Arrays.toString(outShape) + ", which mixes the split axis with others");
        }
    }

    /**
     * Plans the split of {@code dag} (costed, so that shapes are known) over {@code workers}.
     *
     * @param required weights that must be split (refused, with the reason, if they cannot be)
     * @throws UnsupportedGraphException if nothing can be split, or a required weight cannot
     */
    static TensorParallelPlan plan(SameDiffDag dag, int workers, long minElements, Set<String> required) {
        Set<Integer> disabled = new HashSet<>();
        Map<String, String> reasons = new LinkedHashMap<>();
        Pass pass;
        while (true) {
            pass = new Pass(dag, workers, minElements, disabled);
            try {
                pass.run();
                // Every group must give each worker at least one whole unit of columns.
                for (int g : new TreeSet<>(pass.seeds.keySet())) {
                    if (pass.find(g) != g) {
                        continue;
                    }
                    long cols = pass.columns.get(g);
                    long unit = pass.unit.get(g);
                    if (cols % unit != 0 || cols / unit < workers) {
                        throw new Conflict(Set.of(g), "its " + cols + " columns do not make " + workers
                                + " blocks of whole units of " + unit + " columns (e.g. attention heads)");
                    }
                }
                break;
            } catch (Conflict c) {
                if (c.groups.isEmpty()) {
                    throw new UnsupportedGraphException(null, "tensor-parallel planning failed: " + c.getMessage());
                }
                for (int g : c.groups) {
                    for (int seed : pass.seeds.get(pass.find(g))) {
                        disabled.add(seed);
                        String w = dag.ops().get(seed).inputs().get(1);
                        reasons.put(w, c.getMessage());
                    }
                }
            }
        }
        Pass done = pass;
        for (Map.Entry<String, String> e : pass.notCandidates.entrySet()) {
            reasons.putIfAbsent(e.getKey(), e.getValue());
        }
        Map<String, Split> splits = new LinkedHashMap<>();
        Map<Integer, long[]> bounds = new HashMap<>();
        for (Split s : pass.splits) {
            int g = pass.find(s.group());
            splits.put(s.name(), new Split(s.name(), s.placement(), g, s.axis(), s.scale(), s.role()));
            bounds.computeIfAbsent(g, k -> {
                long unit = done.unit.get(k);
                long[] b = Batches.bounds(done.columns.get(k) / unit, workers);
                for (int i = 0; i < b.length; i++) {
                    b[i] *= unit;
                }
                return b;
            });
        }
        for (String r : required) {
            if (!splits.containsKey(r)) {
                String why = reasons.get(r);
                throw new UnsupportedGraphException(null, "weight '" + r + "' cannot be split tensor-parallel: "
                        + (why == null ? "it is not the weight of a matmul or xw_plus_b op" : why)
                        + "; leave it out of Context.split to keep it replicated");
            }
        }
        if (splits.isEmpty()) {
            throw new UnsupportedGraphException(null, "no matmul weight of the graph can be split over " + workers
                    + " workers: " + (reasons.isEmpty() ? "the graph has no matmul or xw_plus_b op with a parameter "
                    + "weight" : reasons) + "; use data parallelism, or restructure the layers as column-parallel "
                    + "linear → element-wise → row-parallel linear");
        }
        Map<String, Sh> states = new HashMap<>();
        for (Map.Entry<String, Sh> e : pass.st.entrySet()) {
            Sh s = e.getValue();
            states.put(e.getKey(), s.kind == Kind.SPLIT ? new Sh(Kind.SPLIT, pass.find(s.group), s.axis, s.scale) : s);
        }
        List<Rewrite> rewrites = new ArrayList<>();
        for (Rewrite r : pass.rewrites) {
            rewrites.add(new Rewrite(r.op(), pass.find(r.group()), r.axis(), r.scale(), r.rank()));
        }
        Map<String, String> notSplit = new LinkedHashMap<>(reasons);
        notSplit.keySet().removeAll(splits.keySet());
        return new TensorParallelPlan(workers, states, splits, rewrites, bounds, segments(dag, states), notSplit);
    }

    /** Maximal runs of parallel or replicated ops; a parallel run also ends before an op reading its own PARTIAL. */
    private static List<Segment> segments(SameDiffDag dag, Map<String, Sh> states) {
        List<Segment> segs = new ArrayList<>();
        int start = 0;
        boolean parallel = false;
        Set<String> partialHere = new HashSet<>();
        List<SameDiffDag.OpNode> ops = dag.ops();
        for (int i = 0; i < ops.size(); i++) {
            SameDiffDag.OpNode op = ops.get(i);
            boolean p = false;
            for (String o : op.outputs()) {
                Sh s = states.get(o);
                p |= s != null && s.kind != Kind.REP;
            }
            boolean readsOwnPartial = false;
            for (String x : op.inputs()) {
                readsOwnPartial |= partialHere.contains(x);
            }
            if (i > start && (p != parallel || readsOwnPartial)) {
                segs.add(new Segment(segs.size(), start, i, parallel));
                start = i;
                partialHere.clear();
            }
            parallel = p;
            for (String o : op.outputs()) {
                Sh s = states.get(o);
                if (s != null && s.kind == Kind.PARTIAL) {
                    partialHere.add(o);
                }
            }
        }
        if (start < ops.size()) {
            segs.add(new Segment(segs.size(), start, ops.size(), parallel));
        }
        return segs;
    }

    // ------------------------------------------------------------------------------------------------
    // Shards

    /** Worker {@code w}'s columns {@code [lo, hi)} of group {@code g}. */
    long[] columns(int g, int w) {
        long[] b = bounds.get(g);
        return new long[] {b[w], b[w + 1]};
    }

    /** Worker {@code w}'s part of a split array {@code full} (a copy), or null for a {@code WORKER_ZERO} elsewhere. */
    INDArray shard(Split s, INDArray full, int w) {
        if (s.placement() == Placement.WORKER_ZERO) {
            return w == 0 ? full.dup() : Nd4j.zeros(full.dataType(), full.shape());
        }
        return full.get(index(s, full.rank(), w)).dup(full.ordering());
    }

    /** The index of worker {@code w}'s block of a {@code BLOCKS} split array. */
    INDArrayIndex[] index(Split s, int rank, int w) {
        long[] c = columns(s.group(), w);
        INDArrayIndex[] idx = new INDArrayIndex[rank];
        for (int d = 0; d < rank; d++) {
            idx[d] = d == s.axis() ? NDArrayIndex.interval(c[0] / s.scale(), c[1] / s.scale()) : NDArrayIndex.all();
        }
        return idx;
    }

    /**
     * Worker {@code w}'s graph: a duplicate of {@code master} with its shards of the split weights and the reshapes of
     * split values rewritten to the local sizes. Reshape arguments are edited through DynamicCustomOp's integer
     * argument list (reflection: M2.1 has no public setter and {@code removeIArgument} removes by value).
     */
    SameDiff shardGraph(SameDiff master, int w) {
        SameDiff sd = master.dup();
        for (Split s : splits.values()) {
            sd.getVariable(s.name()).setArray(shard(s, master.getArrForVarName(s.name()), w));
        }
        for (Rewrite r : rewrites) {
            DynamicCustomOp op = (DynamicCustomOp) sd.getOps().get(r.op()).getOp();
            long[] args = op.iArgs();
            long[] c = columns(r.group(), w);
            int offset = args.length - r.rank();       // a leading order code ('c' as -99) when present
            if (offset < 0 || args[offset + r.axis()] == -1) {
                continue;
            }
            args[offset + r.axis()] = (c[1] - c[0]) / r.scale();
            setIArgs(op, args);
        }
        return sd;
    }

    @SuppressWarnings("unchecked")
    private static void setIArgs(DynamicCustomOp op, long[] args) {
        try {
            Field f = DynamicCustomOp.class.getDeclaredField("iArguments");
            f.setAccessible(true);
            List<Long> list = (List<Long>) f.get(op);
            list.clear();
            for (long a : args) {
                list.add(a);
            }
        } catch (ReflectiveOperationException e) {
            throw new IllegalStateException("cannot rewrite the shape of reshape op '" + op.getOwnName() + "' for a shard", e);
        }
    }

    /** Names of the split weights with their roles, e.g. {@code w1 -> column}. */
    Map<String, String> roles() {
        Map<String, String> m = new LinkedHashMap<>();
        for (Split s : splits.values()) {
            m.put(s.name(), s.role());
        }
        return m;
    }

    static long lengthOf(long[] shape) {
        long n = 1;
        for (long s : shape) {
            n *= s;
        }
        return n;
    }

    static long gcd(long a, long b) {
        return b == 0 ? a : gcd(b, a % b);
    }

    static long lcm(long a, long b) {
        return a / gcd(a, b) * b;
    }

    @Override
    public String toString() {
        Set<String> seg = new LinkedHashSet<>();
        for (Segment s : segments) {
            seg.add((s.parallel() ? "P" : "R") + "[" + s.firstOp() + "," + s.endOp() + ")");
        }
        return "TensorParallelPlan[workers=" + workers + ", splits=" + roles() + ", segments=" + seg + "]";
    }
}
