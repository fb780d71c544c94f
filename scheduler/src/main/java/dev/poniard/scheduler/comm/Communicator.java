package dev.poniard.scheduler.comm;

import dev.poniard.scheduler.comm.frame.FrameHeader;
import dev.poniard.scheduler.comm.launch.RankEnvironment;
import io.aeron.Aeron;
import io.aeron.ExclusivePublication;
import io.aeron.Subscription;
import io.aeron.driver.MediaDriver;
import io.aeron.driver.ThreadingMode;
import org.agrona.BufferUtil;
import org.agrona.IoUtil;
import org.agrona.concurrent.BackoffIdleStrategy;
import org.agrona.concurrent.IdleStrategy;
import org.agrona.concurrent.UnsafeBuffer;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import java.io.File;
import java.io.IOException;
import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.net.ServerSocket;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ConcurrentLinkedDeque;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.ThreadFactory;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.atomic.AtomicLong;
import java.util.concurrent.locks.LockSupport;

/**
 * A group of ranks that exchange messages and run collectives: Poniard's MPI communicator.
 *
 * <h2>Implementation overview</h2>
 * {@link #connect(Context)} builds the world communicator: it starts (or attaches to) the host's Aeron media
 * driver, joins the TCP rendezvous run by rank 0 (HMAC-authenticated, see {@link Rendezvous}), learns every
 * rank's endpoint, opens one exclusive publication per peer (IPC when the peer shares this media driver, UDP
 * otherwise) and starts the {@link Transport}'s progress thread, which alone touches Aeron. It then measures
 * the α-β cost model (rank 0 measures, everyone receives the figures) so that algorithm choices agree on every
 * rank.
 * <p>
 * Collectives run on the calling thread as sequences of non-blocking sends and receives handed to the progress
 * thread; each collective call takes the next operation sequence number of the communicator, which with the
 * communicator id and the algorithm step forms the message key, so concurrent and non-blocking collectives
 * never mix their messages. Large messages are chunked into frames and reduced into the destination as each
 * frame arrives. Every element is reduced in an order fixed by the algorithm (never by arrival timing), and
 * results computed by one rank are copied to the others, so results are bitwise identical run to run and on
 * every rank. Non-blocking collectives run the same code on a worker thread. {@link #split} derives
 * sub-communicators that share the world's transport under their own communicator id.
 * <p>
 * Algorithms follow Thakur, Rabenseifner and Gropp, "Optimization of Collective Communication Operations in
 * MPICH" (IJHPCA 2005): ring, recursive doubling, Rabenseifner (recursive halving + doubling, with the
 * non-power-of-two fold), binomial trees, pipelined chain broadcast, pairwise all-to-all, dissemination barrier.
 * All-reduces among ranks of one host go through shared memory instead ({@code HostCollectives}).
 * <p>
 * Memory: operations take direct {@link ByteBuffer}s (position to limit, used in place, never copied to a
 * staging buffer), raw {@code address + length}, or Java arrays (copied through a pooled direct buffer).
 * Callers must keep the memory alive and untouched until the operation completes.
 */
public final class Communicator implements AutoCloseable {
    private static final Logger LOG = LoggerFactory.getLogger(Communicator.class);
    private static final int WORLD_ID = 1;
    private static final int UDP_STREAM_ID = 0x504E;
    private static final int TYPE_P2P = FrameHeader.TYPE_P2P;
    private static final int TYPE_COLL = FrameHeader.TYPE_COLLECTIVE;

    private final Transport transport;
    private final Communicator world;
    private final int commId;
    private final int[] group;
    private final int rank;
    private final int size;
    private final AtomicLong sequence = new AtomicLong();
    private final Context ctx;
    private final ExecutorService async;
    private final ConcurrentLinkedDeque<ByteBuffer> scratch;
    private volatile CostModel costModel = CostModel.DEFAULT;
    /** Idle spins of a waiting caller: {@link Context#waitSpins}, resolved at connect when it is -1 (auto). */
    private long spins;
    /** Per world rank: shares this rank's host and media driver (IPC, shared memory windows). */
    private boolean[] sameHost;
    /** The IPC stream this rank subscribes to (tests inject hostile frames into it). */
    private int ipcStreamId;
    private volatile boolean closed;
    /** Shared-memory all-reduce among ranks of this host; null when a rank is elsewhere or it is turned off. */
    private HostCollectives host;
    /** World only: the segments of this communicator and its sub-communicators, released when the world closes. */
    private final java.util.Queue<HostCollectives> hostSegments = new java.util.concurrent.ConcurrentLinkedQueue<>();

    private Communicator(Transport transport, Communicator world, int commId, int[] group, int rank, Context ctx,
                         ExecutorService async, ConcurrentLinkedDeque<ByteBuffer> scratch) {
        this.transport = transport;
        this.world = world == null ? this : world;
        this.commId = commId;
        this.group = group;
        this.rank = rank;
        this.size = group.length;
        this.ctx = ctx;
        this.async = async;
        this.scratch = scratch;
    }

    // =================================================================== construction

    /** Joins the job described by {@code ctx} and returns the world communicator. */
    public static Communicator connect(Context ctx) {
        ctx.conclude();
        final List<AutoCloseable> resources = new ArrayList<>();
        try {
            return doConnect(ctx, resources);
        } catch (RuntimeException | Error e) {
            for (int i = resources.size() - 1; i >= 0; i--) {
                closeQuietly(resources.get(i));
            }
            throw e;
        }
    }

    /**
     * The media driver's idle strategy: Agrona's back-off (spin, yield, then park), whose longest park is chosen once
     * the ranks are known. Between ranks of one host (IPC) the driver only advances publication limits and sends
     * heartbeats, and waiting callers drive their own progress, so an idle driver may sleep 1 ms: parking at most
     * 100 us woke it ~10,000 times a second, and with every core running a worker (2 ranks on 2 cores) each wake-up
     * preempted one — a 2-rank tile GEMM (n = 4096) ran at 54-56 GFLOP/s against 65-74 with the longer sleep, and
     * {@code bench comm} did not move. Over UDP the driver's receiver is on the data path: 100 us there.
     */
    static final class DriverIdleStrategy implements IdleStrategy {
        private final BackoffIdleStrategy local = new BackoffIdleStrategy(100, 10, 1_000, 1_000_000);
        private final BackoffIdleStrategy remote = new BackoffIdleStrategy(100, 10, 1_000, 100_000);
        private volatile boolean allLocal;

        DriverIdleStrategy(boolean allLocal) {
            this.allLocal = allLocal;
        }

        void allLocal(boolean value) {
            allLocal = value;
        }

        private IdleStrategy current() {
            return allLocal ? local : remote;
        }

        @Override
        public void idle(int workCount) {
            current().idle(workCount);
        }

        @Override
        public void idle() {
            current().idle();
        }

        @Override
        public void reset() {
            local.reset();
            remote.reset();
        }
    }

    private static Communicator doConnect(Context ctx, List<AutoCloseable> resources) {
        final int rank = ctx.rank();
        final int size = ctx.size();
        final String dir = ctx.aeronDirectoryName();
        // until the endpoints are known, idle as if a peer were remote
        final DriverIdleStrategy driverIdle = new DriverIdleStrategy(false);
        if (ctx.launchDriver()) {
            dev.poniard.scheduler.comm.launch.Launcher.sweepStaleDirectories(60_000);
            final MediaDriver.Context mdc = new MediaDriver.Context()
                .aeronDirectoryName(dir)
                .dirDeleteOnStart(true)
                .dirDeleteOnShutdown(true)
                .threadingMode(ThreadingMode.SHARED)
                .sharedIdleStrategy(driverIdle)
                .termBufferSparseFile(true)
                .socketRcvbufLength(4 << 20)
                .socketSndbufLength(4 << 20)
                .publicationTermBufferLength(ctx.termLength())
                .ipcTermBufferLength(ctx.termLength())
                .clientLivenessTimeoutNs(Math.max(ctx.failureTimeoutMs() * 2L, 2000L) * 1_000_000L)
                .errorHandler(t -> LOG.warn("media driver (rank {}): {}", rank, t.toString()));
            final MediaDriver driver = MediaDriver.launch(mdc);
            // A rank stopped by a signal still removes its driver directory (SIGKILL is the launcher's job).
            final Thread hook = new Thread(() -> IoUtil.delete(new File(dir), true), "poniard-comm-dir-cleanup");
            Runtime.getRuntime().addShutdownHook(hook);
            resources.add(() -> {
                driver.close();
                IoUtil.delete(new File(dir), true);
                try {
                    Runtime.getRuntime().removeShutdownHook(hook);
                } catch (IllegalStateException ignored) {
                    // already shutting down
                }
            });
        }
        watchLauncher();
        final Aeron aeron = connectAeron(ctx, dir);
        resources.add(aeron);

        final String bind = ctx.bindAddress();
        final Subscription udpSub = aeron.addSubscription("aeron:udp?endpoint=" + bind + ":0|so-rcvbuf=4m", UDP_STREAM_ID);
        resources.add(udpSub);
        final long deadline = System.currentTimeMillis() + ctx.rendezvousTimeoutMs();
        String udpEndpoint;
        while ((udpEndpoint = udpSub.resolvedEndpoint()) == null) {
            aeron.conductorAgentInvoker().invoke();
            checkDeadline(deadline, "resolving the UDP endpoint");
            LockSupport.parkNanos(100_000);
        }
        final String hostKey = hostName() + ":" + new File(dir).getAbsolutePath();
        final Rendezvous.Endpoint self = new Rendezvous.Endpoint(hostKey, udpEndpoint);
        final Rendezvous.Table table;
        if (size == 1) {
            table = new Rendezvous.Table(0L, 0x1000, List.of(self));
        } else if (rank == 0) {
            try (ServerSocket server = new ServerSocket()) {
                server.setReuseAddress(true);
                server.bind(new InetSocketAddress(ctx.coordinatorHost(), ctx.coordinatorPort()));
                table = Rendezvous.coordinate(server, size, ctx.secret(), self, ctx.rendezvousTimeoutMs(),
                    ctx.protocolVersion());
            } catch (IOException e) {
                throw new RendezvousException("rank 0 could not listen on " + ctx.coordinatorHost() + ":"
                    + ctx.coordinatorPort() + ": " + e, e);
            }
        } else {
            table = Rendezvous.join(new InetSocketAddress(ctx.coordinatorHost(), ctx.coordinatorPort()), rank, size,
                ctx.secret(), self, ctx.rendezvousTimeoutMs(), ctx.protocolVersion());
        }
        LOG.debug("rank {}: endpoints {}", rank, Rendezvous.describe(table));
        int local = 0;
        for (Rendezvous.Endpoint e : table.endpoints()) {
            local += e.hostKey().equals(hostKey) ? 1 : 0;
        }
        driverIdle.allLocal(local == size);
        long spins = ctx.waitSpins();
        if (spins < 0) {
            // Spinning waiters answer in microseconds while every rank of this host has a core; with more ranks
            // than cores they would take the cores from the ranks that have work, so they yield at once instead.
            spins = local <= Runtime.getRuntime().availableProcessors() ? 2000 : 0;
        }

        final Subscription ipcSub = aeron.addSubscription("aeron:ipc", table.streamBase() + rank);
        resources.add(ipcSub);
        final ExclusivePublication[] pubs = new ExclusivePublication[size];
        for (int p = 0; p < size; p++) {
            if (p == rank) {
                continue;
            }
            final Rendezvous.Endpoint peer = table.endpoints().get(p);
            if (peer.hostKey().equals(hostKey)) {
                pubs[p] = aeron.addExclusivePublication("aeron:ipc?term-length=" + ctx.termLength() + "|mtu="
                    + ctx.ipcMtu(), table.streamBase() + p);
            } else {
                pubs[p] = aeron.addExclusivePublication("aeron:udp?endpoint=" + peer.udpEndpoint() + "|term-length="
                    + ctx.termLength() + "|mtu=" + ctx.udpMtu() + "|so-sndbuf=4m", UDP_STREAM_ID);
            }
            resources.add(pubs[p]);
        }
        for (int p = 0; p < size; p++) {
            while (pubs[p] != null && !pubs[p].isConnected()) {
                aeron.conductorAgentInvoker().invoke();
                checkDeadline(deadline, "connecting to rank " + p);
                LockSupport.parkNanos(100_000);
            }
        }
        final Transport.Settings settings = new Transport.Settings(rank, size,
            ctx.heartbeatIntervalMs() * 1_000_000L, ctx.failureTimeoutMs() * 1_000_000L,
            ctx.operationTimeoutMs() * 1_000_000L, ctx.unexpectedBudget(), ctx.maxMessageLength(),
            ctx.chunkLength(), ctx.idleParkNs(), ctx.idleSpins(), ctx.idleYields());
        final Transport transport = new Transport(settings, aeron, pubs, List.of(ipcSub, udpSub));
        for (AutoCloseable r : resources) {
            transport.onClose(() -> closeQuietly(r));
        }
        resources.clear();
        transport.start();
        final int[] group = new int[size];
        Arrays.setAll(group, i -> i);
        final AtomicInteger threads = new AtomicInteger();
        final ThreadFactory tf = r -> {
            final Thread t = new Thread(r, "poniard-comm-async-r" + rank + "-" + threads.incrementAndGet());
            t.setDaemon(true);
            return t;
        };
        final ExecutorService async = Executors.newCachedThreadPool(tf);
        final Communicator comm = new Communicator(transport, null, WORLD_ID, group, rank, ctx, async,
            new ConcurrentLinkedDeque<>());
        comm.ipcStreamId = table.streamBase() + rank;
        comm.spins = spins;
        comm.sameHost = new boolean[size];
        for (int p = 0; p < size; p++) {
            comm.sameHost[p] = table.endpoints().get(p).hostKey().equals(hostKey);
        }
        try {
            comm.costModel = comm.establishCostModel();
            comm.mapHostSegments();
        } catch (RuntimeException e) {
            comm.close();
            throw e;
        }
        LOG.debug("rank {}: connected, {} ranks, cost model {}", rank, size, comm.costModel);
        return comm;
    }

