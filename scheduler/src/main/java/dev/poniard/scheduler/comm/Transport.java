package dev.poniard.scheduler.comm;

import dev.poniard.scheduler.comm.frame.FrameDecoder;
import dev.poniard.scheduler.comm.frame.FrameError;
import dev.poniard.scheduler.comm.frame.FrameHeader;
import io.aeron.Aeron;
import io.aeron.ExclusivePublication;
import io.aeron.Publication;
import io.aeron.Subscription;
import io.aeron.logbuffer.BufferClaim;
import io.aeron.logbuffer.ControlledFragmentHandler;
import io.aeron.logbuffer.Header;
import org.agrona.DirectBuffer;
import org.agrona.MutableDirectBuffer;
import org.agrona.concurrent.AgentInvoker;
import org.agrona.concurrent.ManyToOneConcurrentArrayQueue;
import org.agrona.concurrent.UnsafeBuffer;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import java.util.ArrayDeque;
import java.util.ArrayList;
import java.util.Iterator;
import java.util.List;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicLong;
import java.util.concurrent.locks.LockSupport;

/**
 * The per-rank message engine: every Aeron publication and subscription is driven by one thread at a time.
 *
 * <h2>Implementation overview</h2>
 * Threads post {@link SendOp}s and {@link RecvOp}s (and small tasks) to a many-to-one queue and wait on the op's
 * {@link Request}. A progress cycle runs the Aeron client conductor (invoker mode, no extra thread), drains the
 * command queue, polls the subscriptions, pushes pending sends, and every millisecond does housekeeping
 * (heartbeats, liveness, deadlines). Whoever holds the engine flag runs the cycle: a thread waiting for a request
 * drives it while it spins (MPI-style: the waiter sends its own message and takes its own reply from the log, no
 * thread hand-off on the latency path), and the progress thread runs it otherwise, so non-blocking operations,
 * heartbeats and incoming RMA proceed with nobody waiting. The progress thread idles by spinning, yielding, then
 * parking for a bounded time; a submitter, or a waiter about to park, unparks it.
 * <p>
 * <b>Messages.</b> A message is a key ({@code type, communicator id, sequence, step}), a source and a
 * destination, and a byte range. It travels as consecutive frames (see {@link FrameHeader}), each written
 * straight from the sender's memory into the Aeron log with {@code tryClaim} and copied (or reduced) straight
 * from the receiver's log into the destination memory: one copy each side, no staging.
 * <p>
 * <b>Ordering invariants.</b> Each peer pair has its own exclusive publication, and sends to one destination
 * are serialised FIFO (a message's chunks are contiguous), so the frames from one source arrive as whole
 * messages in send order. Per source the receiver keeps: the message being received ({@code current}),
 * posted receives (FIFO), and unexpected messages (FIFO). A new message binds to the first posted receive
 * with the same key; otherwise a small one (or one that may hide an awaited message behind it) is buffered if
 * the unexpected-message budget allows, else the fragment is left in the log ({@code ABORT}) until a receive is
 * posted: memory stays bounded, large messages are copied once, and nothing is dropped.
 * <p>
 * <b>Faults.</b> Every peer gets a heartbeat each interval; a peer unheard for the failure timeout is lost,
 * and every pending and later operation fails with {@link RankLostException}. Aborts (explicit, timeout or
 * lost peer) are broadcast so the other ranks fail promptly. Malformed frames are counted and logged (rate
 * limited) and never reach user memory.
 */
final class Transport implements AutoCloseable {
    private static final Logger LOG = LoggerFactory.getLogger(Transport.class);
    private static final int FRAGMENT_LIMIT = 64;
    private static final int SEND_FRAMES_PER_CYCLE = 256;
    /** Messages up to this size are buffered when they arrive before their receive (eager protocol). */
    static final int EAGER_LIMIT = 64 << 10;
    /** Eager buffers kept for reuse (4 MiB). */
    private static final int EAGER_POOL = 64;

    /** Settings the transport needs; {@link Communicator.Context} fills it. */
    record Settings(int rank, int size, long heartbeatIntervalNs, long failureTimeoutNs, long operationTimeoutNs,
                    long unexpectedBudget, long maxMessageLength, int chunkLength, long parkNs,
                    int idleSpins, int idleYields) {
    }

    private final Settings settings;
    private final int rank;
    private final int size;
    private final Aeron aeron;
    private final AgentInvoker invoker;
    private final ExclusivePublication[] publications;
    private final List<Subscription> subscriptions;
    private final int[] chunkLengths;
    private final ManyToOneConcurrentArrayQueue<Object> commands = new ManyToOneConcurrentArrayQueue<>(65536);
    private final ArrayDeque<SendOp>[] sendQueues;
    private final SourceState[] sources;
    private final ArrayDeque<SendOp> selfSends = new ArrayDeque<>();
    private final ArrayDeque<ByteBuffer> eagerPool = new ArrayDeque<>();
    private final FrameDecoder decoder;
    private final BufferClaim claim = new BufferClaim();
    private final ControlledFragmentHandler handler = this::onFragment;
    private final Thread progressThread;
    private final AtomicLong malformedFrames = new AtomicLong();
    private final List<Runnable> closeActions = new ArrayList<>();

