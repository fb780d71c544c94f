package dev.poniard.scheduler.comm;

import org.agrona.BufferUtil;
import org.agrona.IoUtil;
import org.agrona.UnsafeApi;

import java.io.File;
import java.io.IOException;
import java.io.RandomAccessFile;
import java.lang.invoke.VarHandle;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.MappedByteBuffer;
import java.nio.channels.FileChannel;
import java.util.concurrent.locks.LockSupport;

/**
 * One-sided RMA: every rank of a communicator exposes a window of memory that the others can put to, get from
 * and accumulate into without the target taking part (MPI-3 RMA semantics, the subset below).
 *
 * <h2>Implementation overview</h2>
 * Ranks on one host share memory for real: each rank's window is a memory-mapped file
 * {@code /dev/shm/poniard-<launch id>-win-<communicator id>-<sequence>-<rank>} (so the launcher removes it even
 * after SIGKILL) that every rank maps, preceded by a 64-byte control block holding a reader-writer lock word.
 * {@code put}/{@code get} are memory copies into/out of the target's mapping; {@code accumulate} takes the
 * target's exclusive lock so concurrent accumulates are element-wise atomic. Synchronisation: {@link #fence()}
 * (active target: full memory fence + barrier + fence, separating epochs), and passive target
 * {@link #lock}/{@link #unlock} on the target's lock word (CAS in shared memory; readers count up, a writer holds
 * -1). Windows whose ranks span hosts are refused: carrying RMA over Aeron between hosts is not implemented.
 */
public final class Window implements AutoCloseable {
    private static final int CONTROL = 64;
    private static final int LOCK_OFFSET = 0;

    private final Communicator comm;
    private final long size;
    private final MappedByteBuffer[] maps;
    private final long[] addresses;
    private final File own;
    private final ByteBuffer local;
    private boolean closed;

    private Window(Communicator comm, long size, MappedByteBuffer[] maps, File own) {
        this.comm = comm;
        this.size = size;
        this.maps = maps;
        this.own = own;
        this.addresses = new long[maps.length];
        for (int i = 0; i < maps.length; i++) {
            addresses[i] = BufferUtil.address(maps[i]);
        }
        this.local = maps[comm.rank()].slice(CONTROL, (int) size).order(ByteOrder.nativeOrder());
    }

    /** Collective: every rank exposes {@code bytes} of zeroed shared memory. */
    public static Window allocate(Communicator comm, long bytes) {
        if (bytes < 0 || bytes > Integer.MAX_VALUE - CONTROL) {
            throw new IllegalArgumentException("window size must be in [0, 2^31 - 65]: " + bytes);
        }
        if (!comm.allOnThisHost()) {
            throw new UnsupportedOperationException("RMA windows across hosts are not implemented: every rank of the "
                + "communicator must share this host");
        }
        final long seq = comm.takeSequence();
        final File shm = new File("/dev/shm");
        final String base = (shm.isDirectory() ? shm.getPath() : System.getProperty("java.io.tmpdir"))
            + File.separator + "poniard-" + comm.context().launchId() + "-win-" + comm.communicatorId() + "-" + seq + "-";
        final File own = new File(base + comm.worldRank(comm.rank()));
        final MappedByteBuffer[] maps = new MappedByteBuffer[comm.size()];
        try {
            maps[comm.rank()] = map(own, CONTROL + bytes, true);
            comm.barrier();
            for (int r = 0; r < comm.size(); r++) {
                if (r != comm.rank()) {
                    maps[r] = map(new File(base + comm.worldRank(r)), CONTROL + bytes, false);
                }
            }
            comm.barrier();
        } catch (IOException e) {
            for (MappedByteBuffer m : maps) {
                if (m != null) {
                    IoUtil.unmap(m);
                }
            }
            IoUtil.delete(own, true);
            throw new CommException("could not map the window files " + base + "*: " + e, e);
        }
        return new Window(comm, bytes, maps, own);
    }

    private static MappedByteBuffer map(File f, long length, boolean create) throws IOException {
        if (create) {
            IoUtil.delete(f, true);
        }
        try (RandomAccessFile raf = new RandomAccessFile(f, "rw"); FileChannel ch = raf.getChannel()) {
            if (create) {
                raf.setLength(length);
            } else if (ch.size() != length) {
                throw new IOException(f + " has " + ch.size() + " bytes, expected " + length);
            }
            return ch.map(FileChannel.MapMode.READ_WRITE, 0, length);
        }
    }

