package dev.poniard.scheduler.stream;

import dev.poniard.scheduler.stream.cpu.CpuDevice;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Timeout;

/** The stream contract on the CPU emulation: two kernels at once at most (two cores). */
@Timeout(value = 60, unit = TimeUnit.SECONDS)
class CpuStreamContractTest extends StreamContractTest {
    @Override
    protected Device open(DeviceTimeline timeline) {
        return CpuDevice.launch(new CpuDevice.Context().computeStreams(3).computeCapacity(2).copyBytesPerSecond(50e9)
                .memoryBytes(64L << 20).stagingBytes(64L << 20).timeline(timeline));
    }

    @Override
    protected int longSpinIters() {
        return 20_000_000; // ~30-80 ms of dependent Math.fma on one element
    }
}
