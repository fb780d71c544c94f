package dev.poniard.scheduler.stream;

import dev.poniard.scheduler.stream.StreamScheduler.Access;
import dev.poniard.scheduler.stream.cuda.CudaCallSite;
import java.util.List;
import java.util.Objects;
import java.util.function.Consumer;

/**
 * A library call enqueued on a stream as one unit of device work — a cuBLAS GEMM on a GPU, the same BLAS
 * call from OpenBLAS on the CPU emulation — for work that is not one of the shipped PTX {@link Kernels}.
 * It has two implementations of the same computation: {@link #runOnHost()}, which the CPU emulation runs
 * on a stream's lane in stream order, and {@link #enqueueOnCuda}, which a CUDA stream calls on the
 * enqueuing thread to put asynchronous library calls on its stream. {@link #accesses()} names every buffer
 * it reads and writes, so {@link StreamScheduler} can order it with events as it orders kernels.
 */
public interface DeviceCall {
    /** What the call does, for messages (e.g. {@code dgemm 256x256x256}). */
    String name();

    /** Every device buffer the call reads or writes. */
    List<Access> accesses();

    /**
     * The CPU emulation's implementation: runs on a compute lane once the work before it on the stream is
     * done; device buffers are JVM-visible there ({@link Buffer#bytes()}). A throw fails the stream.
     */
    void runOnHost();

    /**
     * The CUDA implementation: enqueues asynchronous calls on {@code site}'s stream and returns without
     * waiting for them (no host-blocking synchronisation, no allocation on this path). The device's context
     * is current on the calling thread. A failed library call throws; nothing of the call is then enqueued
     * beyond what the library had already accepted.
     */
    void enqueueOnCuda(CudaCallSite site);

    /** A call from its parts: {@code onHost} is {@link #runOnHost()}, {@code onCuda} is {@link #enqueueOnCuda}. */
    static DeviceCall of(String name, List<Access> accesses, Runnable onHost, Consumer<CudaCallSite> onCuda) {
        Objects.requireNonNull(name, "name");
        List<Access> acc = List.copyOf(accesses);
        Objects.requireNonNull(onHost, "onHost");
        Objects.requireNonNull(onCuda, "onCuda");
        return new DeviceCall() {
            @Override
            public String name() {
                return name;
            }

            @Override
            public List<Access> accesses() {
                return acc;
            }

            @Override
            public void runOnHost() {
                onHost.run();
            }

            @Override
            public void enqueueOnCuda(CudaCallSite site) {
                onCuda.accept(site);
            }

            @Override
            public String toString() {
                return name;
            }
        };
    }
}
