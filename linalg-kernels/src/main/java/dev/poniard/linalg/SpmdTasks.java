package dev.poniard.linalg;

import dev.poniard.linalg.tile.Tile;
import dev.poniard.scheduler.DataDeps;
import dev.poniard.scheduler.TaskOptions;
import dev.poniard.scheduler.comm.CommAbortedException;
import dev.poniard.scheduler.comm.Communicator;
import dev.poniard.scheduler.comm.Window;
import java.nio.ByteBuffer;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashMap;
import java.util.IdentityHashMap;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;
import java.util.TreeSet;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.atomic.AtomicReference;
import java.util.function.Supplier;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/**
 * The kernels of one operation on one rank of an SPMD run: every rank builds the same DAG in the same
 * program order, and this class turns it into this rank's share of the work plus the messages between
 * ranks (owner computes, as PaRSEC/DPLASMA).
 *
 * <p><b>Implementation overview.</b>
 * <ul>
 *   <li><i>Owner computes.</i> A kernel runs on the rank that owns its output tile; every other rank
 *       skips it. Each kernel bumps the output tile's <i>version</i> on every rank, so all ranks agree on
 *       which version of a tile a later kernel reads without talking. A kernel may update several tiles
 *       (LU's panel) if one rank owns them all.</li>
 *   <li><i>Transfers.</i> When a kernel on rank d reads version v of a tile owned by rank o ≠ d, the
 *       owner emits an asynchronous send task ({@code in(tile)}, so later writers wait until the send
 *       has read it) and d emits an asynchronous receive into a fresh <i>shadow</i> tile
 *       ({@code out(shadow)}); the kernel reads the shadow. (tile, v, d) is transferred at most once: later
 *       readers on d reuse the shadow. Receive tasks depend on nothing, so every receive is posted as soon
 *       as a worker picks it up, whatever order the sender's sends run in: no ordering between ranks can
 *       deadlock, and messages never wait in the transport's unexpected queue for long.</li>
 *   <li><i>Tags.</i> Every rank numbers transfers in program order with one counter (it sees the same
 *       transfers, in the same order), so a transfer's tag is its number, wrapped below
 *       {@link DistributedMatrix#GATHER_TAG_BASE}; the counter lives across operations, so two
 *       operations never reuse a tag while either could still have a message in flight.</li>
 *   <li><i>Collectives.</i> With {@link TileAlgebra.Strategy#COLLECTIVE}, {@link #share} broadcasts a
 *       tile version to a whole group of consumer ranks on a sub-communicator made once per group (as
 *       SUMMA's row and column broadcasts). Collectives on a communicator must start in the same order
 *       on every member, but tasks run in whatever order the scheduler picks, so a per-communicator
 *       {@link OrderedIssuer} starts broadcast k only once 0..k-1 have started, a bounded number at a time.</li>
 *   <li><i>RMA.</i> With {@link TileAlgebra.Strategy#RMA}, operands an operation only reads
 *       ({@link #expose}: GEMM's A and B, a solve's triangle) are copied into a {@link Window} on every
 *       rank, laid out by a rule every rank can evaluate, and a reader gets each remote tile one-sidedly (a memory copy from
 *       the owner's mapping on one host) with no task on the owner. Tiles an operation writes still move
 *       point to point: a get cannot know that a remote version is ready without a message anyway.</li>
 *   <li><i>Failures.</i> A kernel that throws (a Cholesky pivot that is not positive) aborts the
 *       communicator with a reason naming the failure, so receives on every rank fail at once instead of
 *       waiting; {@link #rethrow} turns the abort back into the same exception on the other ranks. A rank
 *       whose share was done before the failure learns of it in the barrier that ends every operation
 *       ({@link TileAlgebra}), so every rank fails or none does. The communicator is unusable afterwards,
 *       as an MPI job after {@code MPI_Abort}.</li>
 * </ul>
 */
