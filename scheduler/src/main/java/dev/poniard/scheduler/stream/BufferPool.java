package dev.poniard.scheduler.stream;

import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.util.ArrayDeque;
import java.util.TreeMap;

/**
 * Keeps allocation off the hot path: buffers are allocated once, in power-of-two size classes, and reused.
 * A pool is bounded by {@code limitBytes}; asking for more than is free fails with a message that says how
 * much is in use, rather than allocating behind the user's back.
 */
public final class BufferPool implements AutoCloseable {
    private final String name;
    private final boolean host;
    private final long limitBytes;
    private final TreeMap<Long, ArrayDeque<PooledBuffer>> free = new TreeMap<>();
    private long allocatedBytes;
    private long inUseBytes;
    private boolean closed;

    public BufferPool(String name, boolean host, long limitBytes) {
        if (limitBytes <= 0) {
            throw new IllegalArgumentException("pool " + name + " needs a positive limit, got " + limitBytes);
        }
        this.name = name;
        this.host = host;
        this.limitBytes = limitBytes;
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
            allocatedBytes += size;
            b = new PooledBuffer(ByteBuffer.allocateDirect((int) size).order(ByteOrder.nativeOrder()));
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
        inUseBytes -= b.data.capacity();
        free.computeIfAbsent((long) b.data.capacity(), k -> new ArrayDeque<>()).add(b);
    }

    public synchronized long inUseBytes() {
        return inUseBytes;
    }

    /** Bytes ever allocated: stays flat once a workload has warmed the pool up. */
    public synchronized long allocatedBytes() {
        return allocatedBytes;
    }

    @Override
    public synchronized void close() {
        closed = true;
        free.clear();
    }

    private final class PooledBuffer implements Buffer {
        final ByteBuffer data;
        boolean inUse;

        PooledBuffer(ByteBuffer data) {
            this.data = data;
        }

        @Override
        public long capacity() {
            return data.capacity();
        }

        @Override
        public boolean host() {
            return host;
        }

        @Override
        public ByteBuffer bytes() {
            return data;
        }

        @Override
        public void close() {
            release(this);
        }
    }
}
