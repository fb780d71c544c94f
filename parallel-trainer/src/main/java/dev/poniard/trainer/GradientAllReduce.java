package dev.poniard.trainer;

import org.nd4j.linalg.api.ndarray.INDArray;

/**
 * The cross-rank step of gradient reduction. Within a process the trainer sums its replicas' gradients itself
 * (bucketed, as scheduler tasks); an implementation of this interface then combines that sum with the other
 * ranks' sums, so every rank applies the same update. {@link #singleRank()} is the in-process case.
 *
 * <p>A multi-rank implementation (an all-reduce over the communication layer) must leave every rank with
 * bit-identical results: the sum of {@code localGradientSum} over ranks, in place, and the sum of the totals.
 */
public interface GradientAllReduce {
    /** This process's rank, 0-based. */
    int rank();

    /** Number of ranks taking part. */
    int worldSize();

    /**
     * Replaces {@code localGradientSum} (a flat vector, summed over this rank's replicas and not yet divided by
     * any batch size) by its sum over all ranks and returns the totals summed over all ranks.
     */
    StepTotals allReduce(INDArray localGradientSum, StepTotals local);

    /** One process, no communication: the local sum is the global sum. */
    static GradientAllReduce singleRank() {
        return SingleRank.INSTANCE;
    }

    /** The reduction of a single-process run. */
    final class SingleRank implements GradientAllReduce {
        static final SingleRank INSTANCE = new SingleRank();

        private SingleRank() {
        }

        @Override
        public int rank() {
            return 0;
        }

        @Override
        public int worldSize() {
            return 1;
        }

        @Override
        public StepTotals allReduce(INDArray localGradientSum, StepTotals local) {
            return local;
        }

        @Override
        public String toString() {
            return "single rank";
        }
    }
}