    /** A rank started by {@link dev.poniard.scheduler.comm.launch.Launcher} exits when its launcher is gone. */
    private static void watchLauncher() {
        final String pid = System.getenv("PONIARD_LAUNCHER_PID");
        if (pid == null || pid.isBlank()) {
            return;
        }
        try {
            ProcessHandle.of(Long.parseLong(pid.trim())).ifPresentOrElse(
                ph -> ph.onExit().thenRun(() -> {
                    LOG.error("launcher (pid {}) is gone; this rank exits", pid);
                    System.exit(143);
                }),
                () -> LOG.warn("launcher pid {} not found", pid));
        } catch (NumberFormatException e) {
            LOG.warn("PONIARD_LAUNCHER_PID is not a pid: {}", pid);
        }
    }

    private static Aeron connectAeron(Context ctx, String dir) {
        final long deadline = System.currentTimeMillis() + ctx.rendezvousTimeoutMs();
        while (true) {
            try {
                return Aeron.connect(new Aeron.Context()
                    .aeronDirectoryName(dir)
                    .useConductorAgentInvoker(true)
                    .driverTimeoutMs(Math.max(2000, Math.min(10_000, ctx.failureTimeoutMs() * 2L)))
                    .errorHandler(t -> LOG.warn("aeron client (rank {}): {}", ctx.rank(), t.toString())));
            } catch (RuntimeException e) {
                if (System.currentTimeMillis() > deadline) {
                    throw new CommException("rank " + ctx.rank() + " found no Aeron media driver in " + dir
                        + " within " + ctx.rendezvousTimeoutMs() + " ms (the local rank 0 launches it): " + e, e);
                }
                LockSupport.parkNanos(50_000_000L);
            }
        }
    }

    private static void checkDeadline(long deadline, String what) {
        if (System.currentTimeMillis() > deadline) {
            throw new CommException("timed out " + what);
        }
    }

    private static String hostName() {
        try {
            return InetAddress.getLocalHost().getHostName();
        } catch (IOException e) {
            return "localhost";
        }
    }

    private static void closeQuietly(AutoCloseable c) {
        try {
            c.close();
        } catch (Exception e) {
            LOG.debug("close failed", e);
        }
    }

    /** Rank 0 measures α, β and γ (unless the context fixes them) and everyone receives the same figures. */
    private CostModel establishCostModel() {
        if (!Double.isNaN(ctx.alpha()) && !Double.isNaN(ctx.beta()) && !Double.isNaN(ctx.gamma())) {
            return new CostModel(ctx.alpha(), ctx.beta(), ctx.gamma());
        }
        final CostModel m = measure(ctx.costWarmUps());
        return new CostModel(Double.isNaN(ctx.alpha()) ? m.alpha() : ctx.alpha(),
            Double.isNaN(ctx.beta()) ? m.beta() : ctx.beta(), Double.isNaN(ctx.gamma()) ? m.gamma() : ctx.gamma());
    }

    /**
     * Collective: measures α, β and γ now, on ranks 0 and 1, and installs the figures on every rank (also where the
     * context fixed them at connect). Call it after a warm-up of the operations that matter (a first training step,
     * a few all-reduces): a JVM that has not yet compiled the communication path measures round trips several times
     * slower than it will run them.
     */
    public CostModel measureCostModel() {
        final CostModel m = measure(50);
        costModel = m;
        return m;
    }

    private static final int EXCHANGE_REPS = 7;
    /** Plain and reducing exchanges timed in pairs to measure γ on the receive path. */
    private static final int GAMMA_PAIRS = 15;
    /** Exchange sizes, in MiB, whose median times give β as a least-squares slope. */
    private static final int[] BETA_MIB = {1, 2, 3, 4};

    /** Median time of simultaneous {@code bytes} exchanges with {@code peer} (two untimed first); uses 2 * (2 + reps) steps. */
    private double medianExchangeNs(long seq, int step, int peer, long out, long in, int bytes) {
        final long[] t = new long[EXCHANGE_REPS];
        for (int i = 0; i < 2 + EXCHANGE_REPS; i++) {
            final long t0 = System.nanoTime();
            awaitAll(irecv(seq, step, peer, in, bytes), isend(seq, step, peer, out, bytes));
            if (i >= 2) {
                t[i - 2] = System.nanoTime() - t0;
            }
            step += 2;
        }
        Arrays.sort(t);
        return t[EXCHANGE_REPS / 2];
    }

    private CostModel measure(int warmUps) {
        final ByteBuffer params = ByteBuffer.allocateDirect(24).order(ByteOrder.nativeOrder());
        final long seq = nextSequence();
        if (size > 1) {
            final int small = 8;
            final int big = 1 << 20;
            final ByteBuffer buf = acquire(big);
            final long a = BufferUtil.address(buf);
            final int reps = 31;
            double alpha = 0;
            double beta = 0;
            double gammaOnReceive = 0;
            if (rank <= 1) {
                // Warm-ups first (the JIT compiles the path), then medians of individually timed round trips,
                // robust to a noisy, shared machine.
                final int peer = 1 - rank;
                int step = 0;
                final long[] small8 = new long[reps];
                for (int i = 0; i < warmUps + reps; i++) {
                    final long t0 = System.nanoTime();
                    pingPong(seq, step, peer, a, small);
                    if (i >= warmUps) {
                        small8[i - warmUps] = System.nanoTime() - t0;
                    }
                    step += 2;
                }
                Arrays.sort(small8);
                alpha = small8[reps / 2] / 2e9;
                // β from simultaneous exchanges (both ranks send and receive), as every step of a ring,
                // recursive-doubling or Rabenseifner collective does: one engine thread per rank copies both
                // directions, so a step costs about twice a one-way transfer of the same bytes. It is the slope over
                // 1-4 MiB, not a time over its bytes: a large message's fixed costs (the rendezvous handshake, the
                // first chunk's latency) are paid once per message, and charged per byte they over-predicted a 4 MiB
                // all-reduce by 1.5-2x. A least-squares fit over four sizes, as two sizes scattered 1/β by 6x.
                final int maxMib = BETA_MIB[BETA_MIB.length - 1];
                final ByteBuffer in = acquire(big * maxMib);
                final ByteBuffer out = acquire(big * maxMib);
                final double[] ns = new double[BETA_MIB.length];
                for (int k = 0; k < BETA_MIB.length; k++) {
                    ns[k] = medianExchangeNs(seq, step, peer, BufferUtil.address(out), BufferUtil.address(in),
                        BETA_MIB[k] * big);
                    step += 2 * (2 + EXCHANGE_REPS);
                }
                // noisy medians could make the slope tiny or negative: never below half the largest size's average
                beta = Math.max(CostModel.fitLine(BETA_MIB, ns)[1] / 1e9 / big,
                    0.5 * ns[ns.length - 1] / 1e9 / ((double) maxMib * big));
                gammaOnReceive = gammaOnReceive(seq, step, peer, in, out, 2 * big);
                release(in);
                release(out);
            }
            release(buf);
            if (rank == 0) {
                params.putDouble(0, alpha).putDouble(8, beta).putDouble(16, Math.max(measureGamma(), gammaOnReceive));
            }
            broadcastBinomial(seq, 1 << 20, BufferUtil.address(params), 24, 0);
        } else {
            params.putDouble(0, CostModel.DEFAULT.alpha()).putDouble(8, CostModel.DEFAULT.beta())
                .putDouble(16, CostModel.DEFAULT.gamma());
        }
        return new CostModel(params.getDouble(0), params.getDouble(8), params.getDouble(16));
    }

