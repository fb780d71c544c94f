package dev.poniard.trainer;

/**
 * What a step's gradient reduction carries besides the gradient itself; all fields add up across workers and
 * ranks, so a cross-rank reduction sums them as it sums gradients.
 *
 * @param examples examples that contributed to the gradient sum
 * @param lossSum sum over those examples of the loss (each shard's mean score times its example count)
 * @param nonFiniteChunks how many reduced chunks held a NaN or an infinity (0 for a usable step)
 */
public record StepTotals(long examples, double lossSum, long nonFiniteChunks) {
    public StepTotals plus(StepTotals o) {
        return new StepTotals(examples + o.examples, lossSum + o.lossSum, nonFiniteChunks + o.nonFiniteChunks);
    }

    /** The step's loss: the example-weighted mean of the shards' scores. */
    public double meanLoss() {
        return examples == 0 ? Double.NaN : lossSum / examples;
    }

    public boolean finite() {
        return nonFiniteChunks == 0 && Double.isFinite(lossSum);
    }
}
