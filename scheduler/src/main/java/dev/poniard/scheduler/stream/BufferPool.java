package dev.poniard.scheduler.stream;

import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.util.ArrayDeque;
import java.util.ArrayList;
import java.util.List;
import java.util.TreeMap;

/**
 * Keeps allocation off the hot path: buffers are allocated once, in power-of-two size classes, and reused.
 * A pool is bounded by {@code limitBytes}; asking for more than is free fails with a message that says how
 * much is in use, rather than allocating behind the user's back.
 *
 * <p>Memory comes from an {@link Allocator}: direct memory by default (the CPU emulation), device memory
 * or pinned host memory for a CUDA device. {@link #close()} frees every allocation, so close a pool only
 * once no device work uses its buffers.
 */
public final class BufferPool implements AutoCloseable {
    /** One allocation: a block of device or host memory the pool hands out again and again. */
    public interface Memory {
        /** The memory as a direct buffer, or null where the JVM cannot see it (device memory of a GPU). */
        ByteBuffer bytes();

        /** Gives the memory back to the system; called once, when the pool closes. */
        void free();
    }

    /** Where a pool's memory comes from; called off the hot path, once per buffer the pool ever holds. */
    @FunctionalInterface
    public interface Allocator {
        Memory allocate(long bytes);
    }

    /** Direct (JVM-visible) memory, freed by the garbage collector. */
    public static final Allocator DIRECT = bytes -> {
        ByteBuffer b = ByteBuffer.allocateDirect((int) bytes).order(ByteOrder.nativeOrder());
        return new Memory() {
            @Override
            public ByteBuffer bytes() {
                return b;
            }

            @Override
            public void free() {
            }
        };
    };

    private final String name;
    private final boolean host;
    private final long limitBytes;
    private final Allocator allocator;
    private final TreeMap<Long, ArrayDeque<PooledBuffer>> free = new TreeMap<>();
    private final List<PooledBuffer> all = new ArrayList<>();
    private long allocatedBytes;
    private long inUseBytes;
    private boolean closed;

    /** A pool of direct memory. */
    public BufferPool(String name, boolean host, long limitBytes) {
        this(name, host, limitBytes, DIRECT);
    }

    public BufferPool(String name, boolean host, long limitBytes, Allocator allocator) {
        if (limitBytes <= 0) {
            throw new IllegalArgumentException("pool " + name + " needs a positive limit, got " + limitBytes);
        }
        this.name = name;
        this.host = host;
        this.limitBytes = limitBytes;
        this.allocator = allocator;
    }

    /** A buffer of at least {@code bytes} bytes (its capacity is the next power of two). */
    public synchronized Buffer acquire(long bytes) {
        if (closed) {
            throw new IllegalStateException("buffer pool " + name + " is closed");
        }
        if (bytes <= 0 || bytes > Integer.MAX_VALUE) {
            throw new IllegalArgumentException("buffer size must be in 1.." + Integer.MAX_VALUE + ", got " + bytes);
        }
        long size = Long.highestOneBit(bytes - 1) << 1;
        size = Math.max(size, 64);
        ArrayDeque<PooledBuffer> q = free.get(size);
        PooledBuffer b = q == null ? null : q.poll();
        if (b == null) {
            if (allocatedBytes + size > limitBytes) {
                throw new IllegalStateException("buffer pool " + name + " cannot provide " + bytes + " bytes: "
                        + inUseBytes + " of its " + limitBytes + " bytes are in use; release buffers or raise the limit");
            }
            b = new PooledBuffer(allocator.allocate(size), size);
            allocatedBytes += size;
            all.add(b);
        }
        inUseBytes += size;
        b.inUse = true;
        return b;
    }

    private synchronized void release(PooledBuffer b) {
        if (!b.inUse) {
            throw new IllegalStateException("buffer released twice to pool " + name);
        }
        b.inUse = false;
        inUseBytes -= b.size;
        if (!closed) {
            free.computeIfAbsent(b.size, k -> new ArrayDeque<>()).add(b);
        }
    }

    public synchronized long inUseBytes() {
        return inUseBytes;
    }

    /** Bytes ever allocated: stays flat once a workload has warmed the pool up. */
    public synchronized long allocatedBytes() {
        return allocatedBytes;
    }

    public String name() {
        return name;
    }

    /** Frees every allocation, including buffers still acquired (they must not be used afterwards). */
    @Override
    public synchronized void close() {
        if (closed) {
            return;
        }
        closed = true;
        free.clear();
        RuntimeException first = null;
        for (PooledBuffer b : all) {
            try {
                b.memory.free();
            } catch (RuntimeException e) {
                if (first == null) {
                    first = e;
                }
            }
        }
        all.clear();
        if (first != null) {
            throw first;
        }
    }

    private final class PooledBuffer implements Buffer {
        final Memory memory;
        final long size;
        boolean inUse;

        PooledBuffer(Memory memory, long size) {
            this.memory = memory;
            this.size = size;
        }

        @Override
        public long capacity() {
            return size;
        }

        @Override
        public boolean host() {
            return host;
        }

        @Override
        public ByteBuffer bytes() {
            ByteBuffer b = memory.bytes();
            if (b == null) {
                throw new IllegalStateException("buffer of pool " + name + " is device memory the JVM cannot see:"
                        + " copy it to a staging buffer (Device.deviceToHost()) and read that");
            }
            return b;
        }

        @Override
        public Memory memory() {
            return memory;
        }

        @Override
        public void close() {
            release(this);
        }
    }
}