    /**
     * γ as collectives pay it, in seconds per byte: what adding the received floats in costs over receiving them. The
     * reduction runs on the receive path, chunk by chunk, on data another core just wrote; a local pass over buffers
     * this core wrote ran 2-5x faster and priced a 4 MiB ring all-reduce 15-30% short. Plain and reducing exchanges
     * are timed in pairs and the median difference taken: two medians taken one after the other drifted apart with
     * the machine's load. Uses steps {@code step .. step + 2 * (2 + GAMMA_PAIRS)}.
     */
    private double gammaOnReceive(long seq, int step, int peer, ByteBuffer in, ByteBuffer out, int bytes) {
        final long inAddress = BufferUtil.address(in);
        final long outAddress = BufferUtil.address(out);
        new UnsafeBuffer(in).setMemory(0, bytes, (byte) 0); // zeros: no denormals on the way
        new UnsafeBuffer(out).setMemory(0, bytes, (byte) 0);
        final long[] extra = new long[GAMMA_PAIRS];
        for (int i = 0; i < 2 + GAMMA_PAIRS; i++) {
            final long t0 = System.nanoTime();
            awaitAll(irecv(seq, step, peer, inAddress, bytes), isend(seq, step, peer, outAddress, bytes));
            final long t1 = System.nanoTime();
            awaitAll(irecvReduce(seq, step + 1, peer, inAddress, bytes, DataType.FLOAT32, ReduceOp.SUM, true),
                isend(seq, step + 1, peer, outAddress, bytes));
            final long t2 = System.nanoTime();
            if (i >= 2) {
                extra[i - 2] = (t2 - t1) - (t1 - t0);
            }
            step += 2;
        }
        Arrays.sort(extra);
        return Math.max(0, extra[GAMMA_PAIRS / 2]) / 1e9 / bytes;
    }

    private void pingPong(long seq, int step, int peer, long address, long bytes) {
        if (rank == 0) {
            final Request r = irecv(seq, step + 1, peer, address, bytes);
            isend(seq, step, peer, address, bytes).await(spin(), yields());
            r.await(spin(), yields());
        } else {
            irecv(seq, step, peer, address, bytes).await(spin(), yields());
            isend(seq, step + 1, peer, address, bytes).await(spin(), yields());
        }
    }

    private double measureGamma() {
        // Buffers larger than the caches and the median, as collectives meet them: the best of five passes over
        // 256 KiB gave 13-14 GB/s, twice what a 2 MiB step of a 4 MiB ring all-reduce reduces at.
        final int bytes = 4 << 20;
        final ByteBuffer a = acquire(bytes);
        final ByteBuffer b = acquire(bytes);
        final long aa = BufferUtil.address(a);
        final long ba = BufferUtil.address(b);
        final long[] t = new long[5];
        for (int i = 0; i < t.length; i++) {
            final long t0 = System.nanoTime();
            Reductions.combine(DataType.FLOAT32, ReduceOp.SUM, aa, ba, bytes / 4, true);
            t[i] = System.nanoTime() - t0;
        }
        release(a);
        release(b);
        Arrays.sort(t);
        return t[t.length / 2] / 1e9 / bytes;
    }

    // =================================================================== accessors

    /** This process's rank in this communicator. */
    public int rank() {
        return rank;
    }

    /** Number of ranks in this communicator. */
    public int size() {
        return size;
    }

    /** The world rank of {@code rank} in this communicator. */
    public int worldRank(int rank) {
        return group[rank];
    }

    /** The α-β-γ figures this communicator chooses algorithms with. */
    public CostModel costModel() {
        return costModel;
    }

    /** Replaces the cost model; call with the same figures on every rank. */
    public void costModel(CostModel model) {
        this.costModel = model;
    }

    /** Frames dropped by the decoder on this rank since connect. */
    public long malformedFrames() {
        return transport.malformedFrames();
    }

    /** The failure that stopped this communicator, or null while it is healthy. */
    public CommException failure() {
        return transport.failure();
    }

    /** Aborts the job: every pending and later operation on every rank fails with {@link CommAbortedException}. */
    public void abort(String reason) {
        transport.abort(reason);
    }

    // =================================================================== point-to-point

    /** Sends {@code buf} (position to limit) to {@code dest} with {@code tag >= 0}; returns when the buffer may be reused. */
    public void send(ByteBuffer buf, int dest, int tag) {
        send(address(buf), buf.remaining(), dest, tag);
    }

    /** Sends {@code length} bytes at {@code address}. */
    public void send(long address, long length, int dest, int tag) {
        isendRequest(address, length, dest, tag).await(spin(), yields());
    }

    /** Non-blocking send; the future completes when the buffer may be reused. */
    public CompletableFuture<Void> isend(ByteBuffer buf, int dest, int tag) {
        return isend(address(buf), buf.remaining(), dest, tag);
    }

    /** Non-blocking send of raw memory. */
    public CompletableFuture<Void> isend(long address, long length, int dest, int tag) {
        return isendRequest(address, length, dest, tag).toFuture(async);
    }

    /** Receives into {@code buf} (position to limit) from {@code source}; returns the bytes received. */
    public long recv(ByteBuffer buf, int source, int tag) {
        return recv(address(buf), buf.remaining(), source, tag);
    }

    /** Receives at most {@code capacity} bytes into {@code address}; returns the bytes received. */
    public long recv(long address, long capacity, int source, int tag) {
        final Request r = irecvRequest(address, capacity, source, tag);
        r.await(spin(), yields());
        return r.length;
    }

    /** Non-blocking receive; the future yields the number of bytes received. */
    public CompletableFuture<Long> irecv(ByteBuffer buf, int source, int tag) {
        return irecv(address(buf), buf.remaining(), source, tag);
    }

    /** Non-blocking receive into raw memory. */
    public CompletableFuture<Long> irecv(long address, long capacity, int source, int tag) {
        final Request r = irecvRequest(address, capacity, source, tag);
        return r.toFuture(async).thenApply(v -> r.length);
    }

    /** Sends a float array. */
    public void send(float[] data, int dest, int tag) {
        final ByteBuffer b = acquire(data.length * 4L);
        b.asFloatBuffer().put(data);
        try {
            send(BufferUtil.address(b), data.length * 4L, dest, tag);
        } finally {
            release(b);
        }
    }

    /** Receives into a float array; returns the number of elements received. */
    public int recv(float[] data, int source, int tag) {
        final ByteBuffer b = acquire(data.length * 4L);
        try {
            final long n = recv(BufferUtil.address(b), data.length * 4L, source, tag);
            b.asFloatBuffer().get(data, 0, (int) (n / 4));
            return (int) (n / 4);
        } finally {
            release(b);
        }
    }

    private Request isendRequest(long address, long length, int dest, int tag) {
        checkPeer(dest, "dest");
        checkTag(tag);
        return transport.send(TYPE_P2P, commId, 0, tag, group[dest], address, length);
    }

    private Request irecvRequest(long address, long capacity, int source, int tag) {
        checkPeer(source, "source");
        checkTag(tag);
        return transport.recv(TYPE_P2P, commId, 0, tag, group[source], address, capacity);
    }

    // =================================================================== collectives: public API

    /** Blocks until every rank has entered the barrier. */
    public void barrier() {
        barrier(nextSequence());
    }

    /** Non-blocking barrier. */
    public CompletableFuture<Void> ibarrier() {
        final long s = nextSequence();
        return runAsync(() -> barrier(s));
    }

    /** Broadcasts {@code buf} (position to limit, same length on every rank) from {@code root}. */
    public void broadcast(ByteBuffer buf, int root) {
        broadcast(address(buf), buf.remaining(), root, Algorithm.AUTO);
    }

    /** Broadcasts raw memory with a chosen algorithm (BINOMIAL_TREE, CHAIN or AUTO). */
    public void broadcast(long address, long length, int root, Algorithm algorithm) {
        checkPeer(root, "root");
        broadcast(nextSequence(), address, length, root, algorithm);
    }

    /** Non-blocking broadcast. */
    public CompletableFuture<Void> ibroadcast(ByteBuffer buf, int root) {
        checkPeer(root, "root");
        final long s = nextSequence();
        final long a = address(buf);
        final long n = buf.remaining();
        return runAsync(() -> broadcast(s, a, n, root, Algorithm.AUTO));
    }

    /** Broadcasts a float array. */
    public void broadcast(float[] data, int root) {
        withArray(data, (a, n) -> broadcast(a, n, root, Algorithm.AUTO));
    }

    /** Broadcasts a double array. */
    public void broadcast(double[] data, int root) {
        withArray(data, (a, n) -> broadcast(a, n, root, Algorithm.AUTO));
    }

    /** Broadcasts an int array. */
    public void broadcast(int[] data, int root) {
        withArray(data, (a, n) -> broadcast(a, n, root, Algorithm.AUTO));
    }

    /** Broadcasts a long array. */
    public void broadcast(long[] data, int root) {
        withArray(data, (a, n) -> broadcast(a, n, root, Algorithm.AUTO));
    }

    /** Broadcasts a byte array. */
    public void broadcast(byte[] data, int root) {
        withArray(data, (a, n) -> broadcast(a, n, root, Algorithm.AUTO));
    }

    /** Reduces {@code buf} onto {@code root} in place; other ranks' buffers are left unchanged. */
    public void reduce(ByteBuffer buf, DataType type, ReduceOp op, int root) {
        reduce(address(buf), buf.remaining(), type, op, root);
    }

    /** Reduces raw memory onto {@code root}. */
    public void reduce(long address, long length, DataType type, ReduceOp op, int root) {
        checkPeer(root, "root");
        elements(length, type);
        reduce(nextSequence(), address, length, type, op, root);
    }

