package dev.poniard.bridge;

import java.util.List;
import org.nd4j.autodiff.functions.DifferentialFunction;
import org.nd4j.autodiff.samediff.SameDiff;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.api.ops.BaseOp;
import org.nd4j.linalg.api.ops.BaseReduceOp;
import org.nd4j.linalg.api.ops.CustomOp;
import org.nd4j.linalg.api.ops.DynamicCustomOp;
import org.nd4j.linalg.api.ops.Op;
import org.nd4j.linalg.api.ops.OpContext;
import org.nd4j.linalg.api.ops.ReduceOp;
import org.nd4j.linalg.api.ops.ScalarOp;
import org.nd4j.linalg.api.ops.custom.Invoke;
import org.nd4j.linalg.api.ops.impl.controlflow.compat.BaseCompatOp;
import org.nd4j.linalg.api.ops.impl.layers.ExternalErrorsFunction;
import org.nd4j.linalg.api.ops.impl.shape.CreateView;
import org.nd4j.linalg.api.ops.impl.shape.tensorops.BaseTensorOp;
import org.nd4j.linalg.api.ops.impl.transforms.Assert;
import org.nd4j.linalg.api.ops.impl.transforms.custom.Assign;
import org.nd4j.linalg.api.ops.impl.transforms.gradient.GradientBackwardsMarker;
import org.nd4j.linalg.api.ops.impl.transforms.same.Identity;
import org.nd4j.linalg.api.shape.LongShapeDescriptor;
import org.nd4j.linalg.api.shape.Shape;
import org.nd4j.linalg.factory.Nd4j;

/**
 * Runs one SameDiff op outside its graph (DESIGN §4): the op's arguments go into a fresh {@link OpContext}, output
 * shapes come from {@code calculateOutputShape(context)}, new output arrays are allocated, and the op executes on that
 * context. The graph's own session is not involved, so two ops of one graph can run on two threads at once.
 *
 * <p>Custom ops carry all their arguments (integer, floating-point, boolean, data-type) in the op object and are
 * never modified. Legacy ops (transform, scalar, reduce...) whose scalar or reduction axis arrives as a second input
 * array must be told that value on the op object itself, as SameDiff's own session does; those few are run under the
 * op's monitor so concurrent runs of the same graph cannot mix their values.
 */
final class OpRunner {
    private OpRunner() {
    }

    /**
     * Why {@code df} cannot run outside its graph, or null when it can. Control flow and the ops that SameDiff's
     * session executes by special code (not by a kernel) are refused rather than imitated.
     */
    static String unsupportedReason(DifferentialFunction df) {
        if (df instanceof BaseCompatOp) {
            return "control flow (" + df.opName() + ") has frames and iterations that a static task DAG cannot express; "
                    + "unroll the loop or move the condition out of the graph";
        }
        if (df instanceof Invoke) {
            return "it invokes a nested SameDiff function; inline the function into the graph";
        }
        if (df instanceof BaseTensorOp) {
            return "TensorArray ops hold lists, not arrays; build the graph with stack/concat instead";
        }
        if (df instanceof ExternalErrorsFunction || df instanceof GradientBackwardsMarker) {
            return "it is a SameDiff-internal marker op that only SameDiff's own session can execute";
        }
        if (df instanceof CreateView || df instanceof Assert || df instanceof Assign) {
            return "SameDiff's session executes it by special code (views, assertions, in-place assignment), "
                    + "not by its kernel";
        }
        if (!(df instanceof CustomOp) && !(df instanceof Op)) {
            return "it is neither a custom op nor a legacy op (" + df.getClass().getName() + ")";
        }
        return null;
    }

    /** How messages name an op: its own name, type and outputs, e.g. {@code op 'xw_plus_b' (xw_plus_b -> 'l1')}. */
    static String describe(DifferentialFunction df) {
        String[] outs;
        try {
            outs = df.outputVariablesNames();
        } catch (RuntimeException e) {
            outs = new String[0];
        }
        StringBuilder b = new StringBuilder("op '").append(df.getOwnName()).append("' (").append(df.opName());
        for (int i = 0; i < outs.length; i++) {
            b.append(i == 0 ? " -> '" : ", '").append(outs[i]).append('\'');
        }
        return b.append(')').toString();
    }

