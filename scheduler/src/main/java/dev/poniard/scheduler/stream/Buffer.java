package dev.poniard.scheduler.stream;

import java.nio.ByteBuffer;

/**
 * Memory on a device or pinned host memory for staging, from a {@link BufferPool}. The CPU emulation
 * backs both with direct memory, so kernels read and write {@link #bytes()}.
 */
public interface Buffer extends AutoCloseable {
    long capacity();

    /** Whether this is (pinned) host memory rather than device memory. */
    boolean host();

    /**
     * The memory as a direct buffer, where the device's memory is visible to the JVM (the CPU emulation, and
     * pinned host memory of a GPU); GPU device memory throws {@link IllegalStateException}.
     */
    ByteBuffer bytes();

    /** The allocation behind this buffer, for the device that owns it (a CUDA device pointer, say). */
    BufferPool.Memory memory();

    /** Returns the buffer to its pool. */
    @Override
    void close();
}
