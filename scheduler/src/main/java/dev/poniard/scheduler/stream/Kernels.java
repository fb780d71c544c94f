package dev.poniard.scheduler.stream;

import dev.poniard.scheduler.stream.Kernel.Param;
import java.nio.FloatBuffer;
import java.util.List;

/**
 * The kernels Poniard ships as PTX (one module per kernel in {@code src/main/resources/dev/poniard/scheduler/kernels/},
 * each with a header comment saying what it computes) with their Java implementations. The Java code uses
 * {@link Math#fma} where the PTX uses {@code fma.rn.f32} and rounds every multiply and add separately where
 * the PTX uses {@code mul.rn}/{@code add.rn} (which ptxas may not fuse), so both give the same bits.
 */
public final class Kernels {
    private static final String DIR = "/dev/poniard/scheduler/kernels/";

    /** {@code out[i] = value}. */
    public static final Kernel FILL_F32 = new Kernel("poniard_fill_f32", DIR + "fill_f32.ptx", "n", a -> {
        FloatBuffer out = a.floats(0);
        float v = a.f32(1);
        int n = a.u32(2);
        for (int i = 0; i < n; i++) {
            out.put(i, v);
        }
    }, Param.out("out"), Param.f32("value"), Param.u32("n"));

    /** {@code y[i] = fma(a, x[i], y[i])}. */
    public static final Kernel AXPY_F32 = new Kernel("poniard_axpy_f32", DIR + "axpy_f32.ptx", "n", a -> {
        float alpha = a.f32(0);
        FloatBuffer x = a.floats(1), y = a.floats(2);
        int n = a.u32(3);
        for (int i = 0; i < n; i++) {
            y.put(i, Math.fma(alpha, x.get(i), y.get(i)));
        }
    }, Param.f32("a"), Param.in("x"), Param.inout("y"), Param.u32("n"));

    /** {@code out[i] = fma(a, x[i], b * y[i])}; {@code out} may be {@code x} or {@code y}. */
    public static final Kernel SCALE_ADD_F32 = new Kernel("poniard_scale_add_f32", DIR + "scale_add_f32.ptx", "n", a -> {
        FloatBuffer out = a.floats(0), x = a.floats(1), y = a.floats(2);
        float alpha = a.f32(3), beta = a.f32(4);
        int n = a.u32(5);
        for (int i = 0; i < n; i++) {
            out.put(i, Math.fma(alpha, x.get(i), beta * y.get(i)));
        }
    }, Param.out("out"), Param.in("x"), Param.in("y"), Param.f32("a"), Param.f32("b"), Param.u32("n"));

    /**
     * {@code iters} times {@code x[i] = fma(x[i], a, b)}: a chain of dependent FMAs per element, so its run
     * time is set by {@code iters} and not by memory; the overlap benchmark's compute stage.
     */
    public static final Kernel SPIN_FMA_F32 = new Kernel("poniard_spin_fma_f32", DIR + "spin_fma_f32.ptx", "n", a -> {
        FloatBuffer x = a.floats(0);
        float alpha = a.f32(1), beta = a.f32(2);
        int n = a.u32(3);
        int iters = a.u32(4);
        for (int i = 0; i < n; i++) {
            float v = x.get(i);
            for (int k = 0; k < iters; k++) {
                v = Math.fma(v, alpha, beta);
            }
            x.put(i, v);
        }
    }, Param.inout("x"), Param.f32("a"), Param.f32("b"), Param.u32("n"), Param.u32("iters"));

    /** Every shipped kernel. */
    public static final List<Kernel> ALL = List.of(FILL_F32, AXPY_F32, SCALE_ADD_F32, SPIN_FMA_F32);

    private Kernels() {
    }
}
