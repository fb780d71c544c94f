package dev.poniard.scheduler.stream;

import java.util.List;

/**
 * A device with K compute streams (the first one high-priority), a host-to-device and a device-to-host copy
 * stream, a pool of device memory and a pool of pinned host buffers for staging. Implementations: the CPU
 * emulation ({@code CpuDevice}), which runs everywhere, and {@code CudaDevice} where a GPU is present
 * ({@code CudaDevices.detect()} says whether one is, without failing where none is).
 */
public interface Device extends AutoCloseable {
    String name();

    List<Stream> computeStreams();

    Stream hostToDevice();

    Stream deviceToHost();

    /** Device memory, allocated once and reused. */
    BufferPool memory();

    /** Pinned host memory for asynchronous copies. */
    BufferPool staging();

    /** Copy bandwidth of each copy engine in bytes per second. */
    double copyBytesPerSecond();

    /** How many kernels can run at once (the emulation's compute lanes; SM sharing on a GPU). */
    int computeCapacity();

    /** Waits for every stream to drain. */
    void synchronize();

    @Override
    void close();
}
