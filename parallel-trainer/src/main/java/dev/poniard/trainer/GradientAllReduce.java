package dev.poniard.trainer;

import org.nd4j.linalg.api.ndarray.INDArray;

/**
 * The cross-rank step of gradient reduction. Within a process the trainer sums its replicas' gradients itself
 * (bucketed, as scheduler tasks); an implementation of this interface then combines that sum with the other
 * ranks' sums, so every rank applies the same update. {@link #singleRank()} is the in-process case;
 * {@link CommGradientAllReduce} all-reduces over a {@code Communicator}.
 *
 * <p>Every step calls {@link #allReduceTotals} on every rank, then, unless the totals say the step has no
 * examples anywhere or is not finite, {@link #allReduceGradient}. A rank whose data ran out takes part with zero
 * examples and a zero gradient until every rank's data is out, which ends the epoch everywhere. Results must be
 * bit-identical on every rank.
 */
public interface GradientAllReduce {
    /** This process's rank, 0-based. */
    int rank();

    /** Number of ranks taking part. */
    int worldSize();

    /** Returns the step's totals summed over all ranks (the same value on every rank). */
    StepTotals allReduceTotals(StepTotals local);

    /**
     * Replaces {@code localGradientSum} (a flat vector, summed over this rank's replicas and not yet divided by
     * any batch size) by its sum over all ranks, in place.
     */
    void allReduceGradient(INDArray localGradientSum);

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
        public StepTotals allReduceTotals(StepTotals local) {
            return local;
        }

        @Override
        public void allReduceGradient(INDArray localGradientSum) {
        }

        @Override
        public String toString() {
            return "single rank";
        }
    }
}
