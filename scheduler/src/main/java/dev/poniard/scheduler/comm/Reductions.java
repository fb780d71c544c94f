package dev.poniard.scheduler.comm;

import org.agrona.UnsafeApi;

/**
 * Element-wise reductions on raw memory. {@code combine(..., inFirst)} computes
 * {@code dst[i] = inFirst ? op(in[i], dst[i]) : op(dst[i], in[i])}; callers pick the operand order so that
 * every element is reduced in one fixed order (results are bitwise reproducible). AVG combines as SUM; the
 * division happens once in {@link #divide}.
 */
public final class Reductions {
    private Reductions() {
    }

    /**
     * Combines {@code count} elements at {@code in} into {@code dst}.
     * <p>
     * One branch-free loop per type and operation, the operand order chosen by passing the addresses in that order:
     * a loop that tested {@code inFirst} per element saw its profile flip between callers (rank 0 reduces with the
     * peer's data second, rank 1 first), and in about one process in four C2 ended up, after repeated
     * deoptimisations, with code that reduced 12x slower than in the others.
     */
    public static void combine(DataType type, ReduceOp op, long in, long dst, long count, boolean inFirst) {
        final long a = inFirst ? in : dst;
        final long b = inFirst ? dst : in;
        switch (type) {
            case FLOAT32 -> {
                switch (op) {
                    case SUM, AVG -> sumF(a, b, dst, count);
                    case PROD -> prodF(a, b, dst, count);
                    case MIN -> minF(a, b, dst, count);
                    case MAX -> maxF(a, b, dst, count);
                    default -> throw new IllegalArgumentException("unknown op " + op);
                }
            }
            case FLOAT64 -> {
                switch (op) {
                    case SUM, AVG -> sumD(a, b, dst, count);
                    case PROD -> prodD(a, b, dst, count);
                    case MIN -> minD(a, b, dst, count);
                    case MAX -> maxD(a, b, dst, count);
                    default -> throw new IllegalArgumentException("unknown op " + op);
                }
            }
            case INT32 -> {
                switch (op) {
                    case SUM, AVG -> sumI(a, b, dst, count);
                    case PROD -> prodI(a, b, dst, count);
                    case MIN -> minI(a, b, dst, count);
                    case MAX -> maxI(a, b, dst, count);
                    default -> throw new IllegalArgumentException("unknown op " + op);
                }
            }
            case INT64 -> {
                switch (op) {
                    case SUM, AVG -> sumL(a, b, dst, count);
                    case PROD -> prodL(a, b, dst, count);
                    case MIN -> minL(a, b, dst, count);
                    case MAX -> maxL(a, b, dst, count);
                    default -> throw new IllegalArgumentException("unknown op " + op);
                }
            }
            default -> throw new IllegalArgumentException("unknown type " + type);
        }
    }

    private static void sumF(long a, long b, long out, long count) {
        for (long i = 0, end = count * 4; i < end; i += 4) {
            UnsafeApi.putFloat(out + i, UnsafeApi.getFloat(a + i) + UnsafeApi.getFloat(b + i));
        }
    }

    private static void prodF(long a, long b, long out, long count) {
        for (long i = 0, end = count * 4; i < end; i += 4) {
            UnsafeApi.putFloat(out + i, UnsafeApi.getFloat(a + i) * UnsafeApi.getFloat(b + i));
        }
    }

    private static void minF(long a, long b, long out, long count) {
        for (long i = 0, end = count * 4; i < end; i += 4) {
            UnsafeApi.putFloat(out + i, Math.min(UnsafeApi.getFloat(a + i), UnsafeApi.getFloat(b + i)));
        }
    }

    private static void maxF(long a, long b, long out, long count) {
        for (long i = 0, end = count * 4; i < end; i += 4) {
            UnsafeApi.putFloat(out + i, Math.max(UnsafeApi.getFloat(a + i), UnsafeApi.getFloat(b + i)));
        }
    }

    private static void sumD(long a, long b, long out, long count) {
        for (long i = 0, end = count * 8; i < end; i += 8) {
            UnsafeApi.putDouble(out + i, UnsafeApi.getDouble(a + i) + UnsafeApi.getDouble(b + i));
        }
    }

