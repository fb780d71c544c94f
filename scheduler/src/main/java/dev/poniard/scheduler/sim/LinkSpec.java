package dev.poniard.scheduler.sim;

/**
 * A link of the α-β model: a message of {@code n} bytes takes {@code alpha + n / bandwidth}.
 *
 * @param alphaUs latency in microseconds
 * @param gbPerS bandwidth in GB/s (10^9 bytes per second)
 */
public record LinkSpec(double alphaUs, double gbPerS) {
    public LinkSpec {
        if (!(alphaUs >= 0) || !(gbPerS > 0)) {
            throw new IllegalArgumentException("a link needs alphaUs >= 0 and gbPerS > 0, got " + alphaUs + " us, "
                    + gbPerS + " GB/s");
        }
    }

    /** Time in nanoseconds to move {@code bytes} over this link. */
    public double timeNs(double bytes) {
        return alphaUs * 1e3 + bytes / gbPerS;
    }

    public double alphaNs() {
        return alphaUs * 1e3;
    }

    /** Nanoseconds per byte (the β of the α-β model). */
    public double nsPerByte() {
        return 1 / gbPerS;
    }
}