    /** Non-blocking reduce. */
    public CompletableFuture<Void> ireduce(ByteBuffer buf, DataType type, ReduceOp op, int root) {
        checkPeer(root, "root");
        elements(buf.remaining(), type);
        final long s = nextSequence();
        final long a = address(buf);
        final long n = buf.remaining();
        return runAsync(() -> reduce(s, a, n, type, op, root));
    }

    /** Reduces a float array onto {@code root}. */
    public void reduce(float[] data, ReduceOp op, int root) {
        withArray(data, (a, n) -> reduce(a, n, DataType.FLOAT32, op, root));
    }

    /** All-reduces {@code buf} (position to limit, whole elements of {@code type}) in place. */
    public void allReduce(ByteBuffer buf, DataType type, ReduceOp op) {
        allReduce(address(buf), buf.remaining(), type, op, Algorithm.AUTO);
    }

    /** All-reduces in place with a chosen algorithm. */
    public void allReduce(ByteBuffer buf, DataType type, ReduceOp op, Algorithm algorithm) {
        allReduce(address(buf), buf.remaining(), type, op, algorithm);
    }

    /** All-reduces raw memory in place. */
    public void allReduce(long address, long length, DataType type, ReduceOp op, Algorithm algorithm) {
        elements(length, type);
        final Algorithm a = resolveAllReduce(length, algorithm);
        final long seq = nextSequence();
        allReduce(seq, a == Algorithm.SHARED_MEMORY ? host().ticket() : -1, address, length, type, op, a);
    }

    /** Non-blocking all-reduce. */
    public CompletableFuture<Void> iallReduce(ByteBuffer buf, DataType type, ReduceOp op) {
        elements(buf.remaining(), type);
        final long a = address(buf);
        final long n = buf.remaining();
        final Algorithm alg = resolveAllReduce(n, Algorithm.AUTO);
        final long s = nextSequence();
        final long ticket = alg == Algorithm.SHARED_MEMORY ? host().ticket() : -1;
        return runAsync(() -> allReduce(s, ticket, a, n, type, op, alg));
    }

    /**
     * The algorithm an all-reduce of {@code length} bytes runs: the requested one, or for AUTO shared memory when
     * every rank shares this host and the message is at least {@link Context#sharedMemoryMinBytes()}, else the cost
     * model's choice. The same on every rank: the inputs are.
     */
    private Algorithm resolveAllReduce(long length, Algorithm requested) {
        if (requested == Algorithm.SHARED_MEMORY) {
            if (size > 1 && !allOnThisHost()) {
                throw new IllegalArgumentException("SHARED_MEMORY all-reduce needs every rank on this host");
            }
            return size == 1 ? Algorithm.RING : requested;
        }
        if (requested != Algorithm.AUTO || size == 1) {
            return requested;
        }
        if (host != null && length >= ctx.sharedMemoryMinBytes()) {
            return Algorithm.SHARED_MEMORY;
        }
        return costModel.chooseAllReduce(size, length);
    }

    /** The algorithm an AUTO all-reduce of {@code length} bytes runs here. */
    Algorithm allReduceAlgorithm(long length) {
        return resolveAllReduce(length, Algorithm.AUTO);
    }

    /** The shared-memory collectives of this communicator. */
    private HostCollectives host() {
        if (host == null) {
            throw new IllegalArgumentException("SHARED_MEMORY all-reduce is off (sharedMemoryMinBytes = -1)");
        }
        return host;
    }

    /**
     * Collective, at connect and split: maps the shared-memory segments when every rank shares this host. Eagerly,
     * because mapping takes barriers, which a non-blocking first operation must not wait for; the files are sparse
     * until used. The world communicator releases its sub-communicators' segments too when it closes.
     */
    private void mapHostSegments() {
        if (size > 1 && ctx.sharedMemoryMinBytes() >= 0 && allOnThisHost()) {
            host = HostCollectives.create(this, ctx.sharedMemoryBufferBytes(), ctx.sharedMemoryBuffers(), spins,
                ctx.waitYields(), ctx.operationTimeoutMs());
            world.hostSegments.add(host);
        }
    }

    /** All-reduces a float array. */
    public void allReduce(float[] data, ReduceOp op) {
        withArray(data, (a, n) -> allReduce(a, n, DataType.FLOAT32, op, Algorithm.AUTO));
    }

    /** All-reduces a double array. */
    public void allReduce(double[] data, ReduceOp op) {
        withArray(data, (a, n) -> allReduce(a, n, DataType.FLOAT64, op, Algorithm.AUTO));
    }

    /** All-reduces an int array. */
    public void allReduce(int[] data, ReduceOp op) {
        withArray(data, (a, n) -> allReduce(a, n, DataType.INT32, op, Algorithm.AUTO));
    }

    /** All-reduces a long array. */
    public void allReduce(long[] data, ReduceOp op) {
        withArray(data, (a, n) -> allReduce(a, n, DataType.INT64, op, Algorithm.AUTO));
    }

    /**
     * Reduce-scatter: {@code send} holds {@code size} equal blocks; rank i receives the reduction of block i
     * into {@code recv} (one block). {@code send} is left unchanged.
     */
    public void reduceScatter(ByteBuffer send, ByteBuffer recv, DataType type, ReduceOp op) {
        checkReduceScatter(send.remaining(), recv.remaining(), type);
        reduceScatter(nextSequence(), address(send), send.remaining(), address(recv), recv.remaining(), type, op);
    }

    /** Non-blocking reduce-scatter. */
    public CompletableFuture<Void> ireduceScatter(ByteBuffer send, ByteBuffer recv, DataType type, ReduceOp op) {
        checkReduceScatter(send.remaining(), recv.remaining(), type);
        final long s = nextSequence();
        final long sa = address(send);
        final long sn = send.remaining();
        final long ra = address(recv);
        final long rn = recv.remaining();
        return runAsync(() -> reduceScatter(s, sa, sn, ra, rn, type, op));
    }

    /** All-gather: every rank's {@code send} block lands at {@code rank * block} of every rank's {@code recv}. */
    public void allGather(ByteBuffer send, ByteBuffer recv) {
        checkBlocks("allGather: recv", recv.remaining(), send.remaining());
        allGather(nextSequence(), address(send), send.remaining(), address(recv), recv.remaining());
    }

    /** Non-blocking all-gather. */
    public CompletableFuture<Void> iallGather(ByteBuffer send, ByteBuffer recv) {
        checkBlocks("allGather: recv", recv.remaining(), send.remaining());
        final long s = nextSequence();
        final long sa = address(send);
        final long sn = send.remaining();
        final long ra = address(recv);
        final long rn = recv.remaining();
        return runAsync(() -> allGather(s, sa, sn, ra, rn));
    }

    private void checkReduceScatter(long sendLen, long recvLen, DataType type) {
        elements(recvLen, type);
        checkBlocks("reduceScatter: send", sendLen, recvLen);
    }

    private void checkBlocks(String what, long whole, long block) {
        if (whole != block * size) {
            throw new IllegalArgumentException(what + " must hold size * " + block + " = " + block * size
                + " bytes, got " + whole);
        }
    }

    private void checkAllToAll(long sendLen, long recvLen) {
        if (sendLen != recvLen || sendLen % size != 0) {
            throw new IllegalArgumentException("allToAll: send and recv must be equal multiples of size " + size
                + " bytes, got " + sendLen + " and " + recvLen);
        }
    }

    /** All-gathers float arrays: {@code recv.length == size * send.length}. */
    public void allGather(float[] send, float[] recv) {
        if (recv.length != (long) send.length * size) {
            throw new IllegalArgumentException("recv.length must be size * send.length = " + (long) send.length * size
                + ", got " + recv.length);
        }
        final ByteBuffer s = acquire(send.length * 4L);
        final ByteBuffer r = acquire(recv.length * 4L);
        try {
            s.asFloatBuffer().put(send);
            allGather(nextSequence(), BufferUtil.address(s), send.length * 4L, BufferUtil.address(r),
                recv.length * 4L);
            r.asFloatBuffer().get(recv);
        } finally {
            release(s);
            release(r);
        }
    }

    /** Gather: every rank's {@code send} block lands at {@code rank * block} of {@code recv} on {@code root}. */
    public void gather(ByteBuffer send, ByteBuffer recv, int root) {
        checkPeer(root, "root");
        if (rank == root) {
            checkBlocks("gather: recv", recv == null ? 0 : recv.remaining(), send.remaining());
        }
        gather(nextSequence(), address(send), send.remaining(), recv == null ? 0 : address(recv),
            recv == null ? 0 : recv.remaining(), root);
    }

    /** Non-blocking gather. */
    public CompletableFuture<Void> igather(ByteBuffer send, ByteBuffer recv, int root) {
        checkPeer(root, "root");
        if (rank == root) {
            checkBlocks("gather: recv", recv == null ? 0 : recv.remaining(), send.remaining());
        }
        final long s = nextSequence();
        final long sa = address(send);
        final long sn = send.remaining();
        final long ra = recv == null ? 0 : address(recv);
        final long rn = recv == null ? 0 : recv.remaining();
        return runAsync(() -> gather(s, sa, sn, ra, rn, root));
    }

    /** Scatter: block i of {@code send} on {@code root} lands in rank i's {@code recv}. */
    public void scatter(ByteBuffer send, ByteBuffer recv, int root) {
        checkPeer(root, "root");
        if (rank == root) {
            checkBlocks("scatter: send", send == null ? 0 : send.remaining(), recv.remaining());
        }
        scatter(nextSequence(), send == null ? 0 : address(send), send == null ? 0 : send.remaining(),
            address(recv), recv.remaining(), root);
    }

    /** Non-blocking scatter. */
    public CompletableFuture<Void> iscatter(ByteBuffer send, ByteBuffer recv, int root) {
        checkPeer(root, "root");
        if (rank == root) {
            checkBlocks("scatter: send", send == null ? 0 : send.remaining(), recv.remaining());
        }
        final long s = nextSequence();
        final long sa = send == null ? 0 : address(send);
        final long sn = send == null ? 0 : send.remaining();
        final long ra = address(recv);
        final long rn = recv.remaining();
        return runAsync(() -> scatter(s, sa, sn, ra, rn, root));
    }

    /** All-to-all: block j of {@code send} goes to rank j and lands at block {@code rank} of its {@code recv}. */
    public void allToAll(ByteBuffer send, ByteBuffer recv) {
        checkAllToAll(send.remaining(), recv.remaining());
        allToAll(nextSequence(), address(send), send.remaining(), address(recv), recv.remaining());
    }

