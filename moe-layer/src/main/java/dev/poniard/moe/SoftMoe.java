package dev.poniard.moe;

import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;

/**
 * Soft MoE routing (Puigcerver et al., "From Sparse to Soft Mixtures of Experts") for one forward pass and its
 * backward: the mixing arithmetic around the experts, which themselves run as ordinary ungated {@link ExpertJob}s.
 *
 * <p>Tokens come in G groups of m consecutive rows (one sequence each; m = 1 for feed-forward rows). With logits
 * L = x·Φ [N, P], P = E·S slots (slot p = e·S + s is slot s of expert e): dispatch weights D = softmax of L over the
 * tokens of a group (per column), combine weights C = softmax of L over the slots (per row). Group g's slot inputs
 * are D_gᵀ·x_g [P, d]; expert e processes its S slots of every group; token n's output is C_n · (its group's slot
 * outputs). Slot rows are kept group-major (row g·P + p) for the mixing and gathered expert-major (row
 * e·G·S + g·S + s) for the experts, so each expert's rows are one contiguous block that the scheduler can cut into
 * chunks. The backward pass is the exact derivative of both softmaxes; nothing is dropped and no expert is empty.
 */
final class SoftMoe {
    final int tokens;
    final int groups;
    final int groupSize;
    final int experts;
    final int slots;
    final int width;
    private final double[] dispatch;
    private final double[] combine;
    private final int[] expertMajorSource;
    private final int[] groupMajorSource;
    private final INDArray dispatchArr;
    private final INDArray combineArr;
    private INDArray slotOutputs;

    /**
     * @param logits row-major [tokens, experts · slots]
     * @param groupSize tokens per group; {@code tokens} must be a multiple of it
     */
    SoftMoe(double[] logits, int tokens, int groupSize, int experts, int slots, DataType dataType) {
        if (groupSize < 1 || tokens % groupSize != 0) {
            throw new IllegalArgumentException("Soft MoE groups of " + groupSize + " tokens do not divide " + tokens
                    + " tokens");
        }
        int p = experts * slots;
        if (logits.length != (long) tokens * p) {
            throw new IllegalArgumentException("Soft MoE logits hold " + logits.length + " values, expected tokens * "
                    + "experts * slots = " + (long) tokens * p);
        }
        this.tokens = tokens;
        this.groups = tokens / groupSize;
        this.groupSize = groupSize;
        this.experts = experts;
        this.slots = slots;
        this.width = p;
        this.dispatch = new double[logits.length];
        this.combine = new double[logits.length];
        for (int n = 0; n < tokens; n++) {
            softmax(logits, n * p, 1, p, combine);
        }
        for (int g = 0; g < groups; g++) {
            for (int c = 0; c < p; c++) {
                softmax(logits, g * groupSize * p + c, p, groupSize, dispatch);
            }
        }
        int rows = groups * p;
        expertMajorSource = new int[rows];
        groupMajorSource = new int[rows];
        for (int e = 0; e < experts; e++) {
            for (int g = 0; g < groups; g++) {
                for (int s = 0; s < slots; s++) {
                    int expertMajor = e * groups * slots + g * slots + s;
                    int groupMajor = g * p + e * slots + s;
                    expertMajorSource[expertMajor] = groupMajor;
                    groupMajorSource[groupMajor] = expertMajor;
                }
            }
        }
        dispatchArr = Nd4j.createFromArray(dispatch).castTo(dataType).reshape('c', tokens, p);
        combineArr = Nd4j.createFromArray(combine).castTo(dataType).reshape('c', tokens, p);
    }

    /** Softmax of {@code count} values of {@code in} from {@code start}, {@code stride} apart, into {@code out}. */
    private static void softmax(double[] in, int start, int stride, int count, double[] out) {
        double max = Double.NEGATIVE_INFINITY;
        for (int i = 0; i < count; i++) {
            max = Math.max(max, in[start + i * stride]);
        }
        double sum = 0;
        for (int i = 0; i < count; i++) {
            double v = Math.exp(in[start + i * stride] - max);
            out[start + i * stride] = v;
            sum += v;
        }
        for (int i = 0; i < count; i++) {
            out[start + i * stride] /= sum;
        }
    }