    /** Held by the one thread running a progress cycle (see {@link #tryProgress}). */
    private final AtomicBoolean engine = new AtomicBoolean();
    private volatile boolean running = true;
    private volatile boolean sleeping;
    /** The last cycle found a publication full: sends wait for the media driver to advance its limit. */
    private volatile boolean flowControlled;
    private volatile CommException failure;
    private long unexpectedBytes;
    private long lastHeartbeatNs;
    private long lastHousekeepingNs;
    private long lastMalformedLogNs;
    private volatile boolean crashed;

    @SuppressWarnings("unchecked")
    Transport(Settings settings, Aeron aeron, ExclusivePublication[] publications, List<Subscription> subscriptions) {
        this.settings = settings;
        this.rank = settings.rank();
        this.size = settings.size();
        this.aeron = aeron;
        this.invoker = aeron.conductorAgentInvoker();
        this.publications = publications;
        this.subscriptions = subscriptions;
        this.chunkLengths = new int[size];
        int maxChunk = 64;
        for (int p = 0; p < size; p++) {
            if (publications[p] != null) {
                final int max = publications[p].maxPayloadLength() - FrameHeader.LENGTH;
                chunkLengths[p] = Math.max(64, (Math.min(settings.chunkLength(), max) / 64) * 64);
                maxChunk = Math.max(maxChunk, chunkLengths[p]);
            }
        }
        chunkLengths[rank] = Math.max(64, settings.chunkLength() / 64 * 64);
        this.decoder = new FrameDecoder(size, settings.maxMessageLength(), 65536);
        this.sendQueues = new ArrayDeque[size];
        this.sources = new SourceState[size];
        final long now = System.nanoTime();
        for (int p = 0; p < size; p++) {
            sendQueues[p] = new ArrayDeque<>();
            sources[p] = new SourceState(p, now);
        }
        this.progressThread = new Thread(this::run, "poniard-comm-progress-r" + rank);
        this.progressThread.setDaemon(true);
    }

    void start() {
        progressThread.start();
    }

    void onClose(Runnable action) {
        closeActions.add(action);
    }

    int rank() {
        return rank;
    }

    int size() {
        return size;
    }

    Settings settings() {
        return settings;
    }

    long malformedFrames() {
        return malformedFrames.get();
    }

    CommException failure() {
        return failure;
    }

    // ------------------------------------------------------------------ API for other threads

    Request send(int type, int commId, long seq, int step, int dest, long address, long length) {
        final SendOp op = new SendOp(type, commId, seq, step, dest, address, length);
        submit(op);
        return op.request;
    }

    /** A send whose frames carry an element type and operator (RMA accumulate). */
    Request sendTyped(int type, int commId, long seq, int step, int dest, long address, long length, DataType dtype,
                      ReduceOp rop) {
        final SendOp op = new SendOp(type, commId, seq, step, dest, address, length);
        op.dtype = dtype.code();
        op.op = rop.code();
        submit(op);
        return op.request;
    }

    Request recv(int type, int commId, long seq, int step, int source, long address, long capacity) {
        final RecvOp op = new RecvOp(type, commId, seq, step, source, address, capacity, null, null, false);
        submit(op);
        return op.request;
    }

    Request recvReduce(int type, int commId, long seq, int step, int source, long address, long capacity,
                       DataType dtype, ReduceOp rop, boolean inFirst) {
        final RecvOp op = new RecvOp(type, commId, seq, step, source, address, capacity, dtype, rop, inFirst);
        submit(op);
        return op.request;
    }

    /** Runs {@code task} on the progress thread (used for RMA and measurements). */
    Request execute(java.util.function.Consumer<Request> task) {
        final TaskOp op = new TaskOp(task);
        submit(op);
        return op.request;
    }

    /** Aborts the job: fails everything here and tells every peer. */
    void abort(String reason) {
        final CommAbortedException e = new CommAbortedException(rank, "communicator aborted by rank " + rank
            + ": " + reason);
        submit(new AbortCommand(e, -1, reason));
    }

    /** Fails the job with a timeout raised outside the progress thread (shared-memory waits); tells every peer. */
    void abortTimedOut(String what) {
        final String reason = what + " timed out after " + settings.operationTimeoutNs() / 1_000_000 + " ms on rank "
            + rank;
        submit(new AbortCommand(new CommTimeoutException(rank, reason), -1, reason));
    }

    private void submit(Op op) {
        final CommException f = failure;
        if (f != null) {
            op.request.fail(f);
            return;
        }
        if (!running) {
            op.request.fail(new CommException("communicator on rank " + rank + " is closed"));
            return;
        }
        op.deadlineNs = System.nanoTime() + settings.operationTimeoutNs();
        op.request.engine = this;
        while (!commands.offer(op)) {
            if (!running) {
                op.request.fail(new CommException("communicator on rank " + rank + " is closed"));
                return;
            }
            Thread.yield();
        }
        if (sleeping) {
            LockSupport.unpark(progressThread);
        }
    }

    // ------------------------------------------------------------------ progress thread

    /** The progress thread's first idle park; later ones double up to {@code parkNs}. */
    private static final long FIRST_PARK_NS = 50_000;