    /** Non-blocking all-to-all. */
    public CompletableFuture<Void> iallToAll(ByteBuffer send, ByteBuffer recv) {
        checkAllToAll(send.remaining(), recv.remaining());
        final long s = nextSequence();
        final long sa = address(send);
        final long sn = send.remaining();
        final long ra = address(recv);
        final long rn = recv.remaining();
        return runAsync(() -> allToAll(s, sa, sn, ra, rn));
    }

    /**
     * All-to-all with variable counts (all in bytes): {@code sendCounts[j]} bytes at {@code sendDispls[j]} go to
     * rank j, and {@code recvCounts[i]} bytes from rank i land at {@code recvDispls[i]}.
     */
    public void allToAllV(ByteBuffer send, long[] sendCounts, long[] sendDispls, ByteBuffer recv, long[] recvCounts,
                          long[] recvDispls) {
        checkRanges("send", send.remaining(), sendCounts, sendDispls);
        checkRanges("recv", recv.remaining(), recvCounts, recvDispls);
        allToAllV(nextSequence(), address(send), send.remaining(), sendCounts, sendDispls, address(recv),
            recv.remaining(), recvCounts, recvDispls);
    }

    /** Non-blocking all-to-all-v. */
    public CompletableFuture<Void> iallToAllV(ByteBuffer send, long[] sendCounts, long[] sendDispls, ByteBuffer recv,
                                              long[] recvCounts, long[] recvDispls) {
        checkRanges("send", send.remaining(), sendCounts, sendDispls);
        checkRanges("recv", recv.remaining(), recvCounts, recvDispls);
        final long s = nextSequence();
        final long sa = address(send);
        final long sn = send.remaining();
        final long ra = address(recv);
        final long rn = recv.remaining();
        final long[] sc = sendCounts.clone();
        final long[] sd = sendDispls.clone();
        final long[] rc = recvCounts.clone();
        final long[] rd = recvDispls.clone();
        return runAsync(() -> allToAllV(s, sa, sn, sc, sd, ra, rn, rc, rd));
    }

    /**
     * Splits this communicator: ranks passing the same {@code color >= 0} form a new communicator, ordered by
     * {@code key} then by rank here. A negative color returns null. Collective over this communicator.
     */
    public Communicator split(int color, int key) {
        final long seq = nextSequence();
        final ByteBuffer mine = ByteBuffer.allocateDirect(8).order(ByteOrder.LITTLE_ENDIAN);
        mine.putInt(0, color).putInt(4, key);
        final ByteBuffer all = ByteBuffer.allocateDirect(8 * size).order(ByteOrder.LITTLE_ENDIAN);
        allGather(seq, BufferUtil.address(mine), 8, BufferUtil.address(all), 8L * size);
        if (color < 0) {
            return null;
        }
        final List<int[]> members = new ArrayList<>();
        for (int r = 0; r < size; r++) {
            if (all.getInt(8 * r) == color) {
                members.add(new int[]{all.getInt(8 * r + 4), r});
            }
        }
        members.sort((x, y) -> x[0] != y[0] ? Integer.compare(x[0], y[0]) : Integer.compare(x[1], y[1]));
        final int[] newGroup = new int[members.size()];
        int newRank = -1;
        for (int i = 0; i < newGroup.length; i++) {
            newGroup[i] = group[members.get(i)[1]];
            if (members.get(i)[1] == rank) {
                newRank = i;
            }
        }
        long h = commId * 0x9E3779B97F4A7C15L + seq * 0xC2B2AE3D27D4EB4FL + color * 0x165667B19E3779F9L;
        h ^= h >>> 31;
        h *= 0xBF58476D1CE4E5B9L;
        h ^= h >>> 29;
        int id = (int) (h & 0x7FFFFFFF);
        if (id <= WORLD_ID) {
            id += 2;
        }
        final Communicator sub = new Communicator(transport, world, id, newGroup, newRank, ctx, async, scratch);
        sub.costModel = costModel;
        sub.spins = spins;
        sub.sameHost = sameHost;
        sub.mapHostSegments();
        return sub;
    }

    // =================================================================== algorithms

    private void barrier(long seq) {
        int step = 0;
        for (int d = 1; d < size; d <<= 1) {
            final Request r = irecv(seq, step, (rank - d + size) % size, 0, 0);
            final Request s = isend(seq, step, (rank + d) % size, 0, 0);
            awaitAll(r, s);
            step++;
        }
    }

    private void broadcast(long seq, long address, long length, int root, Algorithm algorithm) {
        checkPeer(root, "root");
        if (size == 1) {
            return;
        }
        Algorithm a = algorithm == Algorithm.AUTO ? costModel.chooseBroadcast(size, length) : algorithm;
        if (a == Algorithm.CHAIN) {
            broadcastChain(seq, address, length, root, costModel.chainSegments(size, length));
        } else if (a == Algorithm.BINOMIAL_TREE) {
            broadcastBinomial(seq, 0, address, length, root);
        } else {
            throw new IllegalArgumentException("broadcast supports BINOMIAL_TREE, CHAIN or AUTO, not " + algorithm);
        }
    }

    private void broadcastBinomial(long seq, int step, long address, long length, int root) {
        final int vr = (rank - root + size) % size;
        int mask = 1;
        while (mask < size) {
            if ((vr & mask) != 0) {
                irecv(seq, step, (vr - mask + root) % size, address, length).await(spin(), yields());
                break;
            }
            mask <<= 1;
        }
        mask >>= 1;
        final List<Request> sends = new ArrayList<>();
        while (mask > 0) {
            if (vr + mask < size) {
                sends.add(isend(seq, step, (vr + mask + root) % size, address, length));
            }
            mask >>= 1;
        }
        awaitAll(sends.toArray(new Request[0]));
    }

    /** Chain broadcast in k segments; segment i is forwarded as soon as it has arrived (pipelining). */
    void broadcastChain(long seq, long address, long length, int root, int segments) {
        final int vr = (rank - root + size) % size;
        final long seg = Math.max(1, (length + segments - 1) / segments);
        final int k = (int) Math.max(1, (length + seg - 1) / seg);
        final int next = vr + 1 < size ? (vr + 1 + root) % size : -1;
        final int prev = (vr - 1 + root + size) % size;
        final Request[] recvs = new Request[k];
        final Request[] sends = new Request[k];
        if (vr != 0) {
            for (int i = 0; i < k; i++) {
                final long off = i * seg;
                recvs[i] = irecv(seq, i, prev, address + off, Math.min(seg, length - off));
            }
        }
        for (int i = 0; i < k; i++) {
            final long off = i * seg;
            if (recvs[i] != null) {
                recvs[i].await(spin(), yields());
            }
            if (next >= 0) {
                sends[i] = isend(seq, i, next, address + off, Math.max(0, Math.min(seg, length - off)));
            }
        }
        awaitAll(sends);
    }

    private void reduce(long seq, long address, long length, DataType type, ReduceOp op, int root) {
        checkPeer(root, "root");
        final long count = elements(length, type);
        final int vr = (rank - root + size) % size;
        ByteBuffer acc = null;
        long accAddr = address;
        try {
            if (vr != 0) {
                acc = acquire(length);
                accAddr = BufferUtil.address(acc);
                Reductions.copy(address, accAddr, length);
            }
            int mask = 1;
            int step = 0;
            while (mask < size) {
                if ((vr & mask) == 0) {
                    final int src = vr | mask;
                    if (src < size) {
                        irecvReduce(seq, step, (src + root) % size, accAddr, length, type, op, false).await(spin(), yields());
                    }
                } else {
                    isend(seq, step, ((vr & ~mask) + root) % size, accAddr, length).await(spin(), yields());
                    break;
                }
                mask <<= 1;
                step++;
            }
            if (vr == 0 && op == ReduceOp.AVG) {
                Reductions.divide(type, address, count, size);
            }
        } finally {
            if (acc != null) {
                release(acc);
            }
        }
    }

    private void allReduce(long seq, long ticket, long address, long length, DataType type, ReduceOp op,
                           Algorithm algorithm) {
        final long count = elements(length, type);
        if (size == 1) {
            return;
        }
        switch (algorithm) {
            case SHARED_MEMORY -> host.allReduce(ticket, address, count, type, op);
            case RING -> allReduceRing(seq, address, count, type, op);
            case RECURSIVE_DOUBLING -> allReduceRecursiveDoubling(seq, address, count, type, op);
            case RABENSEIFNER -> allReduceRabenseifner(seq, address, count, type, op);
            default -> throw new IllegalArgumentException(
                "all-reduce supports RING, RECURSIVE_DOUBLING, RABENSEIFNER, SHARED_MEMORY or AUTO, not " + algorithm);
        }
    }

    private static long segStart(long count, int n, int i) {
        return count * i / n;
    }

    private void allReduceRing(long seq, long address, long count, DataType type, ReduceOp op) {
        final int n = size;
        final int es = type.size();
        final int left = (rank - 1 + n) % n;
        final int right = (rank + 1) % n;
        for (int s = 0; s < n - 1; s++) {
            final int sendSeg = ((rank - s) % n + n) % n;
            final int recvSeg = ((rank - s - 1) % n + n) % n;
            final long rs = segStart(count, n, recvSeg);
            final long ss = segStart(count, n, sendSeg);
            final Request r = irecvReduce(seq, s, left, address + rs * es,
                (segStart(count, n, recvSeg + 1) - rs) * es, type, op, true);
            final Request w = isend(seq, s, right, address + ss * es, (segStart(count, n, sendSeg + 1) - ss) * es);
            awaitAll(r, w);
        }
        final int owned = (rank + 1) % n;
        if (op == ReduceOp.AVG) {
            final long os = segStart(count, n, owned);
            Reductions.divide(type, address + os * es, segStart(count, n, owned + 1) - os, n);
        }
        ringAllGatherSegments(seq, n, address, count, es, owned);
    }

    /** Ring all-gather of segments; this rank starts owning segment {@code owned}. */
    private void ringAllGatherSegments(long seq, int stepBase, long address, long count, int es, int owned) {
        final int n = size;
        final int left = (rank - 1 + n) % n;
        final int right = (rank + 1) % n;
        int sendSeg = owned;
        for (int s = 0; s < n - 1; s++) {
            final int recvSeg = (sendSeg - 1 + n) % n;
            final long rs = segStart(count, n, recvSeg);
            final long ss = segStart(count, n, sendSeg);
            final Request r = irecv(seq, stepBase + s, left, address + rs * es,
                (segStart(count, n, recvSeg + 1) - rs) * es);
            final Request w = isend(seq, stepBase + s, right, address + ss * es,
                (segStart(count, n, sendSeg + 1) - ss) * es);
            awaitAll(r, w);
            sendSeg = recvSeg;
        }
    }

