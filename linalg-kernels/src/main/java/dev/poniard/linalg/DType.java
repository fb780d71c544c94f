package dev.poniard.linalg;

/** Element type of a tile or matrix: IEEE binary64 or binary32. */
public enum DType {
    F64(8, Math.ulp(1.0) / 2),
    F32(4, Math.ulp(1.0f) / 2);

    private final int bytes;
    private final double epsilon;

    DType(int bytes, double epsilon) {
        this.bytes = bytes;
        this.epsilon = epsilon;
    }

    /** Bytes per element. */
    public int bytes() {
        return bytes;
    }

    /** Unit roundoff (half the distance from 1 to the next representable number), as LAPACK's {@code dlamch('E')}. */
    public double epsilon() {
        return epsilon;
    }
}