final class SpmdTasks implements TileTasks, AutoCloseable {
    /** State that outlives one operation: tag counter, group communicators and their issuers. */
    static final class Shared implements AutoCloseable {
        final Communicator comm;
        private long transfers;
        private final Map<List<Integer>, Communicator> groups = new HashMap<>();
        private final IdentityHashMap<Communicator, OrderedIssuer> issuers = new IdentityHashMap<>();

        Shared(Communicator comm) {
            this.comm = comm;
        }

        int nextTag() {
            return (int) (transfers++ % DistributedMatrix.GATHER_TAG_BASE);
        }

        /** The sub-communicator of {@code members} (sorted ranks), made by a split all ranks run in the same order. */
        Communicator group(List<Integer> members) {
            Communicator g = groups.get(members);
            if (g == null && !groups.containsKey(members)) {
                boolean in = members.contains(comm.rank());
                // The color only has to be the same for all members; non-members opt out with -1.
                g = comm.split(in ? 0 : -1, comm.rank());
                groups.put(members, g);
                if (g != null) {
                    issuers.put(g, new OrderedIssuer(COLLECTIVE_WINDOW));
                }
            }
            return g;
        }

        OrderedIssuer issuer(Communicator g) {
            return issuers.get(g);
        }

        @Override
        public void close() {
            for (Communicator g : groups.values()) {
                if (g != null) {
                    g.close();
                }
            }
            groups.clear();
        }
    }

    /**
     * Starts operations in the order of their index, whatever order {@link #issue} is called in: operation
     * k starts once 0..k-1 have started, and at most {@code window} are in flight at once. Used for
     * collectives, whose order must match on every member of a communicator; the window bounds the threads
     * that non-blocking collectives park while they wait. It cannot deadlock: the lowest index not yet
     * complete on any member is started on every member (all lower ones completed, freeing the windows),
     * and whatever a root waits on before starting k depends only on collectives numbered below k.
     */
    static final class OrderedIssuer {
        private final int window;
        private long next;
        private long assigned;
        private int inFlight;
        private final TreeMap<Long, Runnable> waiting = new TreeMap<>();

        OrderedIssuer(int window) {
            this.window = window;
        }

        /** The next index, taken in program order while the DAG is built. */
        synchronized long reserve() {
            return assigned++;
        }

        <T> CompletableFuture<T> issue(long index, Supplier<CompletableFuture<T>> op) {
            CompletableFuture<T> result = new CompletableFuture<>();
            synchronized (this) {
                waiting.put(index, () -> {
                    CompletableFuture<T> started;
                    try {
                        started = op.get();
                    } catch (RuntimeException e) {
                        started = CompletableFuture.failedFuture(e);
                    }
                    started.whenComplete((v, e) -> {
                        synchronized (this) {
                            inFlight--;
                        }
                        drain();
                        if (e != null) {
                            result.completeExceptionally(e);
                        } else {
                            result.complete(v);
                        }
                    });
                });
            }
            drain();
            return result;
        }

        private void drain() {
            // Starting an operation only takes its sequence number and hands it to a thread, so it is
            // done under the lock, which is what keeps the order.
            synchronized (this) {
                Runnable r;
                while (inFlight < window && (r = waiting.remove(next)) != null) {
                    next++;
                    inFlight++;
                    r.run();
                }
            }
        }
    }

    private record Key(Tiles m, int i, int j, int version, int dest) {
    }

    /** A matrix exposed for RMA: its window and every tile's byte offset in its owner's part. */
    private record Exposed(Window window, long[] offsets) {
    }

    /** Scheduler priority of transfer tasks (above every kernel's, see {@link TileAlgebra}'s panel priority). */
    static final int TRANSFER_PRIORITY = 2;
    /** Broadcasts in flight per sub-communicator. */
    static final int COLLECTIVE_WINDOW = 8;
    private static final String MARK = "[linalg-failure ";
    private static final Pattern ENCODED = Pattern.compile(Pattern.quote(MARK) + "(\\w+) (\\d+) (\\d+)]");

