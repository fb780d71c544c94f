package dev.poniard.scheduler.stream;

import static org.junit.jupiter.api.Assumptions.assumeTrue;

import dev.poniard.scheduler.stream.cuda.CudaDevice;
import dev.poniard.scheduler.stream.cuda.CudaDevices;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Tag;
import org.junit.jupiter.api.Timeout;

/** The stream contract on a CUDA GPU; skipped, with the reason, where there is none. */
@Tag("gpu")
@Timeout(value = 60, unit = TimeUnit.SECONDS)
class CudaStreamContractTest extends StreamContractTest {
    @BeforeAll
    static void needsAGpu() {
        assumeTrue(CudaDevices.detect().available(), () -> CudaDevices.detect().toString());
    }

    @Override
    protected Device open(DeviceTimeline timeline) {
        return CudaDevice.launch(new CudaDevice.Context().computeStreams(3).memoryBytes(256L << 20)
                .stagingBytes(64L << 20).timeline(timeline));
    }

    @Override
    protected int longSpinIters() {
        return 20_000_000; // ~40 ms of dependent FMAs at ~4 cycles each
    }
}
