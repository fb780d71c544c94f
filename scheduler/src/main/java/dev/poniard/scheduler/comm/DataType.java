package dev.poniard.scheduler.comm;

/** Element types a collective can reduce. The code is the value carried in a frame's dtype field. */
public enum DataType {
    FLOAT32(1, 4),
    FLOAT64(2, 8),
    INT32(3, 4),
    INT64(4, 8);

    private final int code;
    private final int size;

    DataType(int code, int size) {
        this.code = code;
        this.size = size;
    }

    /** The wire code (1..4); 0 on the wire means "no element type". */
    public int code() {
        return code;
    }

    /** Bytes per element. */
    public int size() {
        return size;
    }

    /** The type for a wire code, or null when the code is unknown. */
    public static DataType fromCode(int code) {
        return switch (code) {
            case 1 -> FLOAT32;
            case 2 -> FLOAT64;
            case 3 -> INT32;
            case 4 -> INT64;
            default -> null;
        };
    }
}