    private final Shared shared;
    private final Communicator comm;
    private final int me;
    private final DataDeps region;
    private final boolean collective;
    private final boolean rma;
    private final IdentityHashMap<Tiles, Exposed> exposed = new IdentityHashMap<>();
    private final TaskOptions getOptions;
    private final TaskOptions sendOptions;
    private final TaskOptions recvOptions;
    private final TaskOptions bcastOptions;
    private final IdentityHashMap<Tiles, int[]> versions = new IdentityHashMap<>();
    /** Per (tile, version, destination): the shadow on the destination, null elsewhere. */
    private final Map<Key, Tile> transferred = new HashMap<>();
    private final List<Tile> shadows = new ArrayList<>();
    private final AtomicReference<RuntimeException> localFailure = new AtomicReference<>();

    SpmdTasks(Shared shared, DataDeps region, TileAlgebra.Strategy strategy, String suffix) {
        this.shared = shared;
        this.comm = shared.comm;
        this.me = comm.rank();
        this.region = region;
        this.collective = strategy == TileAlgebra.Strategy.COLLECTIVE;
        this.rma = strategy == TileAlgebra.Strategy.RMA;
        // Transfers jump the queue: they take microseconds of a worker, and what they unblock (work on another
        // rank) is invisible to this rank's critical-path ranks, which would otherwise run them last.
        this.sendOptions = TaskOptions.named("send" + suffix).priority(TRANSFER_PRIORITY);
        this.recvOptions = TaskOptions.named("recv" + suffix).priority(TRANSFER_PRIORITY);
        this.bcastOptions = TaskOptions.named("bcast" + suffix).priority(TRANSFER_PRIORITY);
        this.getOptions = TaskOptions.named("rget" + suffix).priority(TRANSFER_PRIORITY);
    }

    /** Checks that {@code m} is this rank's part of a distribution over exactly the communicator's ranks. */
    static void check(String op, Communicator comm, DistributedMatrix m) {
        if (m.distribution().ranks() != comm.size() || m.localRank() != comm.rank()) {
            throw new IllegalArgumentException(op + ": " + m + " is rank " + m.localRank() + "'s part of "
                    + m.distribution().ranks() + " ranks, but this is rank " + comm.rank() + " of a communicator of "
                    + comm.size());
        }
    }

    private int owner(Ref r) {
        return r.m().ownerRank(r.i(), r.j());
    }

    private int version(Ref r) {
        return versions.computeIfAbsent(r.m(), m -> new int[m.mt() * m.nt()])[r.j() * r.m().mt() + r.i()];
    }

    private void bump(Ref r) {
        versions.computeIfAbsent(r.m(), m -> new int[m.mt() * m.nt()])[r.j() * r.m().mt() + r.i()]++;
    }

    @Override
    public void kernel(TaskOptions options, Kernel fn, Ref out, Ref... in) {
        kernel(options, (outs, ins) -> fn.run(outs[0], ins), new Ref[] {out}, in);
    }

    @Override
    public void kernel(TaskOptions options, MultiKernel fn, Ref[] out, Ref... in) {
        int exec = owner(out[0]);
        for (Ref o : out) {
            if (owner(o) != exec) {
                throw new IllegalArgumentException(options.name() + " updates tile (" + out[0].i() + ", " + out[0].j()
                        + ") on rank " + exec + " and tile (" + o.i() + ", " + o.j() + ") on rank " + owner(o) + " of "
                        + o.m().describe() + "; one kernel's outputs must live on one rank");
            }
        }
        Tile[] ins = new Tile[in.length];
        for (int k = 0; k < in.length; k++) {
            ins[k] = fetch(in[k], exec);
        }
        if (exec == me) {
            Tile[] outs = new Tile[out.length];
            for (int k = 0; k < out.length; k++) {
                outs[k] = out[k].m().tile(out[k].i(), out[k].j());
            }
            region.spawn(options, a -> {
                try {
                    fn.run(outs, ins);
                } catch (RuntimeException e) {
                    fail(e);
                    throw e;
                }
                return null;
            }, TileTasks.accesses(ins, outs));
        }
        for (Ref o : out) {
            bump(o);
        }
    }

