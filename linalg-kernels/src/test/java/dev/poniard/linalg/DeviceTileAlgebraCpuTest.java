package dev.poniard.linalg;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.poniard.linalg.device.DeviceTileAlgebra;
import dev.poniard.linalg.tile.TileKernels;
import dev.poniard.scheduler.stream.Device;
import dev.poniard.scheduler.stream.cpu.CpuDevice;
import org.junit.jupiter.api.Test;

/** The device tile algebra on the CPU emulation: two kernels at once at most (two cores), OpenBLAS on one thread each. */
class DeviceTileAlgebraCpuTest extends DeviceTileAlgebraTest {
    @Override
    protected Device open() {
        TileKernels.setBlasThreads(1);
        return CpuDevice.launch(new CpuDevice.Context().name("linalg-cpu-device").computeStreams(3).computeCapacity(2)
                .copyBytesPerSecond(50e9).memoryBytes(64L << 20).stagingBytes(64L << 20));
    }

    @Override
    protected boolean sameBitsOnEveryStream() {
        return true;
    }

    @Test
    void shouldSayWhenTheDeviceMemoryCannotHoldTheTilesAndGiveEveryBufferBack() {
        try (CpuDevice small = CpuDevice.launch(new CpuDevice.Context().name("small-device").computeStreams(2)
                .computeCapacity(1).memoryBytes(1L << 20).stagingBytes(8L << 20));
             DeviceTileAlgebra la = DeviceTileAlgebra.launch(new DeviceTileAlgebra.Context().device(small));
             DistributedMatrix a = DistributedMatrix.spd(DType.F64, 512, 128, 3)) {
            double[] before = a.toColumnMajor();
            IllegalStateException e = assertThrows(IllegalStateException.class, () -> la.cholesky(a));
            assertTrue(e.getMessage().contains("small-device-memory cannot provide"), e.getMessage());
            assertEquals(0, small.memory().inUseBytes());
            assertEquals(0, small.staging().inUseBytes());
            assertArrayEquals(before, a.toColumnMajor());
        }
    }

    @Test
    void shouldRequireADevice() {
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> DeviceTileAlgebra.launch(new DeviceTileAlgebra.Context()));
        assertTrue(e.getMessage().contains("needs a device"), e.getMessage());
        try (CpuDevice d = CpuDevice.launch(new CpuDevice.Context().computeStreams(1).computeCapacity(1)
                .memoryBytes(1L << 20).stagingBytes(1L << 20))) {
            e = assertThrows(IllegalArgumentException.class,
                    () -> DeviceTileAlgebra.launch(new DeviceTileAlgebra.Context().device(d).gflops(0)));
            assertTrue(e.getMessage().contains("gflops must be > 0, got 0.0"), e.getMessage());
        }
    }
}