    private void run() {
        long idleCount = 0;
        final long firstPark = Math.min(FIRST_PARK_NS, settings.parkNs());
        long park = firstPark;
        while (running) {
            final int work = tryProgress();
            if (work > 0) {
                idleCount = 0;
                park = firstPark;
            } else if (work == 0 && ++idleCount < settings.idleSpins()) {
                Thread.onSpinWait();
            } else if (work == 0 && idleCount < (long) settings.idleSpins() + settings.idleYields()) {
                Thread.yield();
            } else {
                // Idle, or a waiting caller is driving progress: park until a submitter or a departing caller
                // wakes us, or the park bound passes (housekeeping, and operations nobody waits for, such as a
                // receive whose future completes a task). The bound doubles while idle, up to parkNs, so a quiet
                // rank stops waking ~20,000 times a second and taking a worker's core.
                sleeping = true;
                if (commands.isEmpty()) {
                    LockSupport.parkNanos(park);
                }
                sleeping = false;
                park = Math.min(park * 2, settings.parkNs());
            }
        }
        // Take the engine for good: nothing runs a cycle after this, so closing Aeron below is safe.
        while (!engine.compareAndSet(false, true)) {
            Thread.onSpinWait();
        }
        if (!crashed) {
            failAll(new CommException("communicator on rank " + rank + " is closed"));
        }
    }

    /**
     * Runs one progress cycle if no other thread is running one: the progress thread calls it in its loop and
     * threads waiting for a request call it while they spin, so a message a waiter is waiting for is sent or
     * taken from the log by the waiter itself, without waking another thread. Returns the work done, or -1 when
     * another thread holds the engine. The engine flag's CAS and release give the happens-before edges that
     * keep the engine's state (queues, receive matching, the decoder, the Aeron client) confined to one thread
     * at a time.
     */
    int tryProgress() {
        if (!engine.compareAndSet(false, true)) {
            return -1;
        }
        try {
            if (!running) {
                return 0;
            }
            return cycle();
        } catch (Throwable t) {
            LOG.error("rank {}: communication engine failed", rank, t);
            running = false;
            failAll(new CommException("communication engine of rank " + rank + " failed: " + t, t));
            return 0;
        } finally {
            engine.set(false);
        }
    }

    private int cycle() {
        int work = invoker.invoke();
        work += drainCommands();
        for (int i = 0, n = subscriptions.size(); i < n; i++) {
            work += subscriptions.get(i).controlledPoll(handler, FRAGMENT_LIMIT);
        }
        work += grantWaitingLocks();
        work += progressSends();
        final long now = System.nanoTime();
        if (now - lastHousekeepingNs > 1_000_000L) {
            lastHousekeepingNs = now;
            housekeeping(now);
        }
        return work;
    }

    /**
     * Whether sends are waiting for Aeron flow control: the media driver's conductor must run to advance the
     * publisher limit, so a waiter should yield its core rather than spin.
     */
    boolean flowControlled() {
        return flowControlled;
    }

    /** A waiter is about to park with its request pending: make sure the progress thread carries it on. */
    void handOff() {
        if (sleeping) {
            LockSupport.unpark(progressThread);
        }
    }

    private int drainCommands() {
        int n = 0;
        Object o;
        while (n < 1024 && (o = commands.poll()) != null) {
            n++;
            final CommException f = failure;
            if (o instanceof AbortCommand a) {
                raise(a.error, a.lostRank, a.reason);
                continue;
            }
            final Op op = (Op) o;
            if (f != null) {
                op.request.fail(f);
                continue;
            }
            if (op instanceof SendOp s) {
                if (s.dest == rank) {
                    selfSends.add(s);
                } else if (sources[s.dest].closed) {
                    s.request.fail(closedPeer(s.dest));
                } else {
                    sendQueues[s.dest].add(s);
                }
            } else if (op instanceof RecvOp r) {
                postRecv(r);
            } else if (op instanceof TaskOp t) {
                try {
                    t.task.accept(t.request);
                } catch (RuntimeException e) {
                    t.request.fail(e);
                }
            }
        }
        return n;
    }

    private void postRecv(RecvOp r) {
        final SourceState src = sources[r.source];
        for (Iterator<Unexpected> it = src.unexpected.iterator(); it.hasNext(); ) {
            final Unexpected u = it.next();
            if (u.waiting == null && u.matches(r)) {
                if (u.complete()) {
                    it.remove();
                    deliverUnexpected(u, r);
                    releaseUnexpected(u);
                } else {
                    u.waiting = r;
                }
                return;
            }
        }
        if (src.closed) {
            r.request.fail(closedPeer(r.source));
            return;
        }
        src.posted.add(r);
    }

    private void deliverUnexpected(Unexpected u, RecvOp r) {
        if (u.totalLength > r.capacity) {
            r.request.fail(truncation(u.totalLength, r));
            return;
        }
        deliver(r, u.address, 0, u.totalLength);
        r.request.length = u.totalLength;
        r.request.complete();
    }

    private Unexpected newUnexpected(int type, int commId, long seq, int step, long total) {
        unexpectedBytes += total;
        final ByteBuffer pooled = total <= EAGER_LIMIT ? eagerPool.poll() : null;
        return new Unexpected(type, commId, seq, step, total,
            pooled != null ? pooled : ByteBuffer.allocateDirect((int) (total <= EAGER_LIMIT ? EAGER_LIMIT
                : Math.max(1, total))));
    }

    /** Called once the message's bytes have been delivered (or dropped): its memory may be reused. */
    private void releaseUnexpected(Unexpected u) {
        unexpectedBytes -= u.totalLength;
        if (u.memory.capacity() == EAGER_LIMIT && eagerPool.size() < EAGER_POOL) {
            eagerPool.add(u.memory);
        }
    }

