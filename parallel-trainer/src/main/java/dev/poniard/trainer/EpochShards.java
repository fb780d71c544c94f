package dev.poniard.trainer;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collections;
import java.util.List;
import java.util.Random;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.dataset.DataSet;
import org.nd4j.linalg.dataset.ViewIterator;
import org.nd4j.linalg.dataset.api.iterator.DataSetIterator;
import org.nd4j.linalg.factory.Nd4j;

/**
 * One rank's share of an epoch of in-memory training data. The epoch's order is a shuffle seeded by the seed and
 * the epoch number (the same on every rank, and again after a resume); it is cut into global batches of
 * {@code globalBatch} examples, and rank {@code r} takes the r-th of {@code worldSize} near-equal slices of each.
 * Every example is seen exactly once per epoch, by one rank, and the ranks' batches together are exactly the
 * global batches a single process would train on, so multi-rank training follows the single-process path.
 */
public final class EpochShards {
    private EpochShards() {
    }

    /**
     * Rank {@code rank}'s batches of epoch {@code epoch}: {@code globalBatch / worldSize} examples each (the last
     * may be smaller, or missing when the epoch's last global batch has fewer examples than ranks).
     */
    public static DataSetIterator forRank(DataSet all, long seed, int epoch, int globalBatch, int rank, int worldSize) {
        if (worldSize < 1 || rank < 0 || rank >= worldSize) {
            throw new IllegalArgumentException("rank must be in [0, worldSize): rank=" + rank + " worldSize=" + worldSize);
        }
        if (globalBatch < worldSize || globalBatch % worldSize != 0) {
            throw new IllegalArgumentException("globalBatch must be a positive multiple of worldSize (" + worldSize
                    + "), got " + globalBatch);
        }
        int n = all.numExamples();
        if (n < worldSize) {
            throw new IllegalArgumentException("cannot share " + n + " examples among " + worldSize + " ranks: every rank"
                    + " needs at least one; use more data or fewer ranks");
        }
        List<Integer> order = new ArrayList<>(n);
        for (int i = 0; i < n; i++) {
            order.add(i);
        }
        Collections.shuffle(order, new Random(seed * 1_000_003L + epoch));
        int[] mine = new int[n / worldSize + globalBatch];
        int count = 0;
        for (int start = 0; start < n; start += globalBatch) {
            int[] sizes = Batches.shardSizes(Math.min(globalBatch, n - start), worldSize);
            int from = start;
            for (int r = 0; r < rank; r++) {
                from += sizes[r];
            }
            for (int i = 0; i < sizes[rank]; i++) {
                mine[count++] = order.get(from + i);
            }
        }
        int perRank = globalBatch / worldSize;
        int[] idx = Arrays.copyOf(mine, count);
        DataSet rows = new DataSet(examples(all.getFeatures(), idx), examples(all.getLabels(), idx),
                examples(all.getFeaturesMaskArray(), idx), examples(all.getLabelsMaskArray(), idx));
        // Full global batches give every rank exactly perRank examples, so fixed-size views line up with them.
        return new ViewIterator(rows, perRank);
    }

    /** Examples (slices along dimension 0) {@code idx} of an array of any rank, in that order. */
    static INDArray examples(INDArray a, int[] idx) {
        if (a == null) {
            return null;
        }
        long[] shape = a.shape().clone(); // ND4J hands out its own shape array: never write to it
        INDArray rows = Nd4j.pullRows(a.reshape('c', shape[0], a.length() / shape[0]), 1, idx);
        shape[0] = idx.length;
        return rows.reshape('c', shape);
    }
}
