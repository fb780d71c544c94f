package dev.poniard.scheduler.stream;

import static org.junit.jupiter.api.Assertions.assertEquals;

import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;

/** The Java implementations of the shipped kernels against values worked out by hand. */
class KernelsTest {
    private final BufferPool pool = new BufferPool("reference", false, 1 << 20);

    @AfterEach
    void close() {
        pool.close();
    }

    private Buffer of(float... v) {
        Buffer b = pool.acquire(Math.max(1, v.length) * 4L);
        for (int i = 0; i < v.length; i++) {
            b.bytes().putFloat(i * 4, v[i]);
        }
        return b;
    }

    private static float at(Buffer b, int i) {
        return b.bytes().getFloat(i * 4);
    }

    @Test
    void shouldFillOnlyTheFirstNElements() {
        Buffer b = of(9, 9, 9, 9);
        Kernels.FILL_F32.runOnCpu(KernelLaunch.of(Kernels.FILL_F32, b, -2.5f, 3));
        assertEquals(-2.5f, at(b, 0));
        assertEquals(-2.5f, at(b, 2));
        assertEquals(9f, at(b, 3));
    }

    @Test
    void shouldComputeAxpy() {
        Buffer x = of(1, 2, 3), y = of(10, 20, 30);
        Kernels.AXPY_F32.runOnCpu(KernelLaunch.of(Kernels.AXPY_F32, 3f, x, y, 3));
        assertEquals(13f, at(y, 0));
        assertEquals(26f, at(y, 1));
        assertEquals(39f, at(y, 2));
        assertEquals(1f, at(x, 0), "x is only read");
    }

    @Test
    void shouldRoundAxpyOnceAsAFusedMultiplyAdd() {
        // a*x = (1 + 2^-12)^2 = 1 + 2^-11 + 2^-24 exactly needs 25 bits: a separate multiply would round it to
        // 1 + 2^-11, and adding -1 would give 2^-11; the fused operation keeps 2^-11 + 2^-24.
        float a = 1f + 0x1p-12f;
        Buffer x = of(a), y = of(-1f);
        Kernels.AXPY_F32.runOnCpu(KernelLaunch.of(Kernels.AXPY_F32, a, x, y, 1));
        assertEquals(0x1p-11f + 0x1p-24f, at(y, 0));
    }

    @Test
    void shouldScaleAndAddIntoAnAliasedOutput() {
        Buffer x = of(1, 2), y = of(100, 200);
        Kernels.SCALE_ADD_F32.runOnCpu(KernelLaunch.of(Kernels.SCALE_ADD_F32, y, x, y, 2f, 0.5f, 2));
        assertEquals(52f, at(y, 0));
        assertEquals(104f, at(y, 1));
    }

    @Test
    void shouldIterateTheFmaChain() {
        Buffer x = of(0, 5, 7);
        Kernels.SPIN_FMA_F32.runOnCpu(KernelLaunch.of(Kernels.SPIN_FMA_F32, x, 2f, 1f, 2, 3));
        assertEquals(7f, at(x, 0), "0 -> 1 -> 3 -> 7");
        assertEquals(47f, at(x, 1), "5 -> 11 -> 23 -> 47");
        assertEquals(7f, at(x, 2), "beyond n: untouched");
        Kernels.SPIN_FMA_F32.runOnCpu(KernelLaunch.of(Kernels.SPIN_FMA_F32, x, 2f, 1f, 2, 0));
        assertEquals(47f, at(x, 1), "0 iterations leave x alone");
    }
}