    /**
     * Whether a message with no posted receive is copied out of the log now. Small ones are (eager protocol),
     * within the budget. A large one stays in the log until its receive is posted (rendezvous: no allocation, no
     * extra copy, the sender is held back by Aeron's flow control), unless a receive for another message from the
     * same source is already waiting: that message may be behind this one in the log, so holding this one would
     * deadlock.
     */
    private boolean takeUnexpected(SourceState src, long total) {
        return failure == null && unexpectedBytes + total <= settings.unexpectedBudget()
            && (total <= EAGER_LIMIT || !src.posted.isEmpty());
    }

    private CommException truncation(long length, RecvOp r) {
        return new CommException("message of " + length + " bytes from rank " + r.source
            + " does not fit the " + r.capacity + "-byte receive buffer (type " + r.type + ", sequence "
            + r.seq + ", step " + r.step + ")");
    }

    private void deliver(RecvOp r, long srcAddress, long offset, long length) {
        if (r.dtype == null) {
            Reductions.copy(srcAddress, r.address + offset, length);
        } else {
            Reductions.combine(r.dtype, r.rop, srcAddress, r.address + offset, length / r.dtype.size(), r.inFirst);
        }
    }

    private ControlledFragmentHandler.Action onFragment(DirectBuffer buffer, int offset, int length, Header header) {
        final FrameError err = decoder.validate(buffer, offset, length);
        if (err != FrameError.OK) {
            malformed(err, header.sessionId());
            return ControlledFragmentHandler.Action.CONTINUE;
        }
        final FrameHeader h = decoder.header();
        final int source = h.source();
        final SourceState src = sources[source];
        if (source == rank) {
            malformed(FrameError.SPOOFED_SOURCE, header.sessionId());
            return ControlledFragmentHandler.Action.CONTINUE;
        }
        if (src.sessionId == Integer.MIN_VALUE) {
            src.sessionId = header.sessionId();
        } else if (src.sessionId != header.sessionId()) {
            malformed(FrameError.SPOOFED_SOURCE, header.sessionId());
            return ControlledFragmentHandler.Action.CONTINUE;
        }
        src.lastHeardNs = System.nanoTime();
        final int type = h.type();
        if (type == FrameHeader.TYPE_HEARTBEAT) {
            return ControlledFragmentHandler.Action.CONTINUE;
        }
        if (type == FrameHeader.TYPE_ABORT) {
            onAbortFrame(buffer, offset, h, source);
            return ControlledFragmentHandler.Action.CONTINUE;
        }
        final long payloadAddress = buffer.addressOffset() + offset + FrameHeader.LENGTH;
        final int payload = h.payloadLength();
        if (src.current != null) {
            if (!src.currentMatches(h)) {
                malformed(FrameError.OUT_OF_SEQUENCE, header.sessionId());
                abandonCurrent(src, "a frame out of sequence");
                if (h.chunkIndex() != 0) {
                    return ControlledFragmentHandler.Action.CONTINUE;
                }
            } else {
                acceptChunk(src, h, payloadAddress, payload);
                return ControlledFragmentHandler.Action.CONTINUE;
            }
        }
        if (h.chunkIndex() != 0) {
            malformed(FrameError.OUT_OF_SEQUENCE, header.sessionId());
            return ControlledFragmentHandler.Action.CONTINUE;
        }
        // A new message: bind to a posted receive, else buffer it, else leave it in the log.
        final long total = h.totalLength();
        if (type == FrameHeader.TYPE_RMA && h.step() < RMA_REPLIES) {
            return onRmaRequest(src, h, buffer, offset, header.sessionId());
        }
        RecvOp match = null;
        for (Iterator<RecvOp> it = src.posted.iterator(); it.hasNext(); ) {
            final RecvOp r = it.next();
            if (r.type == type && r.commId == h.communicatorId() && r.seq == h.sequence() && r.step == h.step()) {
                it.remove();
                match = r;
                break;
            }
        }
        if (match != null) {
            if (total > match.capacity) {
                match.request.fail(truncation(total, match));
                match = null;
                src.startDiscard(h);
            } else if (match.dtype != null && (h.chunkLength() % match.dtype.size() != 0
                || total % match.dtype.size() != 0)) {
                match.request.fail(new CommException("message from rank " + source + " of " + total
                    + " bytes is not a whole number of " + match.dtype + " elements"));
                match = null;
                src.startDiscard(h);
            } else {
                src.start(h, match, null);
            }
        } else if (takeUnexpected(src, total)) {
            final Unexpected u = newUnexpected(type, h.communicatorId(), h.sequence(), h.step(), total);
            src.unexpected.add(u);
            src.start(h, null, u);
        } else {
            return ControlledFragmentHandler.Action.ABORT;
        }
        acceptChunk(src, h, payloadAddress, payload);
        return ControlledFragmentHandler.Action.CONTINUE;
    }

    // ------------------------------------------------------------------ RMA targets (progress thread only)

    static final int RMA_PUT = 0;
    static final int RMA_ACCUMULATE = 1;
    static final int RMA_GET = 2;
    static final int RMA_LOCK = 3;
    static final int RMA_UNLOCK = 4;
    /** Steps at or above this are replies, matched like ordinary receives. */
    static final int RMA_REPLIES = 16;
    static final int RMA_GET_REPLY = 16;
    static final int RMA_LOCK_GRANT = 17;
    static final int RMA_UNLOCK_ACK = 18;