    private int realRank(int newRank, int rem) {
        return newRank < rem ? newRank * 2 + 1 : newRank + rem;
    }

    /** Folds a non-power-of-two group onto its largest power of two; returns the new rank or -1 (idle). */
    private int foldIn(long seq, long address, long length, DataType type, ReduceOp op, int rem) {
        if (rank < 2 * rem) {
            if (rank % 2 == 0) {
                isend(seq, 0, rank + 1, address, length).await(spin(), yields());
                return -1;
            }
            irecvReduce(seq, 0, rank - 1, address, length, type, op, true).await(spin(), yields());
            return rank / 2;
        }
        return rank - rem;
    }

    private void foldOut(long seq, long address, long length, int rem) {
        if (rank < 2 * rem) {
            if (rank % 2 == 1) {
                isend(seq, 9999, rank - 1, address, length).await(spin(), yields());
            } else {
                irecv(seq, 9999, rank + 1, address, length).await(spin(), yields());
            }
        }
    }

    private void allReduceRecursiveDoubling(long seq, long address, long count, DataType type, ReduceOp op) {
        final long length = count * type.size();
        final int p2 = Integer.highestOneBit(size);
        final int rem = size - p2;
        final int newRank = foldIn(seq, address, length, type, op, rem);
        if (newRank >= 0) {
            final ByteBuffer tmp = acquire(length);
            try {
                final long t = BufferUtil.address(tmp);
                int step = 1;
                for (int mask = 1; mask < p2; mask <<= 1) {
                    final int partner = realRank(newRank ^ mask, rem);
                    final Request r = irecv(seq, step, partner, t, length);
                    final Request s = isend(seq, step, partner, address, length);
                    awaitAll(r, s);
                    Reductions.combine(type, op, t, address, count, partner < rank);
                    step++;
                }
            } finally {
                release(tmp);
            }
            if (op == ReduceOp.AVG) {
                Reductions.divide(type, address, count, size);
            }
        }
        foldOut(seq, address, length, rem);
    }

    private void allReduceRabenseifner(long seq, long address, long count, DataType type, ReduceOp op) {
        final int es = type.size();
        final long length = count * es;
        final int p2 = Integer.highestOneBit(size);
        final int rem = size - p2;
        final int newRank = foldIn(seq, address, length, type, op, rem);
        if (newRank >= 0) {
            final int levels = Integer.numberOfTrailingZeros(p2);
            final long[] los = new long[levels];
            final long[] his = new long[levels];
            long lo = 0;
            long hi = count;
            int level = 0;
            int step = 1;
            for (int mask = p2 >> 1; mask >= 1; mask >>= 1) {
                final int newPartner = newRank ^ mask;
                final int partner = realRank(newPartner, rem);
                final long mid = lo + (hi - lo) / 2;
                los[level] = lo;
                his[level] = hi;
                level++;
                final long keepLo = newRank < newPartner ? lo : mid;
                final long keepHi = newRank < newPartner ? mid : hi;
                final long sendLo = newRank < newPartner ? mid : lo;
                final long sendHi = newRank < newPartner ? hi : mid;
                final Request r = irecvReduce(seq, step, partner, address + keepLo * es, (keepHi - keepLo) * es, type,
                    op, partner < rank);
                final Request s = isend(seq, step, partner, address + sendLo * es, (sendHi - sendLo) * es);
                awaitAll(r, s);
                lo = keepLo;
                hi = keepHi;
                step++;
            }
            if (op == ReduceOp.AVG) {
                Reductions.divide(type, address + lo * es, hi - lo, size);
            }
            for (int mask = 1; mask < p2; mask <<= 1) {
                level--;
                final int partner = realRank(newRank ^ mask, rem);
                final long plo = los[level];
                final long phi = his[level];
                final long otherLo = lo == plo ? hi : plo;
                final long otherHi = lo == plo ? phi : lo;
                final Request r = irecv(seq, step, partner, address + otherLo * es, (otherHi - otherLo) * es);
                final Request s = isend(seq, step, partner, address + lo * es, (hi - lo) * es);
                awaitAll(r, s);
                lo = plo;
                hi = phi;
                step++;
            }
        }
        foldOut(seq, address, length, rem);
    }

    private void reduceScatter(long seq, long sendAddr, long sendLen, long recvAddr, long recvLen, DataType type,
                               ReduceOp op) {
        final int es = type.size();
        if (sendLen != recvLen * size) {
            throw new IllegalArgumentException("reduceScatter: send must hold size * recv bytes = " + recvLen * size
                + ", got " + sendLen);
        }
        final long block = elements(recvLen, type);
        final int n = size;
        final ByteBuffer work = acquire(sendLen);
        try {
            final long w = BufferUtil.address(work);
            Reductions.copy(sendAddr, w, sendLen);
            final int left = (rank - 1 + n) % n;
            final int right = (rank + 1) % n;
            for (int s = 0; s < n - 1; s++) {
                final int sendSeg = ((rank - s - 1) % n + n) % n;
                final int recvSeg = ((rank - s - 2) % n + n) % n;
                final Request r = irecvReduce(seq, s, left, w + recvSeg * block * es, block * es, type, op, true);
                final Request x = isend(seq, s, right, w + sendSeg * block * es, block * es);
                awaitAll(r, x);
            }
            if (op == ReduceOp.AVG) {
                Reductions.divide(type, w + rank * block * es, block, n);
            }
            Reductions.copy(w + rank * block * es, recvAddr, block * es);
        } finally {
            release(work);
        }
    }

    private void allGather(long seq, long sendAddr, long block, long recvAddr, long recvLen) {
        if (recvLen != block * size) {
            throw new IllegalArgumentException("allGather: recv must hold size * send bytes = " + block * size
                + ", got " + recvLen);
        }
        Reductions.copy(sendAddr, recvAddr + rank * block, block);
        final int n = size;
        final int left = (rank - 1 + n) % n;
        final int right = (rank + 1) % n;
        for (int s = 0; s < n - 1; s++) {
            final int sendSlot = ((rank - s) % n + n) % n;
            final int recvSlot = ((rank - s - 1) % n + n) % n;
            final Request r = irecv(seq, s, left, recvAddr + recvSlot * block, block);
            final Request w = isend(seq, s, right, recvAddr + sendSlot * block, block);
            awaitAll(r, w);
        }
    }

    private void gather(long seq, long sendAddr, long block, long recvAddr, long recvLen, int root) {
        checkPeer(root, "root");
        if (rank != root) {
            isend(seq, 0, root, sendAddr, block).await(spin(), yields());
            return;
        }
        if (recvLen != block * size) {
            throw new IllegalArgumentException("gather: recv must hold size * send bytes = " + block * size
                + ", got " + recvLen);
        }
        final Request[] rs = new Request[size];
        for (int p = 0; p < size; p++) {
            if (p != rank) {
                rs[p] = irecv(seq, 0, p, recvAddr + p * block, block);
            }
        }
        Reductions.copy(sendAddr, recvAddr + rank * block, block);
        awaitAll(rs);
    }

    private void scatter(long seq, long sendAddr, long sendLen, long recvAddr, long block, int root) {
        checkPeer(root, "root");
        if (rank != root) {
            irecv(seq, 0, root, recvAddr, block).await(spin(), yields());
            return;
        }
        if (sendLen != block * size) {
            throw new IllegalArgumentException("scatter: send must hold size * recv bytes = " + block * size
                + ", got " + sendLen);
        }
        final Request[] ss = new Request[size];
        for (int p = 0; p < size; p++) {
            if (p != rank) {
                ss[p] = isend(seq, 0, p, sendAddr + p * block, block);
            }
        }
        Reductions.copy(sendAddr + rank * block, recvAddr, block);
        awaitAll(ss);
    }

    private void allToAll(long seq, long sendAddr, long sendLen, long recvAddr, long recvLen) {
        if (sendLen != recvLen || sendLen % size != 0) {
            throw new IllegalArgumentException("allToAll: send and recv must be equal multiples of size " + size
                + " bytes, got " + sendLen + " and " + recvLen);
        }
        final long block = sendLen / size;
        final long[] counts = new long[size];
        final long[] displs = new long[size];
        for (int p = 0; p < size; p++) {
            counts[p] = block;
            displs[p] = p * block;
        }
        allToAllV(seq, sendAddr, sendLen, counts, displs, recvAddr, recvLen, counts, displs);
    }

    private void allToAllV(long seq, long sendAddr, long sendLen, long[] sendCounts, long[] sendDispls, long recvAddr,
                           long recvLen, long[] recvCounts, long[] recvDispls) {
        checkRanges("send", sendLen, sendCounts, sendDispls);
        checkRanges("recv", recvLen, recvCounts, recvDispls);
        Reductions.copy(sendAddr + sendDispls[rank], recvAddr + recvDispls[rank],
            Math.min(sendCounts[rank], recvCounts[rank]));
        for (int s = 1; s < size; s++) {
            final int dst = (rank + s) % size;
            final int src = (rank - s + size) % size;
            final Request r = irecv(seq, 0, src, recvAddr + recvDispls[src], recvCounts[src]);
            final Request w = isend(seq, 0, dst, sendAddr + sendDispls[dst], sendCounts[dst]);
            awaitAll(r, w);
        }
    }

    private void checkRanges(String what, long length, long[] counts, long[] displs) {
        if (counts.length != size || displs.length != size) {
            throw new IllegalArgumentException(what + " counts and displacements need " + size + " entries, got "
                + counts.length + " and " + displs.length);
        }
        for (int p = 0; p < size; p++) {
            if (counts[p] < 0 || displs[p] < 0 || displs[p] + counts[p] > length) {
                throw new IllegalArgumentException(what + " block for rank " + p + " [" + displs[p] + ", +"
                    + counts[p] + ") lies outside the " + length + "-byte buffer");
            }
        }
    }

    // =================================================================== plumbing

    private Request isend(long seq, int step, int peer, long address, long length) {
        return transport.send(TYPE_COLL, commId, seq, step, group[peer], address, length);
    }

    private Request irecv(long seq, int step, int peer, long address, long capacity) {
        return transport.recv(TYPE_COLL, commId, seq, step, group[peer], address, capacity);
    }

    private Request irecvReduce(long seq, int step, int peer, long address, long capacity, DataType type,
                                ReduceOp op, boolean inFirst) {
        return transport.recvReduce(TYPE_COLL, commId, seq, step, group[peer], address, capacity, type, op, inFirst);
    }

