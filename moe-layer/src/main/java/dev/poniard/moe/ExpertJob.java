package dev.poniard.moe;

import java.util.Objects;
import org.nd4j.linalg.activations.IActivation;
import org.nd4j.linalg.api.ndarray.INDArray;

/**
 * One expert's work in one step: the FFN y = act(x·W1 + b1)·W2 + b2 over its m token rows, the rows' gates, where
 * the gated output goes, and — for the backward pass — the upstream gradient rows and where the input gradient,
 * gate gradient and parameter gradients go. All arrays are [rows, cols] matrices; output and gradient targets may
 * be views, and distinct chunks of one job write disjoint rows of them.
 */
public final class ExpertJob {
    final String name;
    final INDArray w1;
    final INDArray b1;
    final INDArray w2;
    final INDArray b2;
    final IActivation activation;
    final INDArray x;
    final INDArray gate;
    final INDArray out;
    INDArray gw1;
    INDArray gb1;
    INDArray gw2;
    INDArray gb2;
    INDArray eps;
    INDArray dx;
    double[] dGate;

    /**
     * @param x [m, d] input rows
     * @param gate [m, 1] gates, or null for gate 1 (shared experts)
     * @param out [m, d] receives gate · y
     */
    public ExpertJob(String name, INDArray w1, INDArray b1, INDArray w2, INDArray b2, IActivation activation, INDArray x,
                     INDArray gate, INDArray out) {
        this.name = Objects.requireNonNull(name, "name");
        this.w1 = w1;
        this.b1 = b1;
        this.w2 = w2;
        this.b2 = b2;
        this.activation = Objects.requireNonNull(activation, "activation");
        this.x = x;
        this.gate = gate;
        this.out = out;
        long d = w1.rows();
        if (x.rank() != 2 || x.columns() != d || out.rows() != x.rows() || out.columns() != w2.columns()
                || (gate != null && gate.length() != x.rows())) {
            throw new IllegalArgumentException("expert " + name + ": x " + java.util.Arrays.toString(x.shape())
                    + ", out " + java.util.Arrays.toString(out.shape()) + " and W1 [" + d + ", " + w1.columns()
                    + "] do not fit");
        }
    }

    /**
     * Sets the backward pass's inputs and targets.
     *
     * @param eps [m, d] gradient of the loss with respect to the layer output at this job's tokens (before gating)
     * @param dx [m, d] receives the gradient with respect to x
     * @param dGate m values receiving the gradient with respect to each gate, or null for an ungated job
     * @param gw1 receives dW1 (likewise gb1, gw2, gb2)
     */
    public ExpertJob gradients(INDArray eps, INDArray dx, double[] dGate, INDArray gw1, INDArray gb1, INDArray gw2,
                               INDArray gb2) {
        if (eps.rows() != x.rows() || dx.rows() != x.rows()) {
            throw new IllegalArgumentException("expert " + name + ": eps/dx rows must equal the job's " + x.rows());
        }
        this.eps = eps;
        this.dx = dx;
        this.dGate = dGate;
        this.gw1 = gw1;
        this.gb1 = gb1;
        this.gw2 = gw2;
        this.gb2 = gb2;
        return this;
    }

    public String name() {
        return name;
    }

    public int rows() {
        return (int) x.rows();
    }
}