    /** A window this rank exposes: data memory, its size, and the shared lock word. */
    static final class RmaTarget {
        final long address;
        final long size;
        final long lockWord;
        final ArrayDeque<long[]> waitingLocks = new ArrayDeque<>();

        RmaTarget(long address, long size, long lockWord) {
            this.address = address;
            this.size = size;
            this.lockWord = lockWord;
        }
    }

    private final org.agrona.collections.Int2ObjectHashMap<RmaTarget> windows =
        new org.agrona.collections.Int2ObjectHashMap<>();

    /** Exposes a window to remote ranks (call through {@link #execute}). */
    void registerWindow(int id, RmaTarget target) {
        windows.put(id, target);
    }

    void unregisterWindow(int id) {
        windows.remove(id);
    }

    static boolean tryLockWord(long word, boolean exclusive) {
        final int v = org.agrona.UnsafeApi.getIntVolatile(null, word);
        return exclusive ? v == 0 && org.agrona.UnsafeApi.compareAndSetInt(null, word, 0, -1)
            : v >= 0 && org.agrona.UnsafeApi.compareAndSetInt(null, word, v, v + 1);
    }

    static void unlockWord(long word, boolean exclusive) {
        if (exclusive) {
            org.agrona.UnsafeApi.putIntVolatile(null, word, 0);
        } else {
            org.agrona.UnsafeApi.getAndAddInt(null, word, -1);
        }
    }

    private void reply(int dest, int windowId, long requestId, int step, long address, long length) {
        final SendOp op = new SendOp(FrameHeader.TYPE_RMA, windowId, requestId, step, dest, address, length);
        op.deadlineNs = System.nanoTime() + settings.operationTimeoutNs();
        sendQueues[dest].add(op);
    }

    private ControlledFragmentHandler.Action onRmaRequest(SourceState src, FrameHeader h, DirectBuffer buffer,
                                                          int offset, int sessionId) {
        final RmaTarget w = windows.get(h.communicatorId());
        final long total = h.totalLength();
        final long at = h.sequence();
        final int step = h.step();
        final int source = src.rank;
        if (w == null) {
            malformed(FrameError.OUT_OF_SEQUENCE, sessionId);
            src.startDiscard(h);
            acceptChunk(src, h, 0, h.payloadLength());
            return ControlledFragmentHandler.Action.CONTINUE;
        }
        switch (step) {
            case RMA_PUT, RMA_ACCUMULATE -> {
                final DataType dtype = step == RMA_ACCUMULATE ? DataType.fromCode(h.dtype()) : null;
                final ReduceOp rop = step == RMA_ACCUMULATE ? ReduceOp.fromCode(h.op()) : null;
                if (at < 0 || at + total > w.size || (step == RMA_ACCUMULATE && (dtype == null || rop == null
                    || total % dtype.size() != 0 || h.chunkLength() % dtype.size() != 0))) {
                    malformed(FrameError.BAD_TOTAL_LENGTH, sessionId);
                    src.startDiscard(h);
                    acceptChunk(src, h, 0, h.payloadLength());
                    return ControlledFragmentHandler.Action.CONTINUE;
                }
                final RecvOp r = new RecvOp(FrameHeader.TYPE_RMA, h.communicatorId(), at, step, source,
                    w.address + at, total, dtype, rop, false);
                if (step == RMA_ACCUMULATE) {
                    if (!tryLockWord(w.lockWord, true)) {
                        return ControlledFragmentHandler.Action.ABORT;
                    }
                    r.onComplete = () -> unlockWord(w.lockWord, true);
                }
                src.start(h, r, null);
                acceptChunk(src, h, buffer.addressOffset() + offset + FrameHeader.LENGTH, h.payloadLength());
                return ControlledFragmentHandler.Action.CONTINUE;
            }
            default -> {
                // Small requests: [request id i64][length or exclusive flag i64] in one frame.
                if (total != 16 || h.payloadLength() != 16) {
                    malformed(FrameError.BAD_PAYLOAD_LENGTH, sessionId);
                    return ControlledFragmentHandler.Action.CONTINUE;
                }
                final long requestId = buffer.getLong(offset + FrameHeader.LENGTH, java.nio.ByteOrder.LITTLE_ENDIAN);
                final long arg = buffer.getLong(offset + FrameHeader.LENGTH + 8, java.nio.ByteOrder.LITTLE_ENDIAN);
                if (step == RMA_GET) {
                    if (at < 0 || arg < 0 || at + arg > w.size) {
                        malformed(FrameError.BAD_TOTAL_LENGTH, sessionId);
                    } else {
                        reply(source, h.communicatorId(), requestId, RMA_GET_REPLY, w.address + at, arg);
                    }
                } else if (step == RMA_LOCK) {
                    if (tryLockWord(w.lockWord, arg != 0)) {
                        reply(source, h.communicatorId(), requestId, RMA_LOCK_GRANT, 0, 0);
                    } else {
                        w.waitingLocks.add(new long[]{source, h.communicatorId(), requestId, arg});
                    }
                } else if (step == RMA_UNLOCK) {
                    unlockWord(w.lockWord, arg != 0);
                    reply(source, h.communicatorId(), requestId, RMA_UNLOCK_ACK, 0, 0);
                } else {
                    malformed(FrameError.BAD_STEP, sessionId);
                }
                return ControlledFragmentHandler.Action.CONTINUE;
            }
        }
    }