    private void awaitAll(Request... requests) {
        CommException first = null;
        for (Request r : requests) {
            if (r == null) {
                continue;
            }
            try {
                r.await(spin(), yields());
            } catch (CommException e) {
                if (first == null) {
                    first = e;
                }
            }
        }
        if (first != null) {
            throw first;
        }
    }

    private long spin() {
        return spins;
    }

    private long yields() {
        return ctx.waitYields();
    }

    private long nextSequence() {
        if (closed) {
            throw new CommException("communicator " + commId + " on rank " + rank + " is closed");
        }
        final CommException f = transport.failure();
        if (f != null) {
            throw f;
        }
        return sequence.getAndIncrement();
    }

    private CompletableFuture<Void> runAsync(Runnable body) {
        return CompletableFuture.runAsync(body, async);
    }

    private void checkPeer(int peer, String what) {
        if (peer < 0 || peer >= size) {
            throw new IllegalArgumentException(what + " " + peer + " is not a rank of this communicator [0, " + size
                + ")");
        }
    }

    private static void checkTag(int tag) {
        if (tag < 0) {
            throw new IllegalArgumentException("tag must be >= 0: " + tag);
        }
    }

    private static long elements(long length, DataType type) {
        if (length % type.size() != 0) {
            throw new IllegalArgumentException(length + " bytes is not a whole number of " + type + " elements");
        }
        return length / type.size();
    }

    static long address(ByteBuffer buf) {
        if (!buf.isDirect()) {
            throw new IllegalArgumentException("heap ByteBuffer: use a direct buffer or the array overloads");
        }
        return BufferUtil.address(buf) + buf.position();
    }

    ByteBuffer acquire(long bytes) {
        if (bytes > Integer.MAX_VALUE - 64) {
            throw new IllegalArgumentException("scratch of " + bytes + " bytes is too large");
        }
        for (ByteBuffer b : scratch) {
            if (b.capacity() >= bytes && scratch.remove(b)) {
                b.clear();
                return b;
            }
        }
        return ByteBuffer.allocateDirect((int) Math.max(64, bytes)).order(ByteOrder.nativeOrder());
    }

    void release(ByteBuffer b) {
        if (scratch.size() < 8) {
            scratch.add(b);
        }
    }

    private interface MemoryBody {
        void run(long address, long length);
    }

    private void withArray(Object array, MemoryBody body) {
        final long bytes;
        final ByteBuffer b;
        if (array instanceof float[] a) {
            bytes = a.length * 4L;
            b = acquire(bytes);
            b.asFloatBuffer().put(a);
        } else if (array instanceof double[] a) {
            bytes = a.length * 8L;
            b = acquire(bytes);
            b.asDoubleBuffer().put(a);
        } else if (array instanceof int[] a) {
            bytes = a.length * 4L;
            b = acquire(bytes);
            b.asIntBuffer().put(a);
        } else if (array instanceof long[] a) {
            bytes = a.length * 8L;
            b = acquire(bytes);
            b.asLongBuffer().put(a);
        } else {
            final byte[] a = (byte[]) array;
            bytes = a.length;
            b = acquire(bytes);
            b.put(0, a);
        }
        try {
            body.run(BufferUtil.address(b), bytes);
            if (array instanceof float[] a) {
                b.asFloatBuffer().get(a);
            } else if (array instanceof double[] a) {
                b.asDoubleBuffer().get(a);
            } else if (array instanceof int[] a) {
                b.asIntBuffer().get(a);
            } else if (array instanceof long[] a) {
                b.asLongBuffer().get(a);
            } else {
                b.get(0, (byte[]) array);
            }
        } finally {
            release(b);
        }
    }

    Transport transport() {
        return transport;
    }

    /** Whether every rank of this communicator shares this rank's host (and media driver). */
    public boolean allOnThisHost() {
        for (int w : group) {
            if (!sameHost[w]) {
                return false;
            }
        }
        return true;
    }

    /** Whether {@code rank} of this communicator shares this rank's host. */
    boolean sameHostAs(int rank) {
        return sameHost[group[rank]];
    }

    /** The context this communicator was connected with. */
    Context context() {
        return ctx;
    }

    /** A fresh sequence number of this communicator (collective: every rank must call it in the same order). */
    long takeSequence() {
        return nextSequence();
    }

    int ipcStreamId() {
        return ipcStreamId;
    }

    int communicatorId() {
        return commId;
    }

    /** Closes this communicator; closing the world communicator stops the transport and its media driver. */
    @Override
    public void close() {
        if (closed) {
            return;
        }
        closed = true;
        if (host != null) {
            host.close();
        }
        if (world == this) {
            hostSegments.forEach(HostCollectives::close);
            transport.close();
            async.shutdownNow();
        }
    }

    // =================================================================== context

    /**
     * Settings of a communicator. Every field has a default from a system property ({@code poniard.comm.*}) or
     * the launcher's environment (see {@link RankEnvironment}).
     */
    public static final class Context {
        private int rank = -1;
        private int size = -1;
        private String coordinatorHost;
        private int coordinatorPort = -1;
        private byte[] secret;
        private String aeronDirectoryName = System.getProperty("poniard.comm.aeronDir");
        private Boolean launchDriver;
        private String bindAddress = System.getProperty("poniard.comm.bindAddress");
        private int termLength = Integer.getInteger("poniard.comm.termLength", 4 << 20);
        private int ipcMtu = Integer.getInteger("poniard.comm.ipcMtu", 65504);
        private int udpMtu = Integer.getInteger("poniard.comm.udpMtu", 8192);
        private int chunkLength = Integer.getInteger("poniard.comm.chunkLength", 65536 - 128);
        private long heartbeatIntervalMs = Long.getLong("poniard.comm.heartbeatIntervalMs", 250);
        private long failureTimeoutMs = Long.getLong("poniard.comm.failureTimeoutMs", 3000);
        private long operationTimeoutMs = Long.getLong("poniard.comm.operationTimeoutMs", 300_000);
        private long rendezvousTimeoutMs = Long.getLong("poniard.comm.rendezvousTimeoutMs", 60_000);
        private long unexpectedBudget = Long.getLong("poniard.comm.unexpectedBudget", 64L << 20);
        private long maxMessageLength = Long.getLong("poniard.comm.maxMessageLength", (long) Integer.MAX_VALUE - 64);
        private long waitSpins = Long.getLong("poniard.comm.waitSpins", -1);
        private long waitYields = Long.getLong("poniard.comm.waitYields", 2000);
        private long sharedMemoryMinBytes = Long.getLong("poniard.comm.shmMinBytes", 0);
        private long sharedMemoryBufferBytes = Long.getLong("poniard.comm.shmBufferBytes", 1 << 20);
        private int sharedMemoryBuffers = Integer.getInteger("poniard.comm.shmBuffers", 16);
        private long idleParkNs = Long.getLong("poniard.comm.idleParkNs", 1_000_000);
        private int idleSpins = Integer.getInteger("poniard.comm.idleSpins", 0);
        private int idleYields = Integer.getInteger("poniard.comm.idleYields", 100);
        private int costWarmUps = Integer.getInteger("poniard.comm.costWarmUps", 100);
        private double alpha = doubleProperty("poniard.comm.alpha");
        private double beta = doubleProperty("poniard.comm.beta");
        private double gamma = doubleProperty("poniard.comm.gamma");
        private int protocolVersion = Rendezvous.VERSION;
        private String launchId;
        private int localRank = -1;

        private static double doubleProperty(String name) {
            final String v = System.getProperty(name);
            return v == null ? Double.NaN : Double.parseDouble(v);
        }

        /** Fills unset fields from the environment and validates everything; called by connect. */
        public Context conclude() {
            final RankEnvironment env = (rank < 0 || size < 0 || coordinatorHost == null || coordinatorPort < 0
                || launchId == null || localRank < 0) ? RankEnvironment.detect() : null;
            if (rank < 0) {
                rank = env.rank();
            }
            if (size < 0) {
                size = env.size();
            }
            if (localRank < 0) {
                localRank = env != null && env.size() == size ? env.localRank() : rank;
            }
            if (coordinatorHost == null) {
                coordinatorHost = env.coordinatorHost();
            }
            if (coordinatorPort < 0) {
                coordinatorPort = env.coordinatorPort();
            }
            if (launchId == null) {
                launchId = env.launchId();
            }
            if (size < 1 || rank < 0 || rank >= size) {
                throw new IllegalArgumentException("rank must be in [0, size): rank=" + rank + " size=" + size);
            }
            if (coordinatorPort > 65535) {
                throw new IllegalArgumentException("coordinatorPort must be in [0, 65535]: " + coordinatorPort);
            }
            if (secret == null) {
                secret = secretFromEnvironment();
            }
            if (secret == null && size > 1) {
                throw new IllegalArgumentException("no shared secret: set PONIARD_SECRET or PONIARD_SECRET_FILE "
                    + "(the launcher does this) or Context.secret(...)");
            }
            if (secret == null) {
                secret = new byte[0];
            }
            if (aeronDirectoryName == null) {
                final File shm = new File("/dev/shm");
                final String base = shm.isDirectory() ? shm.getPath() : System.getProperty("java.io.tmpdir");
                aeronDirectoryName = base + File.separator + "poniard-" + launchId + "-aeron";
            }
            if (launchDriver == null) {
                launchDriver = localRank == 0;
            }
            if (bindAddress == null) {
                bindAddress = addressTowards(coordinatorHost);
            }
            if (termLength < 65536 || Integer.bitCount(termLength) != 1) {
                throw new IllegalArgumentException("termLength must be a power of two >= 64 KiB: " + termLength);
            }
            if (ipcMtu < 4096 || ipcMtu > 65504 || ipcMtu % 32 != 0) {
                throw new IllegalArgumentException("ipcMtu must be a multiple of 32 in [4096, 65504]: " + ipcMtu);
            }
            if (udpMtu < 1408 || udpMtu > 65504 || udpMtu % 32 != 0) {
                throw new IllegalArgumentException("udpMtu must be a multiple of 32 in [1408, 65504]: " + udpMtu);
            }
            if (chunkLength < 64 || chunkLength > 65536) {
                throw new IllegalArgumentException("chunkLength must be in [64, 65536]: " + chunkLength);
            }
            positive("heartbeatIntervalMs", heartbeatIntervalMs);
            positive("operationTimeoutMs", operationTimeoutMs);
            positive("rendezvousTimeoutMs", rendezvousTimeoutMs);
            if (sharedMemoryBufferBytes < 4096 || sharedMemoryBufferBytes % 64 != 0) {
                throw new IllegalArgumentException("sharedMemoryBufferBytes (poniard.comm.shmBufferBytes) must be a "
                    + "multiple of 64 and >= 4096, got " + sharedMemoryBufferBytes);
            }
            if (sharedMemoryBuffers < 2 || sharedMemoryBuffers * sharedMemoryBufferBytes > (1L << 30)) {
                throw new IllegalArgumentException("sharedMemoryBuffers (poniard.comm.shmBuffers) must be >= 2 with at "
                    + "most 1 GiB in all, got " + sharedMemoryBuffers + " x " + sharedMemoryBufferBytes + " bytes");
            }
            if (failureTimeoutMs < 2 * heartbeatIntervalMs) {
                throw new IllegalArgumentException("failureTimeoutMs must be at least twice heartbeatIntervalMs ("
                    + heartbeatIntervalMs + "): " + failureTimeoutMs);
            }
            if (costWarmUps < 0 || costWarmUps > 100_000) {
                throw new IllegalArgumentException("costWarmUps must be in [0, 100000]: " + costWarmUps);
            }
            if (unexpectedBudget < 0) {
                throw new IllegalArgumentException("unexpectedBudget must be >= 0: " + unexpectedBudget);
            }
            if (maxMessageLength < 0 || maxMessageLength > Integer.MAX_VALUE - 64) {
                throw new IllegalArgumentException("maxMessageLength must be in [0, 2^31 - 65]: " + maxMessageLength);
            }
            return this;
        }

