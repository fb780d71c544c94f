package dev.poniard.scheduler.comm;

/**
 * Reduction operators. AVG is SUM followed by a division by the communicator size (integer division for
 * integer types), applied once so that every rank ends with the same bits.
 */
public enum ReduceOp {
    SUM(1),
    PROD(2),
    MIN(3),
    MAX(4),
    AVG(5);

    private final int code;

    ReduceOp(int code) {
        this.code = code;
    }

    /** The wire code (1..5); 0 on the wire means "no operator". */
    public int code() {
        return code;
    }

    /** The operator for a wire code, or null when the code is unknown. */
    public static ReduceOp fromCode(int code) {
        return switch (code) {
            case 1 -> SUM;
            case 2 -> PROD;
            case 3 -> MIN;
            case 4 -> MAX;
            case 5 -> AVG;
            default -> null;
        };
    }
}