    /**
     * Executes {@code df} on {@code inputs} (in the op's argument order) and returns its outputs, freshly allocated, in
     * the op's output order. {@code sd} supplies the declared output data types.
     */
    static INDArray[] run(SameDiff sd, DifferentialFunction df, INDArray[] inputs) {
        String[] outNames = df.outputVariablesNames();
        if (df instanceof Identity) {
            return new INDArray[] {inputs[0]}; // SameDiff passes the input through without a copy, and so do we
        }
        if (df instanceof CustomOp) {
            return runCustom(sd, (DynamicCustomOp) df, inputs, outNames);
        }
        synchronized (df) {
            return runLegacy(sd, (BaseOp) df, inputs, outNames);
        }
    }

    private static INDArray[] runCustom(SameDiff sd, DynamicCustomOp op, INDArray[] inputs, String[] outNames) {
        OpContext oc = Nd4j.getExecutioner().buildContext();
        try {
            oc.setArgs(inputs, op.iArgs(), op.dArgs(), op.tArgs(), op.bArgs());
            List<LongShapeDescriptor> shapes = op.calculateOutputShape(oc);
            if (shapes == null || shapes.size() != outNames.length) {
                throw new IllegalStateException(describe(op) + " reported "
                        + (shapes == null ? "no" : shapes.size()) + " output shapes for " + outNames.length + " outputs");
            }
            INDArray[] out = new INDArray[outNames.length];
            for (int i = 0; i < out.length; i++) {
                out[i] = allocate(shapes.get(i), sd.getVariable(outNames[i]).dataType());
                oc.setOutputArray(i, out[i]);
            }
            Nd4j.exec(op, oc);
            return out;
        } catch (RuntimeException e) {
            throw failure(op, e);
        } finally {
            release(oc);
        }
    }

    private static INDArray[] runLegacy(SameDiff sd, BaseOp op, INDArray[] inputs, String[] outNames) {
        OpContext oc = Nd4j.getExecutioner().buildContext();
        try {
            boolean axisInput = false;
            if (op instanceof ReduceOp r && r.getOpType() != Op.Type.REDUCE3 && inputs.length == 2) {
                // The reduction axes arrive as an integer array input: the kernel reads them from the op.
                if (inputs[1].isEmpty()) {
                    throw new UnsupportedGraphException(op.getOwnName(), describe(op) + " reduces over an empty axis array, which only SameDiff's session special-cases; "
                            + "give the axes explicitly");
                }
                op.setDimensions(Shape.normalizeAxis(inputs[0].rank(), inputs[1].toIntVector()));
                ((BaseReduceOp) op).setEmptyReduce(false);
                axisInput = true;
            } else if (op instanceof ScalarOp s && inputs.length == 2) {
                s.setScalar(inputs[1]);
            }
            if (inputs.length > 0) {
                oc.setInputArray(0, inputs[0]);
                if (inputs.length == 2 && !axisInput) {
                    oc.setInputArray(1, inputs[1]);
                }
            }
            List<LongShapeDescriptor> shapes = op.calculateOutputShape(oc);
            if (shapes == null || shapes.size() != 1 || outNames.length != 1) {
                throw new IllegalStateException("legacy " + describe(op) + " did not report exactly one output shape");
            }
            INDArray out = allocate(shapes.get(0), sd.getVariable(outNames[0]).dataType());
            oc.setOutputArray(0, out);
            Nd4j.exec(op, oc);
            return new INDArray[] {out};
        } catch (RuntimeException e) {
            throw failure(op, e);
        } finally {
            release(oc);
        }
    }

    /** Frees the context's native side (OpContext.close declares Exception, which nothing here can act on). */
    private static void release(OpContext oc) {
        try {
            oc.close();
        } catch (Exception e) {
            throw new IllegalStateException("could not release a native op context", e);
        }
    }

    /**
     * Allocates an output; the declared variable type wins, as several ops may produce more than one type. Outputs are
     * laid out 'c' whatever order the shape function names, as SameDiff's own session allocates them: xw_plus_b's shape
     * function says 'f' for a 512 x 256 output, and its bias add then ran through a strided broadcast at ~1 ms a layer,
     * 10x its time on a 'c' output.
     */
    private static INDArray allocate(LongShapeDescriptor shape, DataType declared) {
        LongShapeDescriptor s = declared != null && declared != shape.dataType() ? shape.asDataType(declared) : shape;
        if (s.isEmpty()) {
            return Nd4j.create(s, false);
        }
        return Nd4j.createUninitialized(s.dataType(), s.getShape(), 'c');
    }

    private static RuntimeException failure(DifferentialFunction df, RuntimeException e) {
        if (e instanceof UnsupportedGraphException u) {
            return u;
        }
        return new OpExecutionException(df.getOwnName(), describe(df) + " failed when run outside its graph: "
                + e.getMessage(), e);
    }
}