        /** Loopback for a loopback coordinator, else this host's address on the route to the coordinator. */
        private static String addressTowards(String host) {
            try {
                final InetAddress target = InetAddress.getByName(host);
                if (target.isLoopbackAddress()) {
                    return "127.0.0.1";
                }
                try (java.net.DatagramSocket probe = new java.net.DatagramSocket()) {
                    probe.connect(target, 9);
                    final InetAddress local = probe.getLocalAddress();
                    return local == null || local.isAnyLocalAddress() ? "127.0.0.1" : local.getHostAddress();
                }
            } catch (IOException e) {
                return "127.0.0.1";
            }
        }

        private static void positive(String name, long v) {
            if (v <= 0) {
                throw new IllegalArgumentException(name + " must be > 0: " + v);
            }
        }

        private static byte[] secretFromEnvironment() {
            final String s = System.getenv("PONIARD_SECRET");
            if (s != null && !s.isEmpty()) {
                return s.getBytes(StandardCharsets.UTF_8);
            }
            final String file = System.getenv("PONIARD_SECRET_FILE");
            if (file != null && !file.isEmpty()) {
                try {
                    return Files.readAllBytes(Path.of(file));
                } catch (IOException e) {
                    throw new IllegalArgumentException("cannot read PONIARD_SECRET_FILE " + file + ": " + e, e);
                }
            }
            return null;
        }

        public int rank() {
            return rank;
        }

        public Context rank(int rank) {
            this.rank = rank;
            return this;
        }

        public int size() {
            return size;
        }

        public Context size(int size) {
            this.size = size;
            return this;
        }

        public int localRank() {
            return localRank;
        }

        /** Rank among the ranks of this host; local rank 0 launches the host's media driver by default. */
        public Context localRank(int localRank) {
            this.localRank = localRank;
            return this;
        }

        public String coordinatorHost() {
            return coordinatorHost;
        }

        public Context coordinatorHost(String host) {
            this.coordinatorHost = host;
            return this;
        }

        public int coordinatorPort() {
            return coordinatorPort;
        }

        public Context coordinatorPort(int port) {
            this.coordinatorPort = port;
            return this;
        }

        public byte[] secret() {
            return secret;
        }

        /** The shared secret every rank must present (default: PONIARD_SECRET or PONIARD_SECRET_FILE). */
        public Context secret(byte[] secret) {
            this.secret = secret.clone();
            return this;
        }

        public String aeronDirectoryName() {
            return aeronDirectoryName;
        }

        public Context aeronDirectoryName(String dir) {
            this.aeronDirectoryName = dir;
            return this;
        }

        public boolean launchDriver() {
            return launchDriver != null && launchDriver;
        }

        /** Whether this rank launches the embedded media driver (default: local rank 0 does). */
        public Context launchDriver(boolean launch) {
            this.launchDriver = launch;
            return this;
        }

        public String launchId() {
            return launchId;
        }

        /** Names this job's media driver directory; the launcher removes directories with its launch id. */
        public Context launchId(String id) {
            this.launchId = id;
            return this;
        }

        public String bindAddress() {
            return bindAddress;
        }

        /** The address this rank's UDP endpoint binds to (default: loopback, or the route to the coordinator). */
        public Context bindAddress(String address) {
            this.bindAddress = address;
            return this;
        }

        public int termLength() {
            return termLength;
        }

        public Context termLength(int termLength) {
            this.termLength = termLength;
            return this;
        }

        public int ipcMtu() {
            return ipcMtu;
        }

        public Context ipcMtu(int mtu) {
            this.ipcMtu = mtu;
            return this;
        }

        public int udpMtu() {
            return udpMtu;
        }

        public Context udpMtu(int mtu) {
            this.udpMtu = mtu;
            return this;
        }

        public int chunkLength() {
            return chunkLength;
        }

        /** Largest payload per frame (clamped to what the channel's MTU allows). */
        public Context chunkLength(int chunkLength) {
            this.chunkLength = chunkLength;
            return this;
        }

        public long heartbeatIntervalMs() {
            return heartbeatIntervalMs;
        }

        public Context heartbeatIntervalMs(long ms) {
            this.heartbeatIntervalMs = ms;
            return this;
        }

        public long failureTimeoutMs() {
            return failureTimeoutMs;
        }

        /** A peer unheard for this long is declared lost (default 3000 ms). */
        public Context failureTimeoutMs(long ms) {
            this.failureTimeoutMs = ms;
            return this;
        }

        public long operationTimeoutMs() {
            return operationTimeoutMs;
        }

        /** A send or receive pending this long aborts the communicator (default 300 s). */
        public Context operationTimeoutMs(long ms) {
            this.operationTimeoutMs = ms;
            return this;
        }

        public long rendezvousTimeoutMs() {
            return rendezvousTimeoutMs;
        }

        public Context rendezvousTimeoutMs(long ms) {
            this.rendezvousTimeoutMs = ms;
            return this;
        }

        public long unexpectedBudget() {
            return unexpectedBudget;
        }

        /** Bytes of messages that arrived before their receive was posted that may be buffered (default 64 MiB). */
        public Context unexpectedBudget(long bytes) {
            this.unexpectedBudget = bytes;
            return this;
        }

        public long maxMessageLength() {
            return maxMessageLength;
        }

        public Context maxMessageLength(long bytes) {
            this.maxMessageLength = bytes;
            return this;
        }

        public long waitSpins() {
            return waitSpins;
        }

        /**
         * Idle progress cycles a waiting caller spins through before it yields (the count restarts whenever a cycle
         * moves data). Default -1, resolved at connect: 2000 (a few hundred microseconds) when this host runs no
         * more ranks than it has cores, else 0. Lower it where latency matters less than compute.
         */
        public Context waitSpins(long spins) {
            this.waitSpins = spins;
            return this;
        }

        public int costWarmUps() {
            return costWarmUps;
        }

        /**
         * Untimed small round trips before connect measures α and β (default 100): the first ones run before the JIT
         * has compiled the path and take several times longer.
         */
        public Context costWarmUps(int warmUps) {
            this.costWarmUps = warmUps;
            return this;
        }

        public long waitYields() {
            return waitYields;
        }

        /** Idle progress cycles, each followed by a yield, a waiting caller makes after spinning and before parking. */
        public Context waitYields(long yields) {
            this.waitYields = yields;
            return this;
        }

        /**
         * Smallest all-reduce (bytes) that AUTO runs through shared memory when every rank shares this host; -1
         * never does (Aeron IPC only).
         */
        public long sharedMemoryMinBytes() {
            return sharedMemoryMinBytes;
        }

        public Context sharedMemoryMinBytes(long bytes) {
            this.sharedMemoryMinBytes = bytes;
            return this;
        }

        /** Bytes of each shared-memory staging buffer: a vector goes through in pieces this big. */
        public long sharedMemoryBufferBytes() {
            return sharedMemoryBufferBytes;
        }

        public Context sharedMemoryBufferBytes(long bytes) {
            this.sharedMemoryBufferBytes = bytes;
            return this;
        }

        /** Staging buffers in each rank's ring (see {@code HostCollectives} for why 16). */
        public int sharedMemoryBuffers() {
            return sharedMemoryBuffers;
        }

        public Context sharedMemoryBuffers(int buffers) {
            this.sharedMemoryBuffers = buffers;
            return this;
        }

        public long idleParkNs() {
            return idleParkNs;
        }

        /**
         * The longest park of the idle progress thread (its parks double from 50 us up to this). Submitters wake it
         * at once and waiting callers drive their own progress, so this bounds only how late an operation nobody
         * waits for is noticed after a quiet spell, and housekeeping.
         */

        public Context idleParkNs(long ns) {
            this.idleParkNs = ns;
            return this;
        }

        public int idleSpins() {
            return idleSpins;
        }

        /** Idle progress-loop iterations spent spinning before yielding. */
        public Context idleSpins(int spins) {
            this.idleSpins = spins;
            return this;
        }

        public int idleYields() {
            return idleYields;
        }

        /** Idle progress-loop iterations spent yielding before parking for {@link #idleParkNs()}. */
        public Context idleYields(int yields) {
            this.idleYields = yields;
            return this;
        }

        public double alpha() {
            return alpha;
        }

        /** Fixes the cost model's α (seconds per message) instead of measuring it. */
        public Context alpha(double alpha) {
            this.alpha = alpha;
            return this;
        }

        public double beta() {
            return beta;
        }

        /** Fixes the cost model's β (seconds per byte) instead of measuring it. */
        public Context beta(double beta) {
            this.beta = beta;
            return this;
        }

        public double gamma() {
            return gamma;
        }

        /** Fixes the cost model's γ (seconds per byte reduced) instead of measuring it. */
        public Context gamma(double gamma) {
            this.gamma = gamma;
            return this;
        }

        public int protocolVersion() {
            return protocolVersion;
        }

        /** The rendezvous protocol version spoken (tests use it to check refusals). */
        public Context protocolVersion(int version) {
            this.protocolVersion = version;
            return this;
        }
    }
}