    /**
     * Makes the current version of {@code r} available on {@code dest}: returns the tile to read there (the
     * tile itself or a shadow) when this rank is {@code dest}, else null, emitting this rank's side of a
     * transfer the first time (tile, version, dest) is needed.
     */
    private Tile fetch(Ref r, int dest) {
        int owner = owner(r);
        if (owner == dest) {
            return dest == me ? r.m().tile(r.i(), r.j()) : null;
        }
        Key key = new Key(r.m(), r.i(), r.j(), version(r), dest);
        if (transferred.containsKey(key)) {
            return transferred.get(key);
        }
        Exposed ex = exposed.get(r.m());
        if (ex != null && version(r) == 0) { // the window holds the version the operation started with
            Tile shadow = null;
            if (me == dest) {
                Tile s = newShadow(r);
                long bytes = (long) s.size() * s.type().bytes();
                long offset = ex.offsets()[r.j() * r.m().mt() + r.i()];
                region.spawn(getOptions, a -> {
                    ex.window().get(s.pointer().address(), bytes, owner, offset);
                    return null;
                }, DataDeps.out(s));
                shadow = s;
            }
            transferred.put(key, shadow);
            return shadow;
        }
        int tag = shared.nextTag();
        Tile shadow = null;
        if (me == owner) {
            Tile t = r.m().tile(r.i(), r.j());
            long bytes = (long) t.size() * t.type().bytes();
            region.spawnAsync(sendOptions, a -> comm.isend(t.pointer().address(), bytes, dest, tag), DataDeps.in(t));
        } else if (me == dest) {
            shadow = newShadow(r);
            receive(shadow, owner, tag, r);
        }
        transferred.put(key, shadow);
        return shadow;
    }

    private Tile newShadow(Ref r) {
        Tile shadow = r.m().allocateLike(r.i(), r.j());
        shadows.add(shadow);
        return shadow;
    }

    private void receive(Tile shadow, int source, int tag, Ref r) {
        long bytes = (long) shadow.size() * shadow.type().bytes();
        region.spawnAsync(recvOptions, a -> comm.irecv(shadow.pointer().address(), bytes, source, tag).thenApply(got -> {
            if (got != bytes) {
                throw new IllegalStateException("tile (" + r.i() + ", " + r.j() + ") of " + r.m().describe() + " from rank "
                        + source + " (tag " + tag + ") arrived with " + got + " bytes, expected " + bytes);
            }
            return got;
        }), DataDeps.out(shadow));
    }

    /**
     * Collective strategy: broadcasts the current version of {@code tile} from its owner to the owners of
     * {@code consumers} on their group's sub-communicator, so that the kernels reading it find it
     * already transferred. Point to point: nothing (kernels fetch on first use).
     */
    @Override
    public void share(Ref tile, Ref... consumers) {
        if (!collective) {
            return;
        }
        int owner = owner(tile);
        TreeSet<Integer> set = new TreeSet<>();
        set.add(owner);
        for (Ref c : consumers) {
            set.add(owner(c));
        }
        if (set.size() == 1) {
            return;
        }
        int version = version(tile);
        // Ranks that already have this version need no copy; the group is the rest plus the owner.
        set.removeIf(d -> d != owner && transferred.containsKey(new Key(tile.m(), tile.i(), tile.j(), version, d)));
        if (set.size() == 1) {
            return;
        }
        List<Integer> members = List.copyOf(set);
        Communicator g = shared.group(members); // every rank calls this, members or not
        Tile local = null;
        for (int d : members) {
            if (d == owner) {
                continue;
            }
            Tile shadow = d == me ? newShadow(tile) : null;
            if (d == me) {
                local = shadow;
            }
            transferred.put(new Key(tile.m(), tile.i(), tile.j(), version, d), shadow);
        }
        if (g == null) {
            return;
        }
        OrderedIssuer issuer = shared.issuer(g);
        long index = issuer.reserve();
        int root = members.indexOf(owner); // split keyed by world rank: group ranks follow the sorted list
        Tile buf = me == owner ? tile.m().tile(tile.i(), tile.j()) : local;
        ByteBuffer bytes = byteView(buf);
        region.spawnAsync(bcastOptions, a -> issuer.issue(index, () -> g.ibroadcast(bytes, root)),
                me == owner ? DataDeps.in(buf) : DataDeps.out(buf));
    }

