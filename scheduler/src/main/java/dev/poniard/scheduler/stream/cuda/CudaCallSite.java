package dev.poniard.scheduler.stream.cuda;

import dev.poniard.scheduler.stream.Buffer;
import dev.poniard.scheduler.stream.Stream;
import jcuda.driver.CUdeviceptr;
import jcuda.driver.CUstream;

/**
 * What the CUDA implementation of a {@link dev.poniard.scheduler.stream.DeviceCall} sees of the stream it
 * is enqueued on: the Poniard stream (to look up per-stream library state such as a cuBLAS handle made for
 * it), its driver handle, and the device pointers of its device's buffers.
 */
public interface CudaCallSite {
    /** The stream the call is enqueued on. */
    Stream stream();

    /** Its driver handle: pass it to the library ({@code cublasSetStream}, {@code cuMemsetD32Async}, ...). */
    CUstream handle();

    /**
     * The device pointer of a buffer from this device's {@code memory()} pool.
     *
     * @throws IllegalArgumentException for pinned host memory or a buffer of another device
     */
    CUdeviceptr pointer(Buffer deviceBuffer);
}