    /** Rows of the slot arrays each expert processes: S slots in each of the G groups. */
    int rowsPerExpert() {
        return groups * slots;
    }

    /** The experts' input rows, expert-major [G·P, d]. */
    INDArray slotInputs(INDArray x) {
        INDArray grouped = Nd4j.create(x.dataType(), (long) groups * width, x.columns());
        for (int g = 0; g < groups; g++) {
            block(grouped, g, width).assign(block(dispatchArr, g, groupSize).transpose().mmul(block(x, g, groupSize)));
        }
        return Nd4j.pullRows(grouped, 1, expertMajorSource, 'c');
    }

    /** Token outputs [N, d] from the experts' outputs (expert-major); keeps the slot outputs for the backward. */
    INDArray combine(INDArray expertOutputs) {
        slotOutputs = Nd4j.pullRows(expertOutputs, 1, groupMajorSource, 'c');
        INDArray y = Nd4j.create(expertOutputs.dataType(), tokens, expertOutputs.columns());
        for (int g = 0; g < groups; g++) {
            block(y, g, groupSize).assign(block(combineArr, g, groupSize).mmul(block(slotOutputs, g, width)));
        }
        return y;
    }

    /** What the backward pass of the mixing needs after the experts' own backward. */
    record Backward(INDArray slotGradients, double[] dCombine) {
    }

    /** Gradient of the loss with respect to the experts' outputs (expert-major), and to the combine weights. */
    Backward slotGradients(INDArray eps) {
        INDArray grouped = Nd4j.create(eps.dataType(), (long) groups * width, eps.columns());
        double[] dC = new double[tokens * width];
        for (int g = 0; g < groups; g++) {
            INDArray e = block(eps, g, groupSize);
            block(grouped, g, width).assign(block(combineArr, g, groupSize).transpose().mmul(e));
            double[] part = e.mmul(block(slotOutputs, g, width).transpose()).castTo(DataType.DOUBLE).dup('c').data()
                    .asDouble();
            System.arraycopy(part, 0, dC, g * groupSize * width, part.length);
        }
        return new Backward(Nd4j.pullRows(grouped, 1, expertMajorSource, 'c'), dC);
    }

    /**
     * Adds the gradient through the slot inputs to {@code dx} and returns the gradient with respect to the logits
     * (row-major [N, P]), given the experts' input gradients (expert-major) and the combine-weight gradient.
     */
    double[] logitGradient(INDArray x, INDArray expertInputGradients, double[] dCombine, INDArray dx) {
        INDArray dSlots = Nd4j.pullRows(expertInputGradients, 1, groupMajorSource, 'c');
        double[] dD = new double[tokens * width];
        for (int g = 0; g < groups; g++) {
            INDArray ds = block(dSlots, g, width);
            block(dx, g, groupSize).addi(block(dispatchArr, g, groupSize).mmul(ds));
            double[] part = block(x, g, groupSize).mmul(ds.transpose()).castTo(DataType.DOUBLE).dup('c').data()
                    .asDouble();
            System.arraycopy(part, 0, dD, g * groupSize * width, part.length);
        }
        double[] dL = new double[tokens * width];
        // combine: softmax over a row's slots
        for (int n = 0; n < tokens; n++) {
            int row = n * width;
            double dot = 0;
            for (int c = 0; c < width; c++) {
                dot += combine[row + c] * dCombine[row + c];
            }
            for (int c = 0; c < width; c++) {
                dL[row + c] = combine[row + c] * (dCombine[row + c] - dot);
            }
        }
        // dispatch: softmax over a group's tokens, per slot column
        for (int g = 0; g < groups; g++) {
            int first = g * groupSize;
            for (int c = 0; c < width; c++) {
                double dot = 0;
                for (int i = 0; i < groupSize; i++) {
                    int at = (first + i) * width + c;
                    dot += dispatch[at] * dD[at];
                }
                for (int i = 0; i < groupSize; i++) {
                    int at = (first + i) * width + c;
                    dL[at] += dispatch[at] * (dD[at] - dot);
                }
            }
        }
        return dL;
    }

    /** Rows [g·size, (g+1)·size) of a row-major matrix, as a view. */
    private static INDArray block(INDArray a, int g, int size) {
        return ExpertKernels.rows(a, g * size, (g + 1) * size);
    }
}
