package dev.poniard.linalg;

import dev.poniard.linalg.tile.TileKernels;
import dev.poniard.scheduler.stream.Device;
import dev.poniard.scheduler.stream.cpu.CpuDevice;

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
}
