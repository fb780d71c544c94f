package dev.poniard.moe;

import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;

/** Forward and backward of one chunk (a contiguous row range) of an {@link ExpertJob}, on ND4J arrays. */
final class ExpertKernels {
    private ExpertKernels() {
    }

    /** What a chunk's forward keeps for its backward. */
    record Cache(INDArray preActivation, INDArray activation, INDArray y) {
        void close() {
            free(preActivation);
            free(activation);
            free(y);
        }
    }

    /** A chunk's parameter-gradient partials; its input and gate gradients were written to the job's targets. */
    record Partial(INDArray gw1, INDArray gb1, INDArray gw2, INDArray gb2) {
        INDArray get(int which) {
            return switch (which) {
                case 0 -> gw1;
                case 1 -> gb1;
                case 2 -> gw2;
                default -> gb2;
            };
        }

        void close() {
            free(gw1);
            free(gb1);
            free(gw2);
            free(gb2);
        }
    }

    /**
     * Rows [start, end) of a row-major matrix as a view. Built directly on the buffer: ND4J M2.1's {@code get} with
     * intervals on views returned empty or collapsed arrays for some row ranges when called from worker threads.
     */
    static INDArray rows(INDArray a, int start, int end) {
        long cols = a.size(1);
        // a one-row matrix may report any row stride (ND4J gives [1, 1] for a fresh [1, d] array): irrelevant here
        if (a.rank() != 2 || a.ordering() != 'c' || a.stride(1) != 1 || (a.size(0) > 1 && a.stride(0) != cols)) {
            throw new IllegalArgumentException("expected a row-major contiguous matrix, got shape "
                    + java.util.Arrays.toString(a.shape()) + " strides " + java.util.Arrays.toString(a.stride()));
        }
        if (start < 0 || end < start || end > a.size(0)) {
            throw new IndexOutOfBoundsException("rows [" + start + ", " + end + ") of " + a.size(0));
        }
        return Nd4j.create(a.data(), new long[] {end - start, cols}, new long[] {cols, 1}, a.offset() + start * cols, 'c');
    }

    /*
     * Every temporary is closed as soon as it is dead, and products go through Nd4j.gemm with transpose flags into
     * arrays created here. Both matter on these machines: a fresh page costs ~13 us to fault in (~3.4 ms per MB, a
     * hundred times rewriting it), and ND4J frees an unclosed array only when the GC happens to run, so every
     * temporary landed on fresh pages; mmul of a transposed view also made a hidden copy. Closed buffers go back to
     * malloc and are reused warm.
     */

    static Cache forward(ExpertJob job, int start, int end, boolean training) {
        INDArray x = rows(job.x, start, end);
        INDArray h = product(x, job.w1, false, false).addiRowVector(job.b1);
        INDArray a = h.dup();
        INDArray act = job.activation.getActivation(a, training);
        if (act != a) {
            free(a);
        }
        INDArray y = product(act, job.w2, false, false).addiRowVector(job.b2);
        INDArray target = rows(job.out, start, end);
        target.assign(y);
        if (job.gate != null) {
            target.muliColumnVector(rows(job.gate, start, end));
        }
        return new Cache(h, act, y);
    }

    /** Backward of one chunk; consumes (closes) its cache. */
    static Partial backward(ExpertJob job, int start, int end, Cache cache) {
        INDArray eps = rows(job.eps, start, end);
        INDArray dy;
        if (job.gate == null) {
            dy = eps;
        } else {
            INDArray ye = cache.y().mul(eps);
            INDArray dg = ye.sum(1);
            double[] values = dg.toDoubleVector();
            System.arraycopy(values, 0, job.dGate, start, end - start);
            free(ye);
            free(dg);
            dy = eps.mulColumnVector(rows(job.gate, start, end));
        }
        INDArray gw2 = product(cache.activation(), dy, true, false);
        INDArray gb2 = dy.sum(true, 0);
        INDArray da = product(dy, job.w2, false, true);
        if (dy != eps) {
            free(dy);
        }
        free(cache.activation());
        free(cache.y());
        // the pre-activation is dead after this: backprop may overwrite it
        INDArray dh = job.activation.backprop(cache.preActivation(), da).getFirst();
        INDArray x = rows(job.x, start, end);
        INDArray gw1 = product(x, dh, true, false);
        INDArray gb1 = dh.sum(true, 0);
        INDArray dx = product(dh, job.w1, false, true);
        rows(job.dx, start, end).assign(dx);
        free(dx);
        free(dh);
        free(da);
        free(cache.preActivation());
        return new Partial(gw1, gb1, gw2, gb2);
    }

    /**
     * Sums partials in chunk order, so the result does not depend on which worker ran which chunk; closes them.
     * ((p0 + p1) + p2) ..., the same order whatever the chunk count.
     */
    static void reduce(ExpertJob job, Partial[] partials) {
        accumulate(job.gw1, partials, 0);
        accumulate(job.gb1, partials, 1);
        accumulate(job.gw2, partials, 2);
        accumulate(job.gb2, partials, 3);
        for (Partial p : partials) {
            p.close();
        }
    }

    private static void accumulate(INDArray target, Partial[] partials, int which) {
        for (int i = 0; i < partials.length; i++) {
            INDArray v = partials[i].get(which);
            if (i == 0) {
                target.assign(v);
            } else {
                target.addi(v);
            }
        }
    }

    /** op(a) · op(b) into a new array. */
    private static INDArray product(INDArray a, INDArray b, boolean transposeA, boolean transposeB) {
        long m = transposeA ? a.columns() : a.rows();
        long n = transposeB ? b.rows() : b.columns();
        INDArray c = Nd4j.createUninitialized(a.dataType(), m, n);
        return Nd4j.gemm(a, b, c, transposeA, transposeB, 1.0, 0.0);
    }

    /** Frees an array this class created (never a view or a workspace array, which {@code closeable()} refuses). */
    static void free(INDArray a) {
        if (a != null && a.closeable()) {
            a.close();
        }
    }

}
