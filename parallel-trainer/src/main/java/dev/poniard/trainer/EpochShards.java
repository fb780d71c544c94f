package dev.poniard.trainer;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collections;
import java.util.List;
import java.util.NoSuchElementException;
import java.util.Random;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.dataset.DataSet;
import org.nd4j.linalg.dataset.api.DataSetPreProcessor;
import org.nd4j.linalg.dataset.api.iterator.DataSetIterator;
import org.nd4j.linalg.factory.Nd4j;

/**
 * One rank's share of an epoch of in-memory training data. The epoch's order is a shuffle seeded by the seed and
 * the epoch number (the same on every rank, and again after a resume); it is cut into global batches of
 * {@code globalBatch} examples, and rank {@code r} takes the r-th of {@code worldSize} near-equal slices of each.
 * Every example is seen exactly once per epoch, by one rank, and the ranks' batches together are exactly the
 * global batches a single process would train on, so multi-rank training follows the single-process path.
 * <p>
 * The iterator gathers each batch's rows when it is asked for the batch, not the whole epoch up front: a copy of the
 * 8,000-image MNIST training set (25 MB) took 100-130 ms per epoch on these machines, mostly faulting in fresh pages,
 * on the thread that starts the epoch while the workers waited; a batch gathered on a prefetch thread overlaps training.
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
        // Full global batches give every rank exactly perRank examples, so fixed-size batches line up with them.
        return new Gathering(all, Arrays.copyOf(mine, count), globalBatch / worldSize);
    }

    /**
     * Batches of {@code batch} examples (the last may be smaller) gathered from {@code all} in the order of
     * {@code idx}, each into arrays of its own. Like {@link org.nd4j.linalg.dataset.ViewIterator}, which it
     * replaces, it is resettable and not meant to be wrapped for asynchronous prefetch.
     */
    private static final class Gathering implements DataSetIterator {
        private final DataSet all;
        private final int[] idx;
        private final int batch;
        private int cursor;
        private DataSetPreProcessor preProcessor;

        Gathering(DataSet all, int[] idx, int batch) {
            this.all = all;
            this.idx = idx;
            this.batch = batch;
        }

        @Override
        public boolean hasNext() {
            return cursor < idx.length;
        }

        @Override
        public DataSet next() {
            return next(batch);
        }

        @Override
        public DataSet next(int num) {
            if (!hasNext()) {
                throw new NoSuchElementException("the epoch's " + idx.length + " examples have all been returned; reset() starts over");
            }
            int[] rows = Arrays.copyOfRange(idx, cursor, Math.min(idx.length, cursor + num));
            cursor += rows.length;
            DataSet ds = new DataSet(examples(all.getFeatures(), rows), examples(all.getLabels(), rows),
                    examples(all.getFeaturesMaskArray(), rows), examples(all.getLabelsMaskArray(), rows));
            if (preProcessor != null) {
                preProcessor.preProcess(ds);
            }
            return ds;
        }

        @Override
        public int inputColumns() {
            return all.numInputs();
        }

        @Override
        public int totalOutcomes() {
            return all.numOutcomes();
        }

        @Override
        public boolean resetSupported() {
            return true;
        }

        @Override
        public boolean asyncSupported() {
            return false;
        }

        @Override
        public void reset() {
            cursor = 0;
        }

        @Override
        public int batch() {
            return batch;
        }

        @Override
        public void setPreProcessor(DataSetPreProcessor value) {
            preProcessor = value;
        }

        @Override
        public DataSetPreProcessor getPreProcessor() {
            return preProcessor;
        }

        @Override
        public List<String> getLabels() {
            return null;
        }
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
