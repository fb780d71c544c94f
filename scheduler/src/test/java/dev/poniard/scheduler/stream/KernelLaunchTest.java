package dev.poniard.scheduler.stream;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.poniard.scheduler.stream.StreamScheduler.Access;
import java.util.List;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;

class KernelLaunchTest {
    private final BufferPool device = new BufferPool("device", false, 1 << 20);
    private final BufferPool pinned = new BufferPool("pinned", true, 1 << 20);

    @AfterEach
    void close() {
        device.close();
        pinned.close();
    }

    private static void assertRefused(String fragment, Runnable r) {
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, r::run);
        assertTrue(e.getMessage().contains(fragment), "message '" + e.getMessage() + "' should contain '" + fragment + "'");
    }

    @Test
    void shouldCoverNWithTheDefaultBlock() {
        Buffer b = device.acquire(4000);
        KernelLaunch l = KernelLaunch.of(Kernels.FILL_F32, b, 1f, 1000);
        assertEquals(KernelLaunch.DEFAULT_BLOCK, l.block());
        assertEquals(4, l.grid());
        assertEquals(1000, l.count());
        assertEquals(1, KernelLaunch.of(Kernels.FILL_F32, b, 1f, 0).grid(), "n = 0 still launches one block");
    }

    @Test
    void shouldRefuseTheWrongNumberOfArguments() {
        assertRefused("takes 3 arguments", () -> KernelLaunch.of(Kernels.FILL_F32, device.acquire(64), 1f));
    }

    @Test
    void shouldRefuseArgumentsOfTheWrongType() {
        Buffer b = device.acquire(64);
        assertRefused("must be a Float", () -> KernelLaunch.of(Kernels.FILL_F32, b, 1.0, 16));
        assertRefused("must be a device Buffer", () -> KernelLaunch.of(Kernels.FILL_F32, "b", 1f, 16));
        assertRefused("non-negative Integer", () -> KernelLaunch.of(Kernels.FILL_F32, b, 1f, 16L));
        assertRefused("non-negative Integer", () -> KernelLaunch.of(Kernels.FILL_F32, b, 1f, -1));
    }

    @Test
    void shouldRefuseHostMemoryAsAKernelArgument() {
        assertRefused("pinned host memory", () -> KernelLaunch.of(Kernels.FILL_F32, pinned.acquire(64), 1f, 16));
    }

    @Test
    void shouldRefuseABufferTooSmallForN() {
        Buffer x = device.acquire(4096), y = device.acquire(64);
        assertRefused("cannot hold n = 100 floats", () -> KernelLaunch.of(Kernels.AXPY_F32, 2f, x, y, 100));
    }

    @Test
    void shouldRefuseAGridThatDoesNotCoverN() {
        Buffer b = device.acquire(4096);
        assertRefused("fewer than n = 1000", () -> new KernelLaunch(Kernels.FILL_F32, 3, 256, b, 1f, 1000));
        assertRefused("block must be 1..1024", () -> new KernelLaunch(Kernels.FILL_F32, 1, 2048, b, 1f, 1000));
        assertRefused("grid must be at least 1", () -> new KernelLaunch(Kernels.FILL_F32, 0, 256, b, 1f, 0));
    }

    @Test
    void shouldDeriveTheBuffersAccessedFromTheParameterModes() {
        Buffer out = device.acquire(64), x = device.acquire(64), y = device.acquire(64);
        List<Access> acc = KernelLaunch.of(Kernels.SCALE_ADD_F32, out, x, y, 1f, 2f, 16).accesses();
        assertEquals(List.of(Access.out(out), Access.in(x), Access.in(y)), acc);
        assertEquals(List.of(Access.in(x), Access.out(y)), KernelLaunch.of(Kernels.AXPY_F32, 1f, x, y, 16).accesses());
    }

    @Test
    void shouldRefuseAKernelWithoutItsCountParameter() {
        assertThrows(IllegalArgumentException.class, () -> new Kernel("k", "/none.ptx", "n", a -> { },
                Kernel.Param.out("out"), Kernel.Param.f32("n")));
    }
}
