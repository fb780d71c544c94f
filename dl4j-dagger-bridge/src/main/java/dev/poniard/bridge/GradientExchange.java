package dev.poniard.bridge;

import org.nd4j.linalg.api.ndarray.INDArray;

/**
 * The cross-rank step of {@link SameDiffDataParallel}'s gradient combination. Within a process the bridge adds its
 * replicas' example-weighted gradients into one flat buffer; an implementation of this interface then sums that
 * buffer over all ranks (an all-reduce with SUM over the communication layer), so every rank divides by the same
 * global example count and applies the same update. {@link #singleRank()} is the in-process case.
 *
 * <p>Buffer layout (one contiguous vector of the graph's floating-point type):
 * <pre>
 *   [ Σ wᵢ·gᵢ for parameter 0 | ... | for parameter P-1 | Σ wᵢ·lossᵢ | Σ nᵢ ]
 * </pre>
 * where replica i saw nᵢ examples and wᵢ = nᵢ for mean-reduced losses (1 for summed ones). Parameters come in the
 * graph's variable order, which is the same on every rank running the same program. The last two slots let the
 * reported loss and the example count travel with the gradients in one collective.
 */
public interface GradientExchange {
    /** This process's rank, 0-based. */
    int rank();

    /** Number of ranks taking part. */
    int worldSize();

    /**
     * Replaces {@code buffer} by its element-wise sum over all ranks. Every rank must end with bit-identical contents
     * (a fixed reduction order), or the replicas of different ranks drift apart.
     */
    void allReduceSum(INDArray buffer);

    /** One process, no communication. */
    static GradientExchange singleRank() {
        return SingleRank.INSTANCE;
    }

    /** The exchange of a single-process run: the local sum is the global sum. */
    final class SingleRank implements GradientExchange {
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
        public void allReduceSum(INDArray buffer) {
        }

        @Override
        public String toString() {
            return "single rank";
        }
    }
}
