package dev.poniard.linalg;

import static org.junit.jupiter.api.Assumptions.assumeTrue;

import dev.poniard.linalg.device.DeviceTileAlgebra;
import dev.poniard.scheduler.stream.Device;
import dev.poniard.scheduler.stream.cuda.CudaDevice;
import dev.poniard.scheduler.stream.cuda.CudaDevices;
import org.junit.jupiter.api.Tag;

/** The device tile algebra with cuBLAS on a CUDA GPU; skipped, with the reason, where there is none. */
@Tag("gpu")
class DeviceTileAlgebraCudaTest extends DeviceTileAlgebraTest {
    @Override
    protected Device open() {
        assumeTrue(CudaDevices.detect().available(), () -> CudaDevices.detect().toString());
        Device gpu = CudaDevice.launch(new CudaDevice.Context().computeStreams(3).memoryBytes(256L << 20)
                .stagingBytes(64L << 20));
        // A GPU host without libcublas.so.12 skips these tests with the reason, as a host without a GPU does.
        try {
            DeviceTileAlgebra.launch(new DeviceTileAlgebra.Context().device(gpu)).close();
        } catch (IllegalStateException e) {
            gpu.close();
            assumeTrue(!e.getMessage().startsWith("no cuBLAS"), e::getMessage);
            throw e;
        }
        return gpu;
    }

    /** cuBLAS promises the same bits per architecture and SM count, not per stream and handle: allow rounding. */
    @Override
    protected boolean sameBitsOnEveryStream() {
        return false;
    }
}
