package dev.poniard.bridge;

/**
 * The estimated work of one op from its input and output shapes: floating-point operations for matrix products
 * and convolutions, bytes read and written for everything else. {@link #nanos()} turns it into a duration prior for
 * the scheduler's cost hint; the scheduler's learned cost model replaces the prior once it has timed the op.
 *
 * @param flops multiply-adds counted as two, 0 for ops that are estimated by bytes only
 * @param bytes bytes of all inputs and outputs
 */
public record OpCost(double flops, double bytes) {
    /** Rough single-worker rates on the development machines (DESIGN §4: OpenBLAS ~50 GFLOP/s per core at best). */
    static final double FLOPS_PER_NS = 10.0;
    static final double BYTES_PER_NS = 4.0;
    /** What launching one native op costs regardless of its size. */
    static final double FIXED_NS = 3_000.0;

    public static final OpCost ZERO = new OpCost(0, 0);

    /** The estimated duration in nanoseconds on one worker. */
    public double nanos() {
        return FIXED_NS + Math.max(flops / FLOPS_PER_NS, bytes / BYTES_PER_NS);
    }
}