    /**
     * RMA strategy: exposes matrices the operation only reads. Collective (every rank calls it in the same
     * order): each rank copies the tiles it holds into a window, tile (i, j) at the sum of the sizes of the
     * tiles before it in column-major order that the same rank holds, then a fence makes them visible. On a
     * replicating distribution every layer's copies are in the one window, so each layer view
     * ({@link DistributedMatrix#layer}) gets from its own holders.
     */
    @Override
    public void expose(DistributedMatrix... ms) {
        if (!rma) {
            return;
        }
        for (DistributedMatrix m : ms) {
            if (exposed.containsKey(m.asTiles())) {
                continue;
            }
            int layers = m.distribution().layers();
            long[][] offsets = new long[layers][m.mt() * m.nt()];
            long[] used = new long[comm.size()];
            long elem = m.type().bytes();
            for (int j = 0; j < m.nt(); j++) {
                for (int i = 0; i < m.mt(); i++) {
                    int t = j * m.mt() + i;
                    for (int l = 0; l < layers; l++) {
                        int o = m.distribution().replica(i, j, l).rank();
                        int same = sameHolderBelow(m, i, j, l, o);
                        if (same >= 0) { // a rank holds one copy, whatever the layers it stands for
                            offsets[l][t] = offsets[same][t];
                        } else {
                            offsets[l][t] = used[o];
                            used[o] += (long) m.tileRows(i) * m.tileCols(j) * elem;
                        }
                    }
                }
            }
            long size = Arrays.stream(used).max().orElse(0);
            if (size > Integer.MAX_VALUE - 64) {
                throw new IllegalArgumentException("RMA strategy: " + m + " needs a window of " + size
                        + " bytes on one rank, over the 2 GiB a window holds; use POINT_TO_POINT or COLLECTIVE");
            }
            Window w = Window.allocate(comm, size);
            for (int l = 0; l < layers; l++) {
                exposed.put(m.layer(l), new Exposed(w, offsets[l]));
            }
            ByteBuffer mine = w.buffer();
            for (int j = 0; j < m.nt(); j++) {
                for (int i = 0; i < m.mt(); i++) {
                    for (int l = 0; l < layers; l++) {
                        if (m.distribution().replica(i, j, l).rank() == me && sameHolderBelow(m, i, j, l, me) < 0) {
                            ByteBuffer dst = mine.duplicate();
                            dst.position((int) offsets[l][j * m.mt() + i]);
                            dst.put(byteView(m.tile(i, j)));
                        }
                    }
                }
            }
            w.fence();
        }
    }

    /** The lowest layer below {@code l} whose copy of tile (i, j) is also on {@code rank}, or -1. */
    private static int sameHolderBelow(DistributedMatrix m, int i, int j, int l, int rank) {
        for (int below = 0; below < l; below++) {
            if (m.distribution().replica(i, j, below).rank() == rank) {
                return below;
            }
        }
        return -1;
    }

