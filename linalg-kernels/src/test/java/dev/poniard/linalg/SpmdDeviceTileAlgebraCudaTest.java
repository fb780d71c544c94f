package dev.poniard.linalg;

import dev.poniard.scheduler.stream.Device;
import org.junit.jupiter.api.Tag;

/**
 * The SPMD device algebra with each rank on its own CUDA context of one GPU (cuBLAS); skipped, with the reason, where
 * there is no GPU or no libcublas.
 */
@Tag("gpu")
class SpmdDeviceTileAlgebraCudaTest extends SpmdDeviceTileAlgebraTest {
    @Override
    protected Device device(int rank, long memoryBytes) {
        return DeviceTileAlgebraCudaTest.gpu(memoryBytes, 64L << 20);
    }
}
