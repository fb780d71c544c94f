package dev.poniard.trainer;

import java.util.ArrayList;
import java.util.List;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.dataset.DataSet;
import org.nd4j.linalg.dataset.api.iterator.DataSetIterator;
import org.nd4j.linalg.indexing.INDArrayIndex;
import org.nd4j.linalg.indexing.NDArrayIndex;

/**
 * Turns a {@link DataSetIterator}'s batches into global batches of a fixed example count (the last one of an
 * epoch may be smaller), and cuts a batch into per-replica shards. With a target of 0 the iterator's own batches
 * are the global batches.
 */
final class Batches {
    private final Source source;
    private final int target;
    private final String sourceName;
    private final List<DataSet> pending = new ArrayList<>();
    private long pendingExamples;
    private long read;

    /** Where batches come from: an iterator read in place, or a {@link Prefetcher}; null at the end. */
    interface Source {
        DataSet next();
    }

    /** Reads {@code iterator} directly on the calling thread. */
    static Source of(DataSetIterator iterator) {
        return () -> iterator.hasNext() ? nonNull(iterator, iterator.next()) : null;
    }

    /** An iterator that says it has a next batch and yields null is broken, not finished. */
    static DataSet nonNull(DataSetIterator iterator, DataSet ds) {
        if (ds == null) {
            throw new TrainerException(iterator.getClass().getSimpleName() + ".next() returned null although hasNext()"
                    + " was true; a training iterator must yield DataSets until hasNext() is false");
        }
        return ds;
    }

    Batches(Source source, int target, String sourceName) {
        this.source = source;
        this.sourceName = sourceName;
        this.target = target;
    }

    /** Number of batches read from the source so far. */
    long read() {
        return read;
    }

    /** The next global batch, or null at the end of the epoch. Exceptions of the source propagate as they are. */
    DataSet next() {
        if (target <= 0) {
            DataSet ds = source.next();
            return ds == null ? null : check(ds);
        }
        while (pendingExamples < target) {
            DataSet next = source.next();
            if (next == null) {
                break;
            }
            DataSet ds = check(next);
            pending.add(ds);
            pendingExamples += ds.numExamples();
        }
        if (pendingExamples == 0) {
            return null;
        }
        DataSet all = pending.size() == 1 ? pending.get(0) : DataSet.merge(pending);
        pending.clear();
        if (all.numExamples() <= target) {
            pendingExamples = 0;
            return all;
        }
        DataSet head = slice(all, 0, target);
        DataSet rest = slice(all, target, all.numExamples());
        pending.add(rest);
        pendingExamples = rest.numExamples();
        return head;
    }

    private DataSet check(DataSet ds) {
        read++;
        if (ds.getFeatures() == null || ds.getLabels() == null) {
            throw new TrainerException("batch " + read + " from " + sourceName
                    + " has no features or no labels; a training iterator must yield DataSets with both");
        }
        long n = ds.getFeatures().size(0);
        if (ds.getLabels().size(0) != n) {
            throw new TrainerException("batch " + read + " has " + n + " feature rows but " + ds.getLabels().size(0)
                    + " label rows; features and labels must have the same first dimension (examples)");
        }
        if (n == 0) {
            throw new TrainerException("batch " + read + " is empty; the iterator must not yield empty batches");
        }
        return ds;
    }

    /** Shard sizes for {@code n} examples over {@code parts} replicas: as even as possible, larger ones first. */
    static int[] shardSizes(int n, int parts) {
        int[] sizes = new int[parts];
        for (int i = 0; i < parts; i++) {
            sizes[i] = n / parts + (i < n % parts ? 1 : 0);
        }
        return sizes;
    }

    /**
     * Examples [from, to) of a data set: views of 'c'-ordered arrays, whose rows are contiguous (copying them cost
     * ~0.5 s of CPU, fresh pages included, in a 6 s {@code ./poniard train}), and copies of others. A replica keeps
     * its input arrays until its next step, as it keeps the whole batch when it is the only replica.
     */
    static DataSet slice(DataSet ds, int from, int to) {
        return new DataSet(rows(ds.getFeatures(), from, to), rows(ds.getLabels(), from, to),
                rows(ds.getFeaturesMaskArray(), from, to), rows(ds.getLabelsMaskArray(), from, to));
    }

    static INDArray rows(INDArray a, int from, int to) {
        if (a == null) {
            return null;
        }
        if (from == 0 && to == a.size(0)) {
            return a;
        }
        INDArrayIndex[] idx = new INDArrayIndex[a.rank()];
        idx[0] = NDArrayIndex.interval(from, to);
        for (int d = 1; d < idx.length; d++) {
            idx[d] = NDArrayIndex.all();
        }
        INDArray view = a.get(idx);
        return a.ordering() == 'c' ? view : view.dup();
    }
}
