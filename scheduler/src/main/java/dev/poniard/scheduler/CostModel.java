package dev.poniard.scheduler;

import java.util.concurrent.ConcurrentHashMap;

/**
 * The learned cost model: an exponential moving average of observed durations per task signature and
 * processor kind. A signature is the task's name when it has one, else its function's class (one per
 * lambda call site). Before the first observation the task's cost hint is used, else a default.
 *
 * <p>Updates race benignly: two concurrent observations may lose one sample, which an average tolerates,
 * so the hot path needs no lock. One model may be shared by several schedulers (or a simulator).
 */
public final class CostModel {
    /** Estimate for a signature never seen and without a hint. */
    public static final long DEFAULT_ESTIMATE_NS = 10_000;

    private final double alpha;
    private final ConcurrentHashMap<Object, Stat> stats = new ConcurrentHashMap<>();
    /** Unnamed tasks are keyed by their function's class: a ClassValue finds those faster than a map. */
    private final ClassValue<Stat> classStats = new ClassValue<>() {
        @Override
        protected Stat computeValue(Class<?> type) {
            return stats.computeIfAbsent(type, k -> new Stat());
        }
    };

    public CostModel() {
        this(0.2);
    }

    /** @param alpha weight of the newest observation, in (0, 1] */
    public CostModel(double alpha) {
        if (!(alpha > 0 && alpha <= 1)) {
            throw new IllegalArgumentException("alpha must be in (0, 1], got " + alpha);
        }
        this.alpha = alpha;
    }

    private static final class Stat {
        final double[] meanNs = new double[Processor.Kind.values().length];
        final long[] count = new long[meanNs.length];
    }

    /** Estimated duration in nanoseconds of a task with this signature on a processor of this kind. */
    public long estimateNs(Object signature, Processor.Kind kind, long hintNs) {
        Stat s = signature instanceof Class ? classStats.get((Class<?>) signature) : stats.get(signature);
        if (s != null && s.count[kind.ordinal()] > 0) {
            return (long) s.meanNs[kind.ordinal()];
        }
        return hintNs > 0 ? hintNs : DEFAULT_ESTIMATE_NS;
    }

    public void observe(Object signature, Processor.Kind kind, long durationNs) {
        Stat s = signature instanceof Class ? classStats.get((Class<?>) signature) : stats.get(signature);
        if (s == null) {
            s = stats.computeIfAbsent(signature, k -> new Stat());
        }
        int k = kind.ordinal();
        long n = s.count[k];
        s.meanNs[k] = n == 0 ? durationNs : s.meanNs[k] + alpha * (durationNs - s.meanNs[k]);
        s.count[k] = n + 1;
    }

    /** Observations recorded for a signature on a kind of processor. */
    public long observations(Object signature, Processor.Kind kind) {
        Stat s = signature instanceof Class ? classStats.get((Class<?>) signature) : stats.get(signature);
        return s == null ? 0 : s.count[kind.ordinal()];
    }
}