    private int grantWaitingLocks() {
        int work = 0;
        if (windows.isEmpty()) {
            return 0;
        }
        for (RmaTarget w : windows.values()) {
            long[] q;
            while ((q = w.waitingLocks.peek()) != null && tryLockWord(w.lockWord, q[3] != 0)) {
                w.waitingLocks.poll();
                reply((int) q[0], (int) q[1], q[2], RMA_LOCK_GRANT, 0, 0);
                work++;
            }
        }
        return work;
    }

    private void acceptChunk(SourceState src, FrameHeader h, long payloadAddress, int payload) {
        final long offset = (long) h.chunkIndex() * h.chunkLength();
        if (src.recv != null) {
            deliver(src.recv, payloadAddress, offset, payload);
        } else if (src.unexpectedTarget != null) {
            Reductions.copy(payloadAddress, src.unexpectedTarget.address + offset, payload);
            src.unexpectedTarget.received += payload;
        }
        src.received += payload;
        src.nextChunk++;
        if (src.received >= src.totalLength) {
            final RecvOp r = src.recv;
            final Unexpected u = src.unexpectedTarget;
            src.clear();
            if (r != null) {
                r.request.length = src.lastTotal;
                r.request.complete();
                if (r.onComplete != null) {
                    r.onComplete.run();
                }
            } else if (u != null && u.waiting != null) {
                src.unexpected.remove(u);
                deliverUnexpected(u, u.waiting);
                releaseUnexpected(u);
            }
        }
    }

    private void abandonCurrent(SourceState src, String why) {
        if (src.recv != null) {
            src.recv.request.fail(new CommException("message from rank " + src.rank + " was abandoned after "
                + why + "; the stream from that rank is corrupt"));
        } else if (src.unexpectedTarget != null) {
            src.unexpected.remove(src.unexpectedTarget);
            releaseUnexpected(src.unexpectedTarget);
        }
        src.clear();
    }

    private void onAbortFrame(DirectBuffer buffer, int offset, FrameHeader h, int source) {
        final int len = h.payloadLength();
        final byte[] text = new byte[len];
        buffer.getBytes(offset + FrameHeader.LENGTH, text);
        final String reason = new String(text, StandardCharsets.UTF_8);
        final long lost = h.sequence() - 1;
        if (h.step() == 1) {
            // A graceful goodbye: only operations that need that rank fail (its frames arrived before this one).
            final SourceState src = sources[source];
            src.closed = true;
            final CommAbortedException gone = closedPeer(source);
            for (RecvOp r : src.posted) {
                r.request.fail(gone);
            }
            src.posted.clear();
            for (SendOp q : sendQueues[source]) {
                q.request.fail(gone);
            }
            sendQueues[source].clear();
            return;
        }
        final int claimed = h.communicatorId();
        final int origin = claimed >= 0 && claimed < size ? claimed : source;
        if (lost >= 0 && lost < size) {
            raise(new RankLostException((int) lost, "rank " + lost + " was lost (reported by rank " + origin
                + "): " + reason), (int) lost, reason);
        } else {
            raise(new CommAbortedException(origin, "communicator aborted by rank " + origin + ": " + reason),
                -1, reason);
        }
    }

    private void malformed(FrameError err, int sessionId) {
        final long n = malformedFrames.incrementAndGet();
        final long now = System.nanoTime();
        if (now - lastMalformedLogNs > 1_000_000_000L) {
            lastMalformedLogNs = now;
            LOG.warn("rank {}: dropped malformed frame ({}) from Aeron session {}; {} dropped so far",
                rank, err, sessionId, n);
        }
    }

    private int progressSends() {
        int work = 0;
        boolean blocked = false;
        for (int p = 0; p < size; p++) {
            final ArrayDeque<SendOp> q = sendQueues[p];
            if (q.isEmpty()) {
                continue;
            }
            final ExclusivePublication pub = publications[p];
            final int chunk = chunkLengths[p];
            int frames = 0;
            SendOp s;
            while (frames < SEND_FRAMES_PER_CYCLE && (s = q.peek()) != null) {
                final long off = (long) s.nextChunk * chunk;
                final int payload = (int) Math.min(chunk, s.length - off);
                final long r = pub.tryClaim(FrameHeader.LENGTH + payload, claim);
                if (r <= 0) {
                    blocked = true;
                    if (r == Publication.CLOSED || r == Publication.MAX_POSITION_EXCEEDED) {
                        raise(new CommException("publication to rank " + p + " failed (" + r + ")"), -1,
                            "publication failed");
                    }
                    break;
                }
                final MutableDirectBuffer b = claim.buffer();
                final int o = claim.offset();
                FrameHeader.write(b, o, s.type, s.dtype, s.op, s.commId, rank, s.seq, s.step, s.nextChunk, s.length,
                    payload, chunk);
                Reductions.copy(s.address + off, b.addressOffset() + o + FrameHeader.LENGTH, payload);
                claim.commit();
                frames++;
                s.nextChunk++;
                if (off + payload >= s.length) {
                    q.poll();
                    s.request.length = s.length;
                    s.request.complete();
                }
            }
            work += frames;
        }
        flowControlled = blocked;
        // Sends to self: deliver when a receive matches, else buffer within budget, else wait.
        for (Iterator<SendOp> it = selfSends.iterator(); it.hasNext(); ) {
            final SendOp s = it.next();
            if (selfDeliver(s)) {
                it.remove();
                work++;
            }
        }
        return work;
    }