    /**
     * Brings every replica of {@code m} (a replicating distribution) up to date with its primary where this
     * operation wrote the primary: one copy kernel per (tile, layer) on the replica's holder, reading the
     * primary's final version (a broadcast down the layers with {@link TileAlgebra.Strategy#COLLECTIVE}).
     * Ranks that hold several layers' copies of a tile hold one tile and get it once.
     */
    void refreshReplicas(DistributedMatrix m, TaskOptions copy) {
        int layers = m.distribution().layers();
        if (layers == 1) {
            return;
        }
        TileTasks.Tiles primary = m.asTiles();
        List<Ref> readers = new ArrayList<>(layers);
        for (int j = 0; j < m.nt(); j++) {
            for (int i = 0; i < m.mt(); i++) {
                Ref src = new Ref(primary, i, j);
                if (version(src) == 0) {
                    continue;
                }
                readers.clear();
                for (int l = 1; l < layers; l++) {
                    if (sameHolderBelow(m, i, j, l, m.distribution().replica(i, j, l).rank()) < 0) {
                        readers.add(new Ref(m.layer(l), i, j));
                    }
                }
                share(src, readers.toArray(new Ref[0]));
                for (Ref r : readers) {
                    kernel(copy, (out, in) -> out.copyFrom(in[0]), r, src);
                }
            }
        }
    }

    private static ByteBuffer byteView(Tile t) {
        long bytes = (long) t.size() * t.type().bytes();
        ByteBuffer b = t.pointer().asByteBuffer();
        if (b.remaining() != bytes) {
            throw new IllegalStateException("byte view of a " + t.describe() + " tile has " + b.remaining()
                    + " bytes, expected " + bytes);
        }
        return b;
    }

    /** Records the first failure of a kernel here and aborts every rank with a reason that names it. */
    private void fail(RuntimeException e) {
        if (!localFailure.compareAndSet(null, e)) {
            return;
        }
        String code;
        if (e instanceof NotPositiveDefiniteException npd) {
            code = MARK + "NotPositiveDefinite " + npd.tile() + " " + npd.column() + "]";
        } else if (e instanceof SingularMatrixException sme) {
            code = MARK + "Singular " + sme.tile() + " " + sme.column() + "]";
        } else {
            code = "";
        }
        comm.abort("rank " + me + " failed in a linear algebra kernel: " + e.getMessage() + " " + code);
    }

    /**
     * After the region has closed with {@code failure}: the exception that explains it on this rank. The
     * rank where a kernel failed gets that kernel's exception; the others get the same kind of exception
     * rebuilt from the abort's reason, with the abort as its cause.
     */
    RuntimeException rethrow(RuntimeException failure) {
        RuntimeException local = localFailure.get();
        if (local != null) {
            if (local != failure && local != failure.getCause()) {
                local.addSuppressed(failure);
            }
            return local;
        }
        for (Throwable t = failure; t != null; t = t.getCause()) {
            if (t instanceof CommAbortedException abort) {
                Matcher m = ENCODED.matcher(abort.getMessage() == null ? "" : abort.getMessage());
                if (m.find()) {
                    int tile = Integer.parseInt(m.group(2));
                    int column = Integer.parseInt(m.group(3));
                    RuntimeException e = m.group(1).equals("NotPositiveDefinite")
                            ? new NotPositiveDefiniteException(tile, column) : new SingularMatrixException(tile, column);
                    e.initCause(abort);
                    return e;
                }
                break;
            }
        }
        return failure;
    }

    /** Frees the shadows; call after the region has closed (every transfer has settled). */
    @Override
    public void close() {
        for (Tile t : shadows) {
            t.close();
        }
        shadows.clear();
        for (Exposed ex : exposed.values()) {
            try {
                ex.window().close(); // collective: no rank unmaps while another may still read
            } catch (RuntimeException e) {
                // The communicator failed (the operation's failure is being reported): the window file is
                // removed by close's own cleanup, nothing else to do.
                if (localFailure.get() == null && comm.failure() == null) {
                    throw e;
                }
            }
        }
        exposed.clear();
    }

    @Override
    public String toString() {
        return "SpmdTasks[rank " + me + " of " + comm.size() + ", " + (rma ? "RMA" : collective ? "collective" : "p2p")
                + ", " + transferred.size() + " transfers, " + shadows.size() + " shadow tiles]";
    }
}