    private static void prodD(long a, long b, long out, long count) {
        for (long i = 0, end = count * 8; i < end; i += 8) {
            UnsafeApi.putDouble(out + i, UnsafeApi.getDouble(a + i) * UnsafeApi.getDouble(b + i));
        }
    }

    private static void minD(long a, long b, long out, long count) {
        for (long i = 0, end = count * 8; i < end; i += 8) {
            UnsafeApi.putDouble(out + i, Math.min(UnsafeApi.getDouble(a + i), UnsafeApi.getDouble(b + i)));
        }
    }

    private static void maxD(long a, long b, long out, long count) {
        for (long i = 0, end = count * 8; i < end; i += 8) {
            UnsafeApi.putDouble(out + i, Math.max(UnsafeApi.getDouble(a + i), UnsafeApi.getDouble(b + i)));
        }
    }

    private static void sumI(long a, long b, long out, long count) {
        for (long i = 0, end = count * 4; i < end; i += 4) {
            UnsafeApi.putInt(out + i, UnsafeApi.getInt(a + i) + UnsafeApi.getInt(b + i));
        }
    }

    private static void prodI(long a, long b, long out, long count) {
        for (long i = 0, end = count * 4; i < end; i += 4) {
            UnsafeApi.putInt(out + i, UnsafeApi.getInt(a + i) * UnsafeApi.getInt(b + i));
        }
    }

    private static void minI(long a, long b, long out, long count) {
        for (long i = 0, end = count * 4; i < end; i += 4) {
            UnsafeApi.putInt(out + i, Math.min(UnsafeApi.getInt(a + i), UnsafeApi.getInt(b + i)));
        }
    }

    private static void maxI(long a, long b, long out, long count) {
        for (long i = 0, end = count * 4; i < end; i += 4) {
            UnsafeApi.putInt(out + i, Math.max(UnsafeApi.getInt(a + i), UnsafeApi.getInt(b + i)));
        }
    }

    private static void sumL(long a, long b, long out, long count) {
        for (long i = 0, end = count * 8; i < end; i += 8) {
            UnsafeApi.putLong(out + i, UnsafeApi.getLong(a + i) + UnsafeApi.getLong(b + i));
        }
    }

    private static void prodL(long a, long b, long out, long count) {
        for (long i = 0, end = count * 8; i < end; i += 8) {
            UnsafeApi.putLong(out + i, UnsafeApi.getLong(a + i) * UnsafeApi.getLong(b + i));
        }
    }

    private static void minL(long a, long b, long out, long count) {
        for (long i = 0, end = count * 8; i < end; i += 8) {
            UnsafeApi.putLong(out + i, Math.min(UnsafeApi.getLong(a + i), UnsafeApi.getLong(b + i)));
        }
    }

    private static void maxL(long a, long b, long out, long count) {
        for (long i = 0, end = count * 8; i < end; i += 8) {
            UnsafeApi.putLong(out + i, Math.max(UnsafeApi.getLong(a + i), UnsafeApi.getLong(b + i)));
        }
    }

    /** Divides {@code count} elements at {@code dst} by {@code divisor} (the AVG finishing step). */
    public static void divide(DataType type, long dst, long count, int divisor) {
        switch (type) {
            case FLOAT32 -> {
                for (long i = 0; i < count * 4; i += 4) {
                    UnsafeApi.putFloat(dst + i, UnsafeApi.getFloat(dst + i) / divisor);
                }
            }
            case FLOAT64 -> {
                for (long i = 0; i < count * 8; i += 8) {
                    UnsafeApi.putDouble(dst + i, UnsafeApi.getDouble(dst + i) / divisor);
                }
            }
            case INT32 -> {
                for (long i = 0; i < count * 4; i += 4) {
                    UnsafeApi.putInt(dst + i, UnsafeApi.getInt(dst + i) / divisor);
                }
            }
            case INT64 -> {
                for (long i = 0; i < count * 8; i += 8) {
                    UnsafeApi.putLong(dst + i, UnsafeApi.getLong(dst + i) / divisor);
                }
            }
            default -> throw new IllegalArgumentException("unknown type " + type);
        }
    }

    /** Copies {@code bytes} from {@code src} to {@code dst} (raw addresses). */
    public static void copy(long src, long dst, long bytes) {
        if (bytes > 0 && src != dst) {
            UnsafeApi.copyMemory(src, dst, bytes);
        }
    }
}
