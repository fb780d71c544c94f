package dev.poniard.bridge;

/**
 * The work of one op: floating-point operations for matrix products and convolutions and bytes read and written,
 * estimated from its input and output shapes, and its times where they were measured. {@link #nanos()} turns it into
 * a duration: the measured time when there is one, else a prior from the shapes; the scheduler's learned cost model
 * replaces either once it has timed the op's task.
 *
 * @param flops               multiply-adds counted as two, 0 for ops that are estimated by bytes only
 * @param bytes               bytes of all inputs and outputs
 * @param timedNanos          the forward's measured time in nanoseconds ({@link SameDiffDag#timeCosts}), NaN if not
 *                            timed
 * @param timedBackwardNanos  the measured time of the gradient ops this op's backward ran, NaN if not timed
 */
public record OpCost(double flops, double bytes, double timedNanos, double timedBackwardNanos) {
    /** Rough single-worker rates on the development machines (DESIGN §4: OpenBLAS ~50 GFLOP/s per core at best). */
    static final double FLOPS_PER_NS = 10.0;
    static final double BYTES_PER_NS = 4.0;
    /** What launching one native op costs regardless of its size. */
    static final double FIXED_NS = 3_000.0;

    public static final OpCost ZERO = new OpCost(0, 0);

    /** A shape-based estimate, not timed. */
    public OpCost(double flops, double bytes) {
        this(flops, bytes, Double.NaN, Double.NaN);
    }

    /** This estimate with measured forward and backward times (NaN where not measured). */
    public OpCost timed(double forwardNanos, double backwardNanos) {
        return new OpCost(flops, bytes, forwardNanos, backwardNanos);
    }

    /** The forward's duration in nanoseconds on one worker: measured if timed, else estimated from the shapes. */
    public double nanos() {
        return !Double.isNaN(timedNanos) ? timedNanos : FIXED_NS + Math.max(flops / FLOPS_PER_NS, bytes / BYTES_PER_NS);
    }
}
