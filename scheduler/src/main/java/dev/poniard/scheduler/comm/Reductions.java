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

    /** Combines {@code count} elements at {@code in} into {@code dst}. */
    public static void combine(DataType type, ReduceOp op, long in, long dst, long count, boolean inFirst) {
        switch (type) {
            case FLOAT32 -> combineFloat(op, in, dst, count, inFirst);
            case FLOAT64 -> combineDouble(op, in, dst, count, inFirst);
            case INT32 -> combineInt(op, in, dst, count, inFirst);
            case INT64 -> combineLong(op, in, dst, count, inFirst);
            default -> throw new IllegalArgumentException("unknown type " + type);
        }
    }

    private static void combineFloat(ReduceOp op, long in, long dst, long count, boolean inFirst) {
        final long end = count * 4;
        switch (op) {
            case SUM, AVG -> {
                if (inFirst) {
                    for (long i = 0; i < end; i += 4) {
                        UnsafeApi.putFloat(dst + i, UnsafeApi.getFloat(in + i) + UnsafeApi.getFloat(dst + i));
                    }
                } else {
                    for (long i = 0; i < end; i += 4) {
                        UnsafeApi.putFloat(dst + i, UnsafeApi.getFloat(dst + i) + UnsafeApi.getFloat(in + i));
                    }
                }
            }
            case PROD -> {
                for (long i = 0; i < end; i += 4) {
                    final float a = UnsafeApi.getFloat(in + i);
                    final float b = UnsafeApi.getFloat(dst + i);
                    UnsafeApi.putFloat(dst + i, inFirst ? a * b : b * a);
                }
            }
            case MIN -> {
                for (long i = 0; i < end; i += 4) {
                    final float a = UnsafeApi.getFloat(in + i);
                    final float b = UnsafeApi.getFloat(dst + i);
                    UnsafeApi.putFloat(dst + i, inFirst ? Math.min(a, b) : Math.min(b, a));
                }
            }
            case MAX -> {
                for (long i = 0; i < end; i += 4) {
                    final float a = UnsafeApi.getFloat(in + i);
                    final float b = UnsafeApi.getFloat(dst + i);
                    UnsafeApi.putFloat(dst + i, inFirst ? Math.max(a, b) : Math.max(b, a));
                }
            }
            default -> throw new IllegalArgumentException("unknown op " + op);
        }
    }

    private static void combineDouble(ReduceOp op, long in, long dst, long count, boolean inFirst) {
        final long end = count * 8;
        for (long i = 0; i < end; i += 8) {
            final double a = UnsafeApi.getDouble(in + i);
            final double b = UnsafeApi.getDouble(dst + i);
            final double x = inFirst ? a : b;
            final double y = inFirst ? b : a;
            final double r = switch (op) {
                case SUM, AVG -> x + y;
                case PROD -> x * y;
                case MIN -> Math.min(x, y);
                case MAX -> Math.max(x, y);
            };
            UnsafeApi.putDouble(dst + i, r);
        }
    }

    private static void combineInt(ReduceOp op, long in, long dst, long count, boolean inFirst) {
        final long end = count * 4;
        for (long i = 0; i < end; i += 4) {
            final int a = UnsafeApi.getInt(in + i);
            final int b = UnsafeApi.getInt(dst + i);
            final int r = switch (op) {
                case SUM, AVG -> a + b;
                case PROD -> a * b;
                case MIN -> Math.min(a, b);
                case MAX -> Math.max(a, b);
            };
            UnsafeApi.putInt(dst + i, r);
        }
    }

    private static void combineLong(ReduceOp op, long in, long dst, long count, boolean inFirst) {
        final long end = count * 8;
        for (long i = 0; i < end; i += 8) {
            final long a = UnsafeApi.getLong(in + i);
            final long b = UnsafeApi.getLong(dst + i);
            final long r = switch (op) {
                case SUM, AVG -> a + b;
                case PROD -> a * b;
                case MIN -> Math.min(a, b);
                case MAX -> Math.max(a, b);
            };
            UnsafeApi.putLong(dst + i, r);
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
