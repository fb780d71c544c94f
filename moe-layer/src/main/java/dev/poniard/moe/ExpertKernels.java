package dev.poniard.moe;

import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;

/** Forward and backward of one chunk (a contiguous row range) of an {@link ExpertJob}, on ND4J arrays. */
final class ExpertKernels {
    private ExpertKernels() {
    }

    /** What a chunk's forward keeps for its backward. */
    record Cache(INDArray preActivation, INDArray activation, INDArray y) {
    }

    /** A chunk's parameter-gradient partials; its input and gate gradients were written to the job's targets. */
    record Partial(INDArray gw1, INDArray gb1, INDArray gw2, INDArray gb2) {
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

    static Cache forward(ExpertJob job, int start, int end, boolean training) {
        INDArray x = rows(job.x, start, end);
        INDArray h = x.mmul(job.w1).addiRowVector(job.b1);
        INDArray a = job.activation.getActivation(h.dup(), training);
        INDArray y = a.mmul(job.w2).addiRowVector(job.b2);
        INDArray target = rows(job.out, start, end);
        if (job.gate == null) {
            target.assign(y);
        } else {
            target.assign(y.mulColumnVector(rows(job.gate, start, end)));
        }
        return new Cache(h, a, y);
    }

    static Partial backward(ExpertJob job, int start, int end, Cache cache) {
        INDArray eps = rows(job.eps, start, end);
        INDArray dy;
        if (job.gate == null) {
            dy = eps;
        } else {
            INDArray dg = cache.y().mul(eps).sum(1);
            for (int i = 0; i < end - start; i++) {
                job.dGate[start + i] = dg.getDouble(i);
            }
            dy = eps.mulColumnVector(rows(job.gate, start, end));
        }
        INDArray gw2 = cache.activation().transpose().mmul(dy);
        INDArray gb2 = dy.sum(true, 0);
        INDArray da = dy.mmul(job.w2.transpose());
        INDArray dh = job.activation.backprop(cache.preActivation().dup(), da).getFirst();
        INDArray x = rows(job.x, start, end);
        INDArray gw1 = x.transpose().mmul(dh);
        INDArray gb1 = dh.sum(true, 0);
        rows(job.dx, start, end).assign(dh.mmul(job.w1.transpose()));
        return new Partial(gw1, gb1, gw2, gb2);
    }

    /** Sums partials in chunk order, so the result does not depend on which worker ran which chunk. */
    static void reduce(ExpertJob job, Partial[] partials) {
        job.gw1.assign(sum(partials, 0));
        job.gb1.assign(sum(partials, 1));
        job.gw2.assign(sum(partials, 2));
        job.gb2.assign(sum(partials, 3));
    }

    private static INDArray sum(Partial[] partials, int which) {
        INDArray acc = null;
        for (Partial p : partials) {
            INDArray v = switch (which) {
                case 0 -> p.gw1();
                case 1 -> p.gb1();
                case 2 -> p.gw2();
                default -> p.gb2();
            };
            acc = acc == null ? v : (acc == v ? acc : acc.add(v));
        }
        return acc;
    }
}
