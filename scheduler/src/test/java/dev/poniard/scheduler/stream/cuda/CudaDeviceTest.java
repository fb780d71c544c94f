package dev.poniard.scheduler.stream.cuda;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import dev.poniard.scheduler.stream.Buffer;
import dev.poniard.scheduler.stream.BufferPool;
import dev.poniard.scheduler.stream.KernelLaunch;
import dev.poniard.scheduler.stream.Kernels;
import dev.poniard.scheduler.stream.Stream;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Tag;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

/** What only a CUDA device does (the shared contract is {@code CudaStreamContractTest}). */
@Tag("gpu")
@Timeout(value = 60, unit = TimeUnit.SECONDS)
class CudaDeviceTest {
    @BeforeAll
    static void needsAGpu() {
        assumeTrue(CudaDevices.detect().available(), () -> CudaDevices.detect().toString());
    }

    private static CudaDevice open(boolean assemble) {
        return CudaDevice.launch(new CudaDevice.Context().computeStreams(3).memoryBytes(64L << 20)
                .stagingBytes(16L << 20).assemblePtx(assemble));
    }

    @Test
    void shouldDescribeTheGpu() {
        try (CudaDevice d = open(false)) {
            System.out.println("GPU under test: " + d + ", PTX compiler " + PtxAssembler.version());
            assertTrue(d.arch().matches("sm_\\d+"), d.arch());
        }
    }

    @Test
    void shouldGiveTheFirstComputeStreamTheHighestPriority() {
        try (CudaDevice d = open(false)) {
            int first = d.priority(d.computeStreams().get(0));
            for (int i = 1; i < d.computeStreams().size(); i++) {
                int other = d.priority(d.computeStreams().get(i));
                assertTrue(first < other, "stream 0 priority " + first + " should be above (lower than) " + other);
            }
        }
    }

    /** Both ways of loading a module: the driver's JIT, and nvPTXCompiler's cubin. */
    @Test
    void shouldRunEveryKernelLoadedEitherWay() {
        for (boolean assemble : new boolean[] {false, true}) {
            try (CudaDevice d = open(assemble); Buffer b = d.memory().acquire(4096);
                 Buffer host = d.staging().acquire(4096)) {
                d.loadKernels(Kernels.ALL);
                Stream s = d.computeStreams().get(1);
                s.launch(KernelLaunch.of(Kernels.FILL_F32, b, 2f, 1024), 0);
                s.launch(KernelLaunch.of(Kernels.SPIN_FMA_F32, b, 1f, 1f, 1024, 3), 0);
                s.launch(KernelLaunch.of(Kernels.AXPY_F32, 2f, b, b, 1024), 0);
                s.launch(KernelLaunch.of(Kernels.SCALE_ADD_F32, b, b, b, 1f, -0.5f, 1024), 0);
                s.copy(b, 0, host, 0, 4096);
                s.record().synchronize();
                float[] got = new float[1024], want = new float[1024];
                for (int i = 0; i < 1024; i++) {
                    got[i] = host.bytes().getFloat(i * 4);
                    want[i] = 7.5f; // 2 -> 5 (3 x +1) -> 15 (3x) -> 7.5 (x - x/2)
                }
                assertArrayEquals(want, got, assemble ? "assembled cubin" : "driver JIT");
            }
        }
    }

    @Test
    void shouldRefuseMemoryItDoesNotOwn() {
        try (CudaDevice d = open(false); BufferPool direct = new BufferPool("direct", false, 1 << 16);
             BufferPool directHost = new BufferPool("direct-host", true, 1 << 16)) {
            Buffer foreign = direct.acquire(4096);
            IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> d.computeStreams().get(1)
                    .launch(KernelLaunch.of(Kernels.FILL_F32, foreign, 1f, 16), 0));
            assertTrue(e.getMessage().contains("not device memory"), e.getMessage());
            try (Buffer dev = d.memory().acquire(4096)) {
                Buffer unpinned = directHost.acquire(4096);
                e = assertThrows(IllegalArgumentException.class, () -> d.hostToDevice().copy(unpinned, 0, dev, 0, 4096));
                assertTrue(e.getMessage().contains("not pinned"), e.getMessage());
                assertThrows(IllegalStateException.class, dev::bytes, "device memory is not visible to the JVM");
            }
        }
    }

    @Test
    void shouldRefuseJavaCodeAsAKernel() {
        try (CudaDevice d = open(false)) {
            assertThrows(UnsupportedOperationException.class, () -> d.computeStreams().get(0).launch(() -> { }, 0));
        }
    }
}
