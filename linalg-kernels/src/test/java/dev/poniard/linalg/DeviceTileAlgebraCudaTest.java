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
        return gpu(256L << 20, 64L << 20);
    }

    /**
     * A CUDA device with 3 compute streams and cuBLAS, or an aborted test, with the reason, where there is no GPU or
     * no libcublas.so.12.
     */
    static Device gpu(long memoryBytes, long stagingBytes) {
        assumeTrue(CudaDevices.detect().available(), () -> CudaDevices.detect().toString());
        Device gpu = CudaDevice.launch(new CudaDevice.Context().computeStreams(3).memoryBytes(memoryBytes)
                .stagingBytes(stagingBytes));
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
