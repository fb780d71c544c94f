package dev.poniard.bridge;

/**
 * How the graph's loss combines examples, which decides how shard gradients combine into the full-batch gradient.
 */
public enum LossReduction {
    /**
     * The loss is a mean over the examples of the batch (SameDiff's default, {@code MEAN_BY_NONZERO_WEIGHT_COUNT}, and
     * any mean-squared or cross-entropy loss without weights): a shard's gradient is scaled by its share of the global
     * batch, n_shard / n_global. Terms that do not depend on the batch (a weight penalty written into the graph) are
     * reproduced exactly too, as the shares add up to one.
     */
    MEAN,
    /** The loss is a sum over the examples ({@code LossReduce.SUM}): shard gradients are added unscaled. */
    SUM
}