    /** This rank's part of the window (native byte order). */
    public ByteBuffer buffer() {
        return local.duplicate().order(ByteOrder.nativeOrder());
    }

    /** Bytes exposed by every rank. */
    public long size() {
        return size;
    }

    private long target(int rank, long offset, long length) {
        if (closed) {
            throw new IllegalStateException("window is closed");
        }
        if (rank < 0 || rank >= maps.length) {
            throw new IllegalArgumentException("target rank " + rank + " not in [0, " + maps.length + ")");
        }
        if (offset < 0 || length < 0 || offset + length > size) {
            throw new IllegalArgumentException("range [" + offset + ", +" + length + ") lies outside the " + size
                + "-byte window");
        }
        return addresses[rank] + CONTROL + offset;
    }

    /** Writes {@code src} (position to limit) at {@code offset} of {@code target}'s window. */
    public void put(ByteBuffer src, int target, long offset) {
        put(Communicator.address(src), src.remaining(), target, offset);
    }

    /** Writes raw memory into {@code target}'s window. */
    public void put(long address, long length, int target, long offset) {
        Reductions.copy(address, target(target, offset, length), length);
    }

    /** Reads {@code dst.remaining()} bytes from {@code offset} of {@code target}'s window into {@code dst}. */
    public void get(ByteBuffer dst, int target, long offset) {
        get(Communicator.address(dst), dst.remaining(), target, offset);
    }

    /** Reads raw memory from {@code target}'s window. */
    public void get(long address, long length, int target, long offset) {
        Reductions.copy(target(target, offset, length), address, length);
    }

    /** Combines {@code src} into {@code target}'s window element-wise, atomically with respect to other accumulates. */
    public void accumulate(ByteBuffer src, int target, long offset, DataType type, ReduceOp op) {
        if (op == ReduceOp.AVG) {
            throw new IllegalArgumentException("accumulate supports SUM, PROD, MIN and MAX, not AVG");
        }
        final long n = src.remaining();
        if (n % type.size() != 0) {
            throw new IllegalArgumentException(n + " bytes is not a whole number of " + type + " elements");
        }
        final long dst = target(target, offset, n);
        lockWord(target, true);
        try {
            Reductions.combine(type, op, Communicator.address(src), dst, n / type.size(), false);
        } finally {
            unlockWord(target, true);
        }
    }

    /** Active-target synchronisation: completes every RMA operation of the epoch on every rank. */
    public void fence() {
        VarHandle.fullFence();
        comm.barrier();
        VarHandle.fullFence();
    }

    /** Passive target: locks {@code target}'s window, exclusively or shared. */
    public void lock(int target, boolean exclusive) {
        target(target, 0, 0);
        lockWord(target, exclusive);
    }

    /** Releases a lock taken with {@link #lock}; completes this rank's operations on that target. */
    public void unlock(int target, boolean exclusive) {
        target(target, 0, 0);
        VarHandle.fullFence();
        unlockWord(target, exclusive);
    }

    private void lockWord(int target, boolean exclusive) {
        final long word = addresses[target] + LOCK_OFFSET;
        int spins = 0;
        while (true) {
            final int v = UnsafeApi.getIntVolatile(null, word);
            if (exclusive ? v == 0 && UnsafeApi.compareAndSetInt(null, word, 0, -1)
                : v >= 0 && UnsafeApi.compareAndSetInt(null, word, v, v + 1)) {
                return;
            }
            if (++spins < 1000) {
                Thread.onSpinWait();
            } else if (spins < 1100) {
                Thread.yield();
            } else {
                LockSupport.parkNanos(10_000);
            }
        }
    }

    private void unlockWord(int target, boolean exclusive) {
        final long word = addresses[target] + LOCK_OFFSET;
        if (exclusive) {
            UnsafeApi.putIntVolatile(null, word, 0);
        } else {
            UnsafeApi.getAndAddInt(null, word, -1);
        }
    }

    /** Collective: waits for every rank, unmaps and removes this rank's window file. */
    @Override
    public void close() {
        if (closed) {
            return;
        }
        try {
            comm.barrier();
        } finally {
            closed = true;
            for (MappedByteBuffer m : maps) {
                if (m != null) {
                    IoUtil.unmap(m);
                }
            }
            IoUtil.delete(own, true);
        }
    }
}