    private boolean selfDeliver(SendOp s) {
        final SourceState src = sources[rank];
        for (Iterator<RecvOp> it = src.posted.iterator(); it.hasNext(); ) {
            final RecvOp r = it.next();
            if (r.type == s.type && r.commId == s.commId && r.seq == s.seq && r.step == s.step) {
                it.remove();
                if (s.length > r.capacity) {
                    r.request.fail(truncation(s.length, r));
                } else {
                    deliver(r, s.address, 0, s.length);
                    r.request.length = s.length;
                    r.request.complete();
                }
                s.request.length = s.length;
                s.request.complete();
                return true;
            }
        }
        if (unexpectedBytes + s.length <= settings.unexpectedBudget()) {
            final Unexpected u = newUnexpected(s.type, s.commId, s.seq, s.step, s.length);
            Reductions.copy(s.address, u.address, s.length);
            u.received = s.length;
            src.unexpected.add(u);
            s.request.length = s.length;
            s.request.complete();
            return true;
        }
        return false;
    }

    private void housekeeping(long now) {
        if (now - lastHeartbeatNs >= settings.heartbeatIntervalNs()) {
            lastHeartbeatNs = now;
            for (int p = 0; p < size; p++) {
                if (publications[p] != null) {
                    controlFrame(p, FrameHeader.TYPE_HEARTBEAT, 0, 0, null);
                }
            }
        }
        if (failure != null) {
            return;
        }
        for (int p = 0; p < size; p++) {
            final SourceState s = sources[p];
            if (p != rank && !s.closed && now - s.lastHeardNs > settings.failureTimeoutNs()) {
                final String why = "no heartbeat from rank " + p + " for "
                    + (now - s.lastHeardNs) / 1_000_000 + " ms (failure timeout "
                    + settings.failureTimeoutNs() / 1_000_000 + " ms)";
                raise(new RankLostException(p, "rank " + p + " was lost: " + why), p, why);
                return;
            }
        }
        // Operation deadlines.
        for (int p = 0; p < size; p++) {
            final SendOp head = sendQueues[p].peek();
            if (head != null && now > head.deadlineNs) {
                timeout("send of " + head.length + " bytes to rank " + p);
                return;
            }
            for (RecvOp r : sources[p].posted) {
                if (now > r.deadlineNs) {
                    timeout("receive from rank " + p + " (type " + r.type + ", sequence " + r.seq + ", step "
                        + r.step + ")");
                    return;
                }
            }
            final RecvOp cur = sources[p].recv;
            if (cur != null && now > cur.deadlineNs) {
                timeout("receive from rank " + p);
                return;
            }
        }
    }

    private void timeout(String what) {
        final String reason = what + " timed out after " + settings.operationTimeoutNs() / 1_000_000 + " ms on rank "
            + rank;
        raise(new CommTimeoutException(rank, reason), -1, reason);
    }

    private void controlFrame(int p, int type, long seq, int step, byte[] payload) {
        controlFrame(p, type, seq, step, payload, rank);
    }

    /** A control frame; the communicator-id field carries the rank the abort originated on. */
    private void controlFrame(int p, int type, long seq, int step, byte[] payload, int origin) {
        final ExclusivePublication pub = publications[p];
        final int len = payload == null ? 0 : Math.min(payload.length, FrameDecoder.MAX_CONTROL_PAYLOAD);
        if (pub.tryClaim(FrameHeader.LENGTH + len, claim) > 0) {
            final MutableDirectBuffer b = claim.buffer();
            final int o = claim.offset();
            FrameHeader.write(b, o, type, 0, 0, origin, rank, seq, step, 0, len, len, 0);
            if (len > 0) {
                b.putBytes(o + FrameHeader.LENGTH, payload, 0, len);
            }
            claim.commit();
        }
    }

    /** Enters the failed state (first failure wins), fails every operation and tells the peers. */
    private void raise(CommException e, int lostRank, String reason) {
        if (failure != null) {
            return;
        }
        failure = e;
        LOG.warn("rank {}: {}", rank, e.getMessage());
        final byte[] text = reason.getBytes(StandardCharsets.UTF_8);
        final int origin = e instanceof CommAbortedException a ? a.originRank() : rank;
        for (int p = 0; p < size; p++) {
            if (publications[p] != null && p != lostRank && !sources[p].closed) {
                controlFrame(p, FrameHeader.TYPE_ABORT, lostRank + 1L, 0, text, origin);
            }
        }
        failPending(e);
    }

    private static CommAbortedException closedPeer(int peer) {
        return new CommAbortedException(peer, "rank " + peer + " has closed its communicator");
    }

    private void failPending(CommException e) {
        for (int p = 0; p < size; p++) {
            for (SendOp s : sendQueues[p]) {
                s.request.fail(e);
            }
            sendQueues[p].clear();
            final SourceState src = sources[p];
            for (RecvOp r : src.posted) {
                r.request.fail(e);
            }
            src.posted.clear();
            for (Unexpected u : src.unexpected) {
                if (u.waiting != null) {
                    u.waiting.request.fail(e);
                }
            }
            if (src.recv != null) {
                src.recv.request.fail(e);
                src.recv = null;
            }
        }
        for (SendOp s : selfSends) {
            s.request.fail(e);
        }
        selfSends.clear();
    }

