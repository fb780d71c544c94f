package dev.poniard.trainer;

import dev.poniard.scheduler.Scheduler;
import dev.poniard.scheduler.TaskHandle;
import dev.poniard.scheduler.TaskOptions;
import java.util.ArrayList;
import java.util.List;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.indexing.NDArrayIndex;

/**
 * In-process sum of the replicas' flat gradient vectors into replica 0's vector. The vector is cut into buckets,
 * and each bucket is summed by its own scheduler task that depends only on the gradient tasks, so buckets run in
 * parallel. Replicas are added in a fixed order (1, 2, ...), so results are deterministic run to run. Each bucket
 * task also reports whether its bucket of the sum is finite, which costs one more pass over memory already in
 * cache. The bucket views are made once: DL4J keeps a model's gradient view array for its lifetime.
 */
final class BucketedReduction {
    /** Buckets smaller than this cost more in task overhead than they gain in parallelism. */
    static final long MIN_BUCKET = 16_384;
    private static final TaskOptions SUM = TaskOptions.named("grad-sum").priority(1);

    private final INDArray[][] views; // [bucket][replica]

    /** {@code bucketSize} elements per bucket, or 0 for two buckets per worker of at least {@link #MIN_BUCKET}. */
    BucketedReduction(List<INDArray> gradientViews, int workers, long bucketSize) {
        long n = gradientViews.get(0).length();
        for (INDArray g : gradientViews) {
            if (g.length() != n) {
                throw new IllegalStateException("replica gradient lengths differ: " + g.length() + " vs " + n);
            }
        }
        int buckets = (int) Math.max(1, bucketSize > 0 ? Math.min(n, (n + bucketSize - 1) / bucketSize)
                : Math.min(2L * workers, n / MIN_BUCKET));
        views = new INDArray[buckets][gradientViews.size()];
        for (int b = 0; b < buckets; b++) {
            long from = n * b / buckets, to = n * (b + 1) / buckets;
            for (int r = 0; r < gradientViews.size(); r++) {
                views[b][r] = range(gradientViews.get(r), from, to);
            }
        }
    }

    /** A view (never a copy: the sum is written through it) of elements [from, to) of a flat vector. */
    static INDArray range(INDArray flat, long from, long to) {
        if (flat.rank() == 1) {
            return flat.get(NDArrayIndex.interval(from, to));
        }
        if (flat.rank() == 2 && flat.size(0) == 1) {
            return flat.get(NDArrayIndex.all(), NDArrayIndex.interval(from, to));
        }
        throw new IllegalArgumentException("expected a flat gradient vector, got shape " + java.util.Arrays.toString(flat.shape()));
    }

    int buckets() {
        return views.length;
    }

    /**
     * Spawns the bucket tasks: each waits for the given gradient tasks, adds the gradients of replicas
     * {@code 1..active-1} into replica 0's, and yields 1 if its bucket of the sum is not finite, else 0.
     */
    List<TaskHandle<Integer>> spawn(Scheduler scheduler, List<? extends TaskHandle<?>> gradientTasks, int active) {
        List<TaskHandle<Integer>> out = new ArrayList<>(views.length);
        Object[] deps = gradientTasks.toArray();
        for (INDArray[] bucket : views) {
            out.add(scheduler.spawnN(SUM, ignored -> {
                INDArray target = bucket[0];
                for (int r = 1; r < active; r++) {
                    target.addi(bucket[r]);
                }
                return Double.isFinite(target.sumNumber().doubleValue()) ? 0 : 1;
            }, deps));
        }
        return out;
    }
}
