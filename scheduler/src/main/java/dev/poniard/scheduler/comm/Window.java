package dev.poniard.scheduler.comm;

import dev.poniard.scheduler.comm.frame.FrameHeader;
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
 * after SIGKILL) that every rank on the host maps, preceded by a 64-byte control block holding a reader-writer
 * lock word. {@code put}/{@code get} to such a target are memory copies into/out of its mapping;
 * {@code accumulate} takes the target's exclusive lock so concurrent accumulates are element-wise atomic.
 * <p>
 * A target on another host is reached over Aeron through the transport's RMA frames: puts and accumulates are
 * messages the target's progress thread applies on receipt straight into the window (accumulate under the same
 * lock word), gets are a request answered with the data, and passive-target locks are request/grant messages.
 * Because frames between two ranks stay in order, a rank's operations to a target are applied before anything it
 * sends later, which is what {@link #fence()} relies on.
 * <p>
 * Synchronisation: {@link #fence()} (active target: memory fence, then an empty all-to-all when some target is
 * remote, then a barrier) separates epochs; passive target {@link #lock}/{@link #unlock} takes the target's lock
 * word (readers count up, a writer holds -1); unlock returns once the target has applied this rank's operations.
 */
public final class Window implements AutoCloseable {
    private static final org.slf4j.Logger LOG = org.slf4j.LoggerFactory.getLogger(Window.class);
    private static final int CONTROL = 64;
    private static final int LOCK_OFFSET = 0;

    private final Communicator comm;
    private final long size;
    private final MappedByteBuffer[] maps;
    private final long[] addresses;
    private final File own;
    private final ByteBuffer local;
    private final int id;
    private final boolean anyRemote;
    private final Transport transport;
    private final java.util.concurrent.atomic.AtomicLong requests = new java.util.concurrent.atomic.AtomicLong();
    private boolean closed;

    private Window(Communicator comm, long size, MappedByteBuffer[] maps, File own, int id) {
        this.comm = comm;
        this.id = id;
        this.transport = comm.transport();
        boolean remote = false;
        for (MappedByteBuffer m : maps) {
            remote |= m == null;
        }
        this.anyRemote = remote;
        this.size = size;
        this.maps = maps;
        this.own = own;
        this.addresses = new long[maps.length];
        for (int i = 0; i < maps.length; i++) {
            addresses[i] = maps[i] == null ? 0 : BufferUtil.address(maps[i]);
        }
        this.local = maps[comm.rank()].slice(CONTROL, (int) size).order(ByteOrder.nativeOrder());
    }

    /** Collective: every rank exposes {@code bytes} of zeroed shared memory. */
    public static Window allocate(Communicator comm, long bytes) {
        return allocate(comm, bytes, "win");
    }

    /** As {@link #allocate(Communicator, long)}, with {@code kind} in the file names (what the memory is for). */
    static Window allocate(Communicator comm, long bytes, String kind) {
        if (bytes < 0 || bytes > Integer.MAX_VALUE - CONTROL) {
            throw new IllegalArgumentException("window size must be in [0, 2^31 - 65]: " + bytes);
        }
        final long seq = comm.takeSequence();
        long h = comm.communicatorId() * 0x9E3779B97F4A7C15L + seq * 0xC2B2AE3D27D4EB4FL;
        h ^= h >>> 31;
        h *= 0xBF58476D1CE4E5B9L;
        final int id = (int) ((h ^ (h >>> 29)) & 0x7FFFFFFF);
        final File shm = new File("/dev/shm");
        final String base = (shm.isDirectory() ? shm.getPath() : System.getProperty("java.io.tmpdir"))
            + File.separator + "poniard-" + comm.context().launchId() + "-" + kind + "-" + comm.communicatorId() + "-" + seq + "-";
        final File own = new File(base + comm.worldRank(comm.rank()));
        final MappedByteBuffer[] maps = new MappedByteBuffer[comm.size()];
        try {
            maps[comm.rank()] = map(own, CONTROL + bytes, true);
            final long base0 = BufferUtil.address(maps[comm.rank()]);
            comm.transport().execute(req -> {
                comm.transport().registerWindow(id, new Transport.RmaTarget(base0 + CONTROL, bytes, base0 + LOCK_OFFSET));
                req.complete();
            }).await(0, 100);
            comm.barrier();
            for (int r = 0; r < comm.size(); r++) {
                if (r != comm.rank() && comm.sameHostAs(r)) {
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
        return new Window(comm, bytes, maps, own, id);
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

    private boolean remote(int rank) {
        return addresses[rank] == 0;
    }

    private int world(int rank) {
        return comm.worldRank(rank);
    }

    private void request(int target, int step, long offset, long requestId, long arg, int replyStep, long replyAddress,
                         long replyLength) {
        final ByteBuffer msg = ByteBuffer.allocateDirect(16).order(ByteOrder.LITTLE_ENDIAN);
        msg.putLong(0, requestId).putLong(8, arg);
        final Request reply = transport.recv(FrameHeader.TYPE_RMA, id, requestId, replyStep, world(target),
            replyAddress, replyLength);
        transport.send(FrameHeader.TYPE_RMA, id, offset, step, world(target), BufferUtil.address(msg), 16)
            .await(0, 2000);
        reply.await(0, 2000);
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
        return remote(rank) ? 0 : addresses[rank] + CONTROL + offset;
    }

    /** Writes {@code src} (position to limit) at {@code offset} of {@code target}'s window. */
    public void put(ByteBuffer src, int target, long offset) {
        put(Communicator.address(src), src.remaining(), target, offset);
    }

    /** Writes raw memory into {@code target}'s window. */
    public void put(long address, long length, int target, long offset) {
        final long dst = target(target, offset, length);
        if (remote(target)) {
            transport.send(FrameHeader.TYPE_RMA, id, offset, Transport.RMA_PUT, world(target), address, length)
                .await(0, 2000);
        } else {
            Reductions.copy(address, dst, length);
        }
    }

    /** Reads {@code dst.remaining()} bytes from {@code offset} of {@code target}'s window into {@code dst}. */
    public void get(ByteBuffer dst, int target, long offset) {
        get(Communicator.address(dst), dst.remaining(), target, offset);
    }

    /** Reads raw memory from {@code target}'s window. */
    public void get(long address, long length, int target, long offset) {
        final long src = target(target, offset, length);
        if (remote(target)) {
            request(target, Transport.RMA_GET, offset, requests.incrementAndGet(), length, Transport.RMA_GET_REPLY,
                address, length);
        } else {
            Reductions.copy(src, address, length);
        }
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
        if (remote(target)) {
            transport.sendTyped(FrameHeader.TYPE_RMA, id, offset, Transport.RMA_ACCUMULATE, world(target),
                Communicator.address(src), n, type, op).await(0, 2000);
            return;
        }
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
        if (anyRemote) {
            // An empty message to and from every rank: whatever a rank sent a target before it has been applied.
            final ByteBuffer none = ByteBuffer.allocateDirect(0);
            comm.allToAll(none, none.duplicate());
        }
        comm.barrier();
        VarHandle.fullFence();
    }

    /** Passive target: locks {@code target}'s window, exclusively or shared. */
    public void lock(int target, boolean exclusive) {
        target(target, 0, 0);
        if (remote(target)) {
            request(target, Transport.RMA_LOCK, 0, requests.incrementAndGet(), exclusive ? 1 : 0,
                Transport.RMA_LOCK_GRANT, 0, 0);
            return;
        }
        lockWord(target, exclusive);
    }

    /** Releases a lock taken with {@link #lock}; completes this rank's operations on that target. */
    public void unlock(int target, boolean exclusive) {
        target(target, 0, 0);
        VarHandle.fullFence();
        if (remote(target)) {
            request(target, Transport.RMA_UNLOCK, 0, requests.incrementAndGet(), exclusive ? 1 : 0,
                Transport.RMA_UNLOCK_ACK, 0, 0);
            return;
        }
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

    /** Address of {@code rank}'s window data in this process, or 0 when that rank is on another host. */
    long address(int rank) {
        return remote(rank) ? 0 : addresses[rank] + CONTROL;
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
            release();
        }
    }

    /**
     * Not collective: unmaps every mapping and removes this rank's file, for owners that know no rank touches the
     * window any more (or that the job has failed). Peers that still map the file keep their mapping.
     */
    synchronized void release() {
        if (closed) {
            return;
        }
        closed = true;
        try {
            transport.execute(req -> {
                transport.unregisterWindow(id);
                req.complete();
            }).await(0, 100);
        } catch (CommException e) {
            LOG.debug("window {}: the transport has stopped, nothing to unregister", id, e);
        }
        for (MappedByteBuffer m : maps) {
            if (m != null) {
                IoUtil.unmap(m);
            }
        }
        IoUtil.delete(own, true);
    }
}