    private void failAll(CommException e) {
        if (failure == null) {
            failure = e;
        }
        failPending(failure);
        Object o;
        while ((o = commands.poll()) != null) {
            if (o instanceof Op op) {
                op.request.fail(failure);
            }
        }
    }

    /** Test hook: stops the progress thread without telling anyone, as if the process had died. */
    void crashForTesting() {
        crashed = true;
        running = false;
        LockSupport.unpark(progressThread);
        joinProgress();
        failAll(new CommException("rank " + rank + " crashed (test)"));
    }

    private void joinProgress() {
        try {
            progressThread.join(10_000);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
    }

    @Override
    public void close() {
        if (running && failure == null && !crashed) {
            final Request bye = execute(req -> {
                for (int p = 0; p < size; p++) {
                    if (publications[p] != null) {
                        controlFrame(p, FrameHeader.TYPE_ABORT, 0, 1,
                            ("rank " + rank + " closed").getBytes(StandardCharsets.UTF_8));
                    }
                }
                req.complete();
            });
            try {
                bye.await(0);
            } catch (CommException ignored) {
                // closing anyway
            }
        }
        running = false;
        LockSupport.unpark(progressThread);
        if (Thread.currentThread() != progressThread) {
            joinProgress();
        }
        for (int i = closeActions.size() - 1; i >= 0; i--) {
            try {
                closeActions.get(i).run();
            } catch (RuntimeException e) {
                LOG.warn("rank {}: error while closing", rank, e);
            }
        }
    }

    // ------------------------------------------------------------------ internal state

    abstract static class Op {
        final Request request = new Request();
        long deadlineNs;
    }

    static final class SendOp extends Op {
        final int type;
        final int commId;
        final long seq;
        final int step;
        final int dest;
        final long address;
        final long length;
        int nextChunk;
        int dtype;
        int op;

        SendOp(int type, int commId, long seq, int step, int dest, long address, long length) {
            this.type = type;
            this.commId = commId;
            this.seq = seq;
            this.step = step;
            this.dest = dest;
            this.address = address;
            this.length = length;
        }
    }

    static final class RecvOp extends Op {
        final int type;
        final int commId;
        final long seq;
        final int step;
        final int source;
        final long address;
        final long capacity;
        final DataType dtype;
        final ReduceOp rop;
        final boolean inFirst;
        Runnable onComplete;

        RecvOp(int type, int commId, long seq, int step, int source, long address, long capacity, DataType dtype,
               ReduceOp rop, boolean inFirst) {
            this.type = type;
            this.commId = commId;
            this.seq = seq;
            this.step = step;
            this.source = source;
            this.address = address;
            this.capacity = capacity;
            this.dtype = dtype;
            this.rop = rop;
            this.inFirst = inFirst;
        }
    }

    static final class TaskOp extends Op {
        final java.util.function.Consumer<Request> task;

        TaskOp(java.util.function.Consumer<Request> task) {
            this.task = task;
        }
    }

    static final class AbortCommand extends Op {
        final CommException error;
        final int lostRank;
        final String reason;

        AbortCommand(CommException error, int lostRank, String reason) {
            this.error = error;
            this.lostRank = lostRank;
            this.reason = reason;
        }
    }

    static final class Unexpected {
        final int type;
        final int commId;
        final long seq;
        final int step;
        final long totalLength;
        final ByteBuffer memory;
        final long address;
        long received;
        RecvOp waiting;

        Unexpected(int type, int commId, long seq, int step, long total, ByteBuffer memory) {
            this.type = type;
            this.commId = commId;
            this.seq = seq;
            this.step = step;
            this.totalLength = total;
            this.memory = memory;
            this.address = new UnsafeBuffer(memory).addressOffset();
        }

        boolean matches(RecvOp r) {
            return r.type == type && r.commId == commId && r.seq == seq && r.step == step;
        }

        boolean complete() {
            return received >= totalLength;
        }
    }

    static final class SourceState {
        final int rank;
        final ArrayList<RecvOp> posted = new ArrayList<>();
        final ArrayDeque<Unexpected> unexpected = new ArrayDeque<>();
        int sessionId = Integer.MIN_VALUE;
        long lastHeardNs;
        boolean closed;
        // The message in progress.
        boolean active;
        int type;
        int commId;
        long seq;
        int step;
        int chunkLength;
        int nextChunk;
        long totalLength;
        long lastTotal;
        long received;
        RecvOp recv;
        Unexpected unexpectedTarget;
        Object current;

        SourceState(int rank, long now) {
            this.rank = rank;
            this.lastHeardNs = now;
        }

        void start(FrameHeader h, RecvOp r, Unexpected u) {
            active = true;
            current = this;
            type = h.type();
            commId = h.communicatorId();
            seq = h.sequence();
            step = h.step();
            chunkLength = h.chunkLength();
            nextChunk = 0;
            totalLength = h.totalLength();
            lastTotal = totalLength;
            received = 0;
            recv = r;
            unexpectedTarget = u;
        }

        void startDiscard(FrameHeader h) {
            start(h, null, null);
        }

        boolean currentMatches(FrameHeader h) {
            return h.type() == type && h.communicatorId() == commId && h.sequence() == seq && h.step() == step
                && h.chunkLength() == chunkLength && h.chunkIndex() == nextChunk && h.totalLength() == totalLength;
        }

        void clear() {
            active = false;
            current = null;
            recv = null;
            unexpectedTarget = null;
        }
    }
}
