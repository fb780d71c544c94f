package dev.poniard.linalg.device;

import dev.poniard.linalg.DType;
import dev.poniard.linalg.DistributedMatrix;
import dev.poniard.linalg.LuFactorization;
import dev.poniard.linalg.NotPositiveDefiniteException;
import dev.poniard.linalg.QrFactorization;
import dev.poniard.linalg.SingularMatrixException;
import dev.poniard.linalg.tile.Tile;
import dev.poniard.linalg.tile.TileKernels.Diag;
import dev.poniard.linalg.tile.TileKernels.Side;
import dev.poniard.linalg.tile.TileKernels.Trans;
import dev.poniard.linalg.tile.TileKernels.Uplo;
import dev.poniard.scheduler.comm.CommAbortedException;
import dev.poniard.scheduler.comm.Communicator;
import dev.poniard.scheduler.comm.ReduceOp;
import dev.poniard.scheduler.stream.Buffer;
import dev.poniard.scheduler.stream.Device;
import dev.poniard.scheduler.stream.DeviceCall;
import dev.poniard.scheduler.stream.Event;
import dev.poniard.scheduler.stream.StreamScheduler;
import dev.poniard.scheduler.stream.StreamScheduler.Access;
import dev.poniard.scheduler.stream.cuda.CudaDevice;
import java.nio.ByteBuffer;
import java.nio.IntBuffer;
import java.util.ArrayList;
import java.util.List;
import java.util.TreeSet;
import java.util.concurrent.CompletableFuture;
import org.bytedeco.javacpp.Pointer;

/**
 * Tile linear algebra on one device's streams: GEMM, Cholesky, LU and QR of whole (one-rank) matrices as tile DAGs
 * of library calls — cuBLAS through JCuda on a {@link CudaDevice}, OpenBLAS on the CPU emulation
 * ({@link dev.poniard.scheduler.stream.cpu.CpuDevice}), the same code path on both.
 *
 * <pre>{@code
 * try (CudaDevice gpu = CudaDevice.launch();
 *      DeviceTileAlgebra la = DeviceTileAlgebra.launch(new DeviceTileAlgebra.Context().device(gpu));
 *      DistributedMatrix a = DistributedMatrix.spd(DType.F64, 8000, 512, 42)) {
 *     la.cholesky(a); // lower triangle of a now holds L
 * }
 * }</pre>
 *
 * <p><b>Implementation overview.</b> An operation (1) takes one device buffer and one pinned staging buffer
 * per tile it touches from the device's pools (allocation happens only while the pools warm up, never inside
 * the DAG), copies the tiles into staging and enqueues their copies in; (2) enqueues every tile kernel at
 * once through a {@link StreamScheduler}, which links kernels that share a buffer with events (a reader
 * waits for the last writer, a writer for the last writer and the readers since) and puts each on the
 * least-loaded compute stream, or on the high-priority stream when it is {@code critical}; (3) enqueues the
 * copies out, synchronises the device once, and copies staging back into the tiles. On one device the host never
 * blocks between (1) and (3); across ranks it waits only where it must send or receive a tile (below).
 *
 * <p>Cholesky is the right-looking tile algorithm (POTRF, TRSM, SYRK, GEMM) of PLASMA (Buttari et al. 2009)
 * with a look-ahead of one panel: the TRSMs of panel k and the updates of tile column k + 1 are critical, so
 * panel k + 1 can start while the rest of step k's trailing update still runs on the other streams. POTRF of
 * a diagonal tile is hybrid as in MAGMA (Tomov, Dongarra, Baboulin 2010): the tile is copied out to its
 * staging buffer, factored there by LAPACK in a host function on the device-to-host stream
 * ({@code cuLaunchHostFunc} on a GPU) and copied back in, all ordered by events. A POTRF that finds the
 * matrix not positive definite records the first failing column and later POTRFs do nothing; the kernels
 * already enqueued run to the end on meaningless data, and after the one synchronisation the operation
 * throws {@link NotPositiveDefiniteException} with the matrix left as it was and nothing left running.
 *
 * <p>LU is the right-looking tile algorithm with partial pivoting and the same look-ahead. Each panel (tile column
 * k from the diagonal down) is factored by one LAPACK getrf in a host function, hybrid as POTRF is (Dagger.jl and
 * PLASMA both found fine-grained pivot tasks far slower): its tiles are copied out, gathered into one pinned panel,
 * factored, scattered back and copied in, and its pivots go to the device. A {@code laswp} call per other tile column
 * then applies the interchanges on the device (the shipped {@code poniard_laswp} PTX, which gets the column's tile
 * addresses as kernel parameters, at most 256 tile rows), and the tile columns right of the panel get their TRSM and
 * GEMM updates. A singular panel is reported as POTRF's failure is.
 *
 * <p>QR is the flat-tree tile QR of PLASMA with one block of reflectors per tile (inner block = tile size). Its panel
 * runs on the host as LU's does, one host function per kernel so the device's updates of a tile row start as soon
 * as its reflectors are in: GEQRT of the diagonal tile (whose T factor and reflectors, as an explicit unit lower
 * matrix, go to the device) and a TPQRT per tile below it, the diagonal tile's R staying in staging memory until the
 * panel's last TPQRT. The updates are BLAS on the device: C -= V (T^T (V^T C)) for the tiles right of the diagonal
 * (GEMM, TRMM, GEMM), and for each pair of the panel row's tile C1 and a tile C2 below it W = C1 + V^T C2,
 * W = T^T W, C1 -= W, C2 -= V W (GEAM, GEMM, TRMM, GEAM, GEMM), through one work block per tile column and step
 * parity.
 *
 * <p>Across ranks (SPMD, {@link Context#communicator}), every operation takes matrices spread over the ranks (LU and
 * QR by tile columns), each rank running the kernels of the tiles it owns on its own device. The host drives the
 * exchanges: GEMM sends every A and B tile its owner holds, straight from host memory, to the ranks whose C tiles
 * read it, and copies each received tile in as the device comes to need it; Cholesky sends L(k, k) once factored and
 * each panel tile L(i, k) once solved and copied out, LU a panel's tiles and pivots, QR a panel's reflectors and T
 * factors, to the ranks whose updates read them, each rank waiting only for its own step's panel while the device
 * still runs the previous step's trailing update. A matrix that is not positive definite or is singular is agreed
 * on by an all-reduce after the last step, so every rank throws the same exception; any other failure on a rank
 * aborts the communicator, naming that rank, so that no rank waits for tiles that will not come.
 *
 * <p>On a CPU device the kernels call OpenBLAS on the emulated lanes; hold OpenBLAS to one thread
 * ({@code TileKernels.setBlasThreads(1)}), as {@code TileAlgebra}'s workers do, so the lanes use one core each.
 * On a CUDA device one cuBLAS handle per compute stream is made at launch and destroyed by {@link #close()}:
 * close this algebra before its device. Operations run one at a time (they are synchronised).
 */
public final class DeviceTileAlgebra implements AutoCloseable {

    /**
     * Configuration; defaults from system properties {@code poniard.linalg.device.*}. The device is required
     * and stays the caller's (closing the algebra does not close it).
     */
    public static final class Context {
        private Device device;
        private boolean singleStream = Boolean.getBoolean("poniard.linalg.device.singleStream");
        private double gflops = Double.parseDouble(System.getProperty("poniard.linalg.device.gflops", "20"));
        private Communicator communicator;

        public Device device() {
            return device;
        }

        /** The device whose streams run the kernels. */
        public Context device(Device value) {
            device = value;
            return this;
        }

        public boolean singleStream() {
            return singleStream;
        }

        /** Everything on the first compute stream: the one-stream baseline multi-stream scheduling must beat. */
        public Context singleStream(boolean value) {
            singleStream = value;
            return this;
        }

        public double gflops() {
            return gflops;
        }

        /** Planning rate of a tile kernel, for the streams' load estimates only (GFLOP/s). */
        public Context gflops(double value) {
            gflops = value;
            return this;
        }

        public Communicator communicator() {
            return communicator;
        }

        /**
         * The ranks of an SPMD run: operations then take matrices spread over them, each rank running the tiles it
         * owns on its own device and exchanging the others' tiles through this communicator (the caller's; closing the
         * algebra does not close it).
         */
        public Context communicator(Communicator value) {
            communicator = value;
            return this;
        }

        public Context conclude() {
            if (device == null) {
                throw new IllegalArgumentException("a DeviceTileAlgebra needs a device: Context.device(...)");
            }
            if (!(gflops > 0)) {
                throw new IllegalArgumentException("gflops must be > 0, got " + gflops);
            }
            return this;
        }
    }

    private final Context ctx;
    private final Device device;
    /** cuBLAS handles for a CUDA device; null on a device whose streams run the host implementations. */
    private final Cublas cublas;
    /** Tags of the next SPMD operation's tile messages: every rank advances them alike (same operations). */
    private long tags;
    private boolean closed;

    private DeviceTileAlgebra(Context ctx, Cublas cublas) {
        this.ctx = ctx;
        this.device = ctx.device();
        this.cublas = cublas;
    }

    /**
     * Opens the algebra on {@code ctx.device()}.
     *
     * @throws IllegalStateException "no cuBLAS: ..." for a CUDA device on a host without libcublas
     */
    public static DeviceTileAlgebra launch(Context ctx) {
        ctx.conclude();
        Cublas cublas = ctx.device() instanceof CudaDevice ? Cublas.open((CudaDevice) ctx.device()) : null;
        return new DeviceTileAlgebra(ctx, cublas);
    }

    public Context context() {
        return ctx;
    }

    public Device device() {
        return device;
    }

    // ------------------------------------------------------------------------------------------------
    // GEMM

    /** C := alpha A B + beta C. */
    public void gemm(double alpha, DistributedMatrix a, DistributedMatrix b, double beta, DistributedMatrix c) {
        gemm(Trans.N, Trans.N, alpha, a, b, beta, c);
    }

    /**
     * C := alpha op(A) op(B) + beta C, all three with the same tile size and type: whole matrices, or spread over the
     * ranks of {@link Context#communicator} (any distribution that keeps one copy of each tile).
     */
    public synchronized void gemm(Trans ta, Trans tb, double alpha, DistributedMatrix a, DistributedMatrix b,
                                  double beta, DistributedMatrix c) {
        open();
        int m = ta == Trans.N ? a.rows() : a.cols();
        int k = ta == Trans.N ? a.cols() : a.rows();
        int kb = tb == Trans.N ? b.rows() : b.cols();
        int n = tb == Trans.N ? b.cols() : b.rows();
        if (k != kb || c.rows() != m || c.cols() != n) {
            throw new IllegalArgumentException("gemm: op(A) is " + m + "x" + k + ", op(B) is " + kb + "x" + n + ", C is "
                    + c.rows() + "x" + c.cols() + "; need op(A) m x k, op(B) k x n, C m x n");
        }
        if (a == c || b == c) {
            throw new IllegalArgumentException("gemm: C (" + c + ") is also " + (a == c ? "A" : "B")
                    + "; C's tiles are overwritten while A's and B's are read, so pass a copy");
        }
        Communicator comm = spread("gemm", a, b, c) ? ctx.communicator() : null;
        share(comm, "gemm", run -> {
            gemmTiles(run, comm, ta, tb, alpha, a, b, beta, c);
            return c;
        });
    }

    // ------------------------------------------------------------------------------------------------
    // Cholesky

    /**
     * Cholesky factorization A = L L^T in place: the lower triangle of {@code a} becomes L, the strict upper
     * triangle is left as it was (only the lower triangle of A is read).
     *
     * @throws NotPositiveDefiniteException naming the column and diagonal tile where it fails; {@code a} is then
     *         unchanged
     */
    public synchronized DistributedMatrix cholesky(DistributedMatrix a) {
        open();
        if (a.rows() != a.cols()) {
            throw new IllegalArgumentException("cholesky needs a square matrix, got " + a.rows() + "x" + a.cols());
        }
        Communicator comm = spread("cholesky", a) ? ctx.communicator() : null;
        return share(comm, "cholesky", run -> choleskyTiles(run, comm, a));
    }

    /**
     * The first diagonal tile (POTRF) or panel (GETRF) that failed, and the global column where; written by a host
     * function, read after the device has synchronised.
     */
    private static final class FirstFailure {
        volatile int tile = -1;
        volatile int column;

        void record(int failedTile, int failedColumn) {
            column = failedColumn;
            tile = failedTile;
        }

        /**
         * The failed column, the smallest over all ranks with a communicator (every rank then throws the same
         * exception); {@code Integer.MAX_VALUE} if none failed.
         */
        int agreedColumn(Communicator comm) {
            int[] c = {tile >= 0 ? column : Integer.MAX_VALUE};
            if (comm != null) {
                comm.allReduce(c, ReduceOp.MIN);
            }
            return c[0];
        }
    }

    /**
     * Hybrid POTRF of diagonal tile k: out to its staging buffer, LAPACK on the host, back in. Returns the host
     * function's event, after which the staging buffer holds L (or garbage after a failure).
     */
    private Event potrf(Run run, DType t, int k, int nb, Slot d, FirstFailure failure) {
        int n = d.rows();
        run.sched.copyOut(d.dev, d.host, d.bytes);
        Event factored = run.sched.host(() -> {
            if (failure.tile >= 0) {
                return;
            }
            int info = DeviceTileKernels.potrfOnHost(t, d.host, n);
            if (info > 0) {
                failure.record(k, k * nb + info - 1);
            }
        }, estimateNs((double) n * n * n / 3), Access.out(d.host));
        run.sched.copyIn(d.host, d.dev, d.bytes);
        return factored;
    }

    // ------------------------------------------------------------------------------------------------
    // LU

    /**
     * LU factorization with partial pivoting, P A = L U, in place: U on and above the diagonal of {@code a}, the unit
     * lower L below it; the result carries the row interchanges. Rectangular matrices and partial tiles work.
     *
     * @throws SingularMatrixException naming the column of the first exactly zero pivot; {@code a} is then unchanged
     */
    public synchronized LuFactorization lu(DistributedMatrix a) {
        open();
        Communicator comm = spread("lu", a) ? ctx.communicator() : null;
        requireWholeColumns("lu", a);
        return share(comm, "lu", run -> luTiles(run, comm, a));
    }

    /**
     * Hybrid getrf of panel k (tiles k.. of tile column k), as MAGMA does: the tiles out to their staging buffers,
     * LAPACK on the host gathers, factors and scatters them, then they go back in. The host function writes the
     * panel's pivots into {@code pivHost} (0-based from the panel's top, for the device's row interchanges) and into
     * {@code piv} (global rows, the result). After a singular panel the later ones only write identity pivots.
     * Returns the host function's event: the panel's staging buffers then hold its factors.
     */
    private Event panel(Run run, DType t, DistributedMatrix a, Slot[][] s, int k, Buffer scratch, Buffer pivHost,
                       int[] piv, FirstFailure failure) {
        int mt = a.mt();
        int nb = a.tileSize();
        int w = a.tileCols(k);
        List<Buffer> hosts = new ArrayList<>();
        int[] rows = new int[mt - k];
        List<Access> acc = new ArrayList<>();
        for (int i = k; i < mt; i++) {
            Slot p = s[i][k];
            run.sched.copyOut(p.dev, p.host, p.bytes);
            hosts.add(p.host);
            rows[i - k] = p.rows();
            acc.add(Access.out(p.host));
        }
        acc.add(Access.out(scratch));
        acc.add(Access.out(pivHost));
        int pm = a.rows() - k * nb;
        Event factored = run.sched.host(() -> {
            if (failure.tile >= 0) {
                // no interchanges: the device's laswp must never read a stale pool buffer's values as rows
                IntBuffer none = DeviceTileKernels.ints(pivHost);
                for (int r = 0; r < Math.min(pm, w); r++) {
                    none.put(r, r);
                }
                return;
            }
            int info = DeviceTileKernels.getrfOnHost(t, hosts, rows, w, scratch, pivHost);
            IntBuffer rel = DeviceTileKernels.ints(pivHost);
            for (int r = 0; r < Math.min(pm, w); r++) {
                piv[k * nb + r] = k * nb + rel.get(r);
            }
            if (info > 0) {
                failure.record(k, k * nb + info - 1);
            }
        }, estimateNs((double) pm * w * w - (double) w * w * w / 3), acc.toArray(new Access[0]));
        for (int i = k; i < mt; i++) {
            Slot p = s[i][k];
            run.sched.copyIn(p.host, p.dev, p.bytes);
        }
        return factored;
    }

    // ------------------------------------------------------------------------------------------------
    // QR

    /**
     * Tile QR factorization A = Q R in place: R on and above the diagonal of {@code a}, Q as block reflectors below it
     * and in the result's T factors, with one block of reflectors per tile (inner block size = the tile size), so
     * {@code TileAlgebra.applyQ} takes the result as it takes its own. Rectangular matrices and partial tiles work.
     * Close the result (it holds T and the reflector copies).
     */
    public synchronized QrFactorization qr(DistributedMatrix a) {
        open();
        Communicator comm = spread("qr", a) ? ctx.communicator() : null;
        requireWholeColumns("qr", a);
        return share(comm, "qr", run -> qrTiles(run, comm, a));
    }

    /** The work block of tile column j for step k, taken from the pool the first time (nb x nb, ld nb). */
    private static Buffer work(Run run, Buffer[][] work, int k, int j, int nb, DType t) {
        Buffer[] parity = work[k % 2];
        if (parity[j] == null) {
            parity[j] = run.device((long) nb * nb * t.bytes());
        }
        return parity[j];
    }

    // ------------------------------------------------------------------------------------------------
    // The tile DAGs, on one device (comm null, every tile local) or on one device per rank (SPMD)

    /**
     * GEMM, owner computes: each rank sends every A and B tile it owns, straight from the tile's memory, to the other
     * ranks owning a C tile that reads it, and posts the receives of the tiles its own C tiles read; it copies in its
     * own A and B tiles in the order the steps l = 0, 1, ... read them (so the first products start early), then
     * enqueues the steps, each step's received tiles copied in as they land (the host waits only for tiles the
     * device is about to need). C's tiles are not copied in when beta = 0 (BLAS does not read them).
     */
    private void gemmTiles(Run run, Communicator comm, Trans ta, Trans tb, double alpha, DistributedMatrix a,
                           DistributedMatrix b, double beta, DistributedMatrix c) {
        int me = c.localRank();
        DType t = c.type();
        int kt = ta == Trans.N ? a.nt() : a.mt();
        long base = comm == null ? 0 : nextTags((long) a.mt() * a.nt() + (long) b.mt() * b.nt());
        List<CompletableFuture<Void>> sends = new ArrayList<>();
        // A(r, q) is read by C's tile row (ta == N ? r : q), B(r, q) by C's tile column (tb == N ? q : r)
        for (int q = 0; q < a.nt(); q++) {
            for (int r = 0; r < a.mt(); r++) {
                if (a.isLocal(r, q)) {
                    int i = ta == Trans.N ? r : q;
                    for (int dest : owners(c, i, i + 1, 0, c.nt(), me)) {
                        sends.add(send(comm, a.tile(r, q), dest, tag(base, a, r, q, 0)));
                    }
                }
            }
        }
        for (int q = 0; q < b.nt(); q++) {
            for (int r = 0; r < b.mt(); r++) {
                if (b.isLocal(r, q)) {
                    int j = tb == Trans.N ? q : r;
                    for (int dest : owners(c, 0, c.mt(), j, j + 1, me)) {
                        sends.add(send(comm, b.tile(r, q), dest, tag(base, b, r, q, a.mt() * a.nt())));
                    }
                }
            }
        }
        Slot[][] cs = new Slot[c.mt()][c.nt()];
        boolean[] row = new boolean[c.mt()];
        boolean[] col = new boolean[c.nt()];
        for (int j = 0; j < c.nt(); j++) {
            for (int i = 0; i < c.mt(); i++) {
                if (c.isLocal(i, j)) {
                    cs[i][j] = beta == 0 ? run.slot(c.tile(i, j)) : run.upload(c.tile(i, j));
                    row[i] = col[j] = true;
                }
            }
        }
        Operand[][] as = new Operand[a.mt()][a.nt()];
        Operand[][] bs = new Operand[b.mt()][b.nt()];
        for (int l = 0; l < kt; l++) {
            for (int i = 0; i < c.mt(); i++) {
                if (row[i]) {
                    int r = ta == Trans.N ? i : l, q = ta == Trans.N ? l : i;
                    as[r][q] = run.operand(comm, a, r, q, tag(base, a, r, q, 0));
                }
            }
            for (int j = 0; j < c.nt(); j++) {
                if (col[j]) {
                    int r = tb == Trans.N ? l : j, q = tb == Trans.N ? j : l;
                    bs[r][q] = run.operand(comm, b, r, q, tag(base, b, r, q, a.mt() * a.nt()));
                }
            }
        }
        for (int l = 0; l < kt; l++) {
            double betaStep = l == 0 ? beta : 1.0;
            for (int i = 0; i < c.mt(); i++) {
                for (int j = 0; j < c.nt(); j++) {
                    Slot z = cs[i][j];
                    if (z == null) {
                        continue;
                    }
                    Slot x = run.landed(ta == Trans.N ? as[i][l] : as[l][i]);
                    Slot y = run.landed(tb == Trans.N ? bs[l][j] : bs[j][l]);
                    int kk = ta == Trans.N ? x.cols() : x.rows();
                    run.launch(DeviceTileKernels.gemm(cublas, t, ta, tb, z.rows(), z.cols(), kk, alpha, x.dev,
                            x.ld(), y.dev, y.ld(), betaStep, z.dev, z.ld()), 2.0 * z.rows() * z.cols() * kk, false);
                }
            }
        }
        run.finish(sends, cs);
        run.copyBack();
    }

    /**
     * Cholesky, right-looking and owner computes, a step per tile column k: the owner of tile (k, k) factors it
     * (hybrid POTRF) and sends L(k, k) to the owners of the panel's other tiles; they solve their tiles (TRSM, on the
     * high-priority stream) and send each L(i, k) to the owners of the tiles of tile row i and tile column i that its
     * update reads; every rank then updates its own trailing tiles (SYRK, GEMM; tile column k + 1's on the
     * high-priority stream). A host that sends waits for its step's panel only, while the device still runs the
     * previous step's trailing update: a look-ahead of one panel. A failing POTRF is agreed on by all ranks after the
     * last step (an all-reduce of the first failing column), and every rank throws and leaves its tiles unchanged.
     */
    private DistributedMatrix choleskyTiles(Run run, Communicator comm, DistributedMatrix a) {
        int me = a.localRank();
        DType t = a.type();
        int nt = a.nt();
        int nb = a.tileSize();
        long base = comm == null ? 0 : nextTags((long) nt * nt);
        FirstFailure failure = new FirstFailure();
        List<CompletableFuture<Void>> sends = new ArrayList<>();
        Slot[][] s = new Slot[nt][nt];
        for (int j = 0; j < nt; j++) {
            for (int i = j; i < nt; i++) {
                if (a.isLocal(i, j)) {
                    s[i][j] = run.upload(a.tile(i, j));
                }
            }
        }
        for (int k = 0; k < nt; k++) {
            int w = a.tileCols(k);
            // what this rank reads of panel k, posted before it waits for anything
            Operand[] panel = new Operand[nt];
            for (int i = k; i < nt; i++) {
                boolean reads = i == k ? owns(a, k + 1, nt, k, k + 1, me) : readsPanelTile(a, i, k, me);
                if (reads || a.isLocal(i, k)) {
                    panel[i] = run.operand(comm, a, i, k, tag(base, a, i, k, 0), s[i][k]);
                }
            }
            if (a.isLocal(k, k)) {
                Slot d = s[k][k];
                Event factored = potrf(run, t, k, nb, d, failure);
                List<Integer> readers = owners(a, k + 1, nt, k, k + 1, me);
                if (!readers.isEmpty()) {
                    factored.synchronize();
                    for (int dest : readers) {
                        sends.add(send(comm, d.host, d.bytes, dest, tag(base, a, k, k, 0)));
                    }
                }
            }
            // a solved tile that other ranks read is copied out, and sent once the step's TRSMs are all enqueued
            List<Runnable> toSend = new ArrayList<>();
            for (int i = k + 1; i < nt; i++) {
                if (!a.isLocal(i, k)) {
                    continue;
                }
                Slot d = run.landed(panel[k]);
                Slot b = s[i][k];
                run.launch(DeviceTileKernels.trsm(cublas, t, Side.RIGHT, Uplo.LOWER, Trans.T, Diag.NON_UNIT,
                        b.rows(), w, 1.0, d.dev, d.ld(), b.dev, b.ld()), (double) b.rows() * w * w, true);
                List<Integer> readers = panelReaders(a, i, k, me);
                if (!readers.isEmpty()) {
                    Event solved = run.sched.copyOut(b.dev, b.host, b.bytes);
                    int tag = tag(base, a, i, k, 0);
                    toSend.add(() -> {
                        solved.synchronize();
                        for (int dest : readers) {
                            sends.add(send(comm, b.host, b.bytes, dest, tag));
                        }
                    });
                }
            }
            toSend.forEach(Runnable::run);
            for (int j = k + 1; j < nt; j++) {
                boolean next = j == k + 1; // look-ahead: tile column k + 1 is the next panel
                for (int i = j; i < nt; i++) {
                    Slot aij = s[i][j];
                    if (aij == null) {
                        continue;
                    }
                    Slot aik = run.landed(panel[i]);
                    Slot ajk = run.landed(panel[j]);
                    if (i == j) {
                        run.launch(DeviceTileKernels.syrk(cublas, t, Uplo.LOWER, Trans.N, aij.rows(), w, -1.0,
                                ajk.dev, ajk.ld(), 1.0, aij.dev, aij.ld()), (double) aij.rows() * aij.rows() * w,
                                next);
                    } else {
                        run.launch(DeviceTileKernels.gemm(cublas, t, Trans.N, Trans.T, aij.rows(), aij.cols(), w,
                                -1.0, aik.dev, aik.ld(), ajk.dev, ajk.ld(), 1.0, aij.dev, aij.ld()),
                                2.0 * aij.rows() * aij.cols() * w, next);
                    }
                }
            }
        }
        run.finish(sends, s);
        int column = failure.agreedColumn(comm);
        if (column != Integer.MAX_VALUE) {
            throw new NotPositiveDefiniteException(column / nb, column);
        }
        run.copyBack();
        return a;
    }

    /**
     * LU with partial pivoting by tile columns, owner computes: the owner of tile column k factors the panel (hybrid
     * getrf) and sends its pivots to every other rank and its tiles to the ranks owning columns right of it; every
     * rank applies the interchanges to its own other columns and updates those right of the panel (TRSM, GEMM; tile
     * column k + 1's on the high-priority stream). A singular panel is agreed on by all ranks after the last step, as
     * Cholesky's failure is.
     */
    private LuFactorization luTiles(Run run, Communicator comm, DistributedMatrix a) {
        int me = a.localRank();
        int ranks = comm == null ? 1 : comm.size();
        DType t = a.type();
        int mt = a.mt();
        int nt = a.nt();
        int nb = a.tileSize();
        int steps = Math.min(mt, nt);
        int[] piv = new int[Math.min(a.rows(), a.cols())];
        long base = comm == null ? 0 : nextTags((long) mt * nt + steps); // panel tiles, then a pivot message a step
        FirstFailure failure = new FirstFailure();
        CudaDevice gpu = device instanceof CudaDevice ? (CudaDevice) device : null;
        List<CompletableFuture<Void>> sends = new ArrayList<>();
        Slot[][] s = new Slot[mt][nt];
        for (int j = 0; j < nt; j++) {
            for (int i = 0; i < mt && a.isLocal(0, j); i++) {
                s[i][j] = run.upload(a.tile(i, j));
            }
        }
        Buffer scratch = null;
        for (int k = 0; k < steps; k++) {
            int w = a.tileCols(k);
            int pm = a.rows() - k * nb;
            int npiv = Math.min(pm, w);
            int owner = columnOwner(a, k);
            int pivTag = (int) ((base + (long) mt * nt + k) % DistributedMatrix.GATHER_TAG_BASE);
            Buffer pivHost = run.staging(4L * npiv);
            Buffer pivDev = run.device(4L * npiv);
            Operand[] panel = new Operand[mt];
            if (owner == me) {
                if (scratch == null) {
                    scratch = run.staging((long) a.rows() * nb * t.bytes());
                }
                Event factored = panel(run, t, a, s, k, scratch, pivHost, piv, failure);
                run.sched.copyIn(pivHost, pivDev, 4L * npiv);
                for (int i = k; i < mt; i++) {
                    panel[i] = run.operand(comm, a, i, k, tag(base, a, i, k, 0), s[i][k]);
                }
                List<Integer> right = columnOwners(a, k + 1, nt, me);
                if (ranks > 1) {
                    factored.synchronize();
                }
                for (int dest = 0; dest < ranks; dest++) {
                    if (dest != me) {
                        sends.add(send(comm, pivHost, 4L * npiv, dest, pivTag));
                    }
                }
                for (int dest : right) {
                    for (int i = k; i < mt; i++) {
                        sends.add(send(comm, s[i][k].host, s[i][k].bytes, dest, tag(base, a, i, k, 0)));
                    }
                }
            } else {
                CompletableFuture<Long> pivots = comm.irecv(pivHost.bytes().duplicate().clear().limit(4 * npiv),
                        owner, pivTag);
                if (ownsColumn(a, k + 1, nt)) {
                    for (int i = k; i < mt; i++) {
                        panel[i] = run.operand(comm, a, i, k, tag(base, a, i, k, 0));
                    }
                }
                long got = pivots.join();
                if (got != 4L * npiv) {
                    throw new IllegalStateException("the pivots of panel " + k + " from rank " + owner + " arrived "
                            + "with " + got + " bytes, expected " + 4L * npiv);
                }
                run.sched.copyIn(pivHost, pivDev, 4L * npiv);
                IntBuffer rel = DeviceTileKernels.ints(pivHost);
                for (int r = 0; r < npiv; r++) {
                    piv[k * nb + r] = k * nb + rel.get(r);
                }
            }
            for (int j = 0; j < nt; j++) {
                if (j == k || s[0][j] == null) {
                    continue;
                }
                boolean next = j == k + 1;
                List<Buffer> column = new ArrayList<>();
                for (int i = k; i < mt; i++) {
                    column.add(s[i][j].dev);
                }
                int cols = a.tileCols(j);
                run.launch(DeviceTileKernels.laswp(gpu, t, column, nb, a.tileRows(mt - 1), cols, pivDev, npiv),
                        (double) npiv * cols, next);
                if (j < k) {
                    continue;
                }
                Slot d = run.landed(panel[k]);
                Slot u = s[k][j];
                run.launch(DeviceTileKernels.trsm(cublas, t, Side.LEFT, Uplo.LOWER, Trans.N, Diag.UNIT, u.rows(),
                        cols, 1.0, d.dev, d.ld(), u.dev, u.ld()), (double) u.rows() * u.rows() * cols, next);
                for (int i = k + 1; i < mt; i++) {
                    Slot l = run.landed(panel[i]);
                    Slot c = s[i][j];
                    run.launch(DeviceTileKernels.gemm(cublas, t, Trans.N, Trans.N, c.rows(), cols, w, -1.0, l.dev,
                            l.ld(), u.dev, u.ld(), 1.0, c.dev, c.ld()), 2.0 * c.rows() * cols * w, next);
                }
            }
        }
        run.finish(sends, s);
        int column = failure.agreedColumn(comm);
        if (column != Integer.MAX_VALUE) {
            throw new SingularMatrixException(column / nb, column);
        }
        run.copyBack();
        return new LuFactorization(a, piv);
    }

    /**
     * Tile QR by tile columns, owner computes: the owner of tile column k runs the panel's GEQRT and TPQRTs (host
     * functions) and sends the reflectors and T factors to the ranks owning columns right of the panel; every rank
     * applies them to its own columns there (GEMQRT and TPMQRT as device calls). T and the reflector copies of step k
     * stay on the rank that factored column k, as {@code TileAlgebra.qr} leaves them.
     */
    private QrFactorization qrTiles(Run run, Communicator comm, DistributedMatrix a) {
        int me = a.localRank();
        DType t = a.type();
        int mt = a.mt();
        int nt = a.nt();
        int nb = a.tileSize();
        int steps = Math.min(mt, nt);
        int es = t.bytes();
        // per step k: the explicit V(k), then T(i, k) and the reflectors V(i, k) = A(i, k) for i >= k
        long base = comm == null ? 0 : nextTags(3L * mt * steps);
        QrFactorization f = QrFactorization.allocate(a, nb);
        List<CompletableFuture<Void>> sends = new ArrayList<>();
        try {
            Slot[][] s = new Slot[mt][nt];
            for (int j = 0; j < nt; j++) {
                for (int i = 0; i < mt && a.isLocal(0, j); i++) {
                    s[i][j] = run.upload(a.tile(i, j));
                }
            }
            Buffer[][] work = new Buffer[2][nt];
            List<Buffer> tFactors = new ArrayList<>(); // this rank's steps' T in staging, in the order of f.t(i, k)
            for (int k = 0; k < steps; k++) {
                int w = a.tileCols(k);
                int rk = a.tileRows(k);
                int refl = Math.min(rk, w);
                int vTag = qrTag(base, mt, k, 0, 0);
                int tkkTag = qrTag(base, mt, k, k, 1);
                boolean owner = columnOwner(a, k) == me;
                if (!owner && !ownsColumn(a, k + 1, nt)) {
                    continue;
                }
                List<Integer> right = owner ? columnOwners(a, k + 1, nt, me) : List.of();
                List<Runnable> toSend = new ArrayList<>();
                Operand v;
                Operand tkk;
                if (owner) {
                    Slot d = s[k][k];
                    long tBytes = (long) refl * w * es;
                    Buffer tHost = run.staging(tBytes);
                    long vBytes = (long) rk * refl * es;
                    Slot vs = new Slot(null, rk, refl, run.device(vBytes), run.staging(vBytes), vBytes);
                    Slot ts = new Slot(null, refl, w, run.device(tBytes), tHost, tBytes);
                    tFactors.add(tHost);
                    run.sched.copyOut(d.dev, d.host, d.bytes);
                    Event made = run.sched.host(() -> DeviceTileKernels.geqrtOnHost(t, d.host, rk, w, tHost, vs.host),
                            estimateNs(2.0 * rk * w * w), Access.out(d.host), Access.out(tHost), Access.out(vs.host));
                    run.sched.copyIn(tHost, ts.dev, tBytes);
                    run.sched.copyIn(vs.host, vs.dev, vBytes);
                    v = new Operand(vs, null, null);
                    tkk = new Operand(ts, null, null);
                    toSend.add(() -> {
                        if (right.isEmpty()) {
                            return;
                        }
                        made.synchronize();
                        for (int dest : right) {
                            sends.add(send(comm, vs.host, vBytes, dest, vTag));
                            sends.add(send(comm, tHost, tBytes, dest, tkkTag));
                        }
                    });
                } else {
                    int from = columnOwner(a, k);
                    v = run.incoming(comm, t, from, vTag, rk, refl, "the reflectors of panel " + k);
                    tkk = run.incoming(comm, t, from, tkkTag, refl, w, "T(" + k + ", " + k + ")");
                }
                for (int j = k + 1; j < nt; j++) {
                    Slot c = s[k][j];
                    if (c == null) {
                        continue;
                    }
                    Slot vs = run.landed(v);
                    Slot ts = run.landed(tkk);
                    Buffer wj = work(run, work, k, j, nb, t);
                    int cols = c.cols();
                    boolean next = j == k + 1;
                    run.launch(DeviceTileKernels.gemm(cublas, t, Trans.T, Trans.N, refl, cols, rk, 1.0, vs.dev, rk,
                            c.dev, c.ld(), 0.0, wj, nb), 2.0 * refl * cols * rk, next);
                    run.launch(DeviceTileKernels.trmm(cublas, t, Side.LEFT, Uplo.UPPER, Trans.T, Diag.NON_UNIT, refl,
                            cols, 1.0, ts.dev, refl, wj, nb), (double) refl * refl * cols, next);
                    run.launch(DeviceTileKernels.gemm(cublas, t, Trans.N, Trans.N, rk, cols, refl, -1.0, vs.dev, rk, wj,
                            nb, 1.0, c.dev, c.ld()), 2.0 * refl * cols * rk, next);
                }
                for (int i = k + 1; i < mt; i++) {
                    int ri = a.tileRows(i);
                    int viTag = qrTag(base, mt, k, i, 2);
                    int tiTag = qrTag(base, mt, k, i, 1);
                    Operand vi;
                    Operand ti;
                    if (owner) {
                        Slot d = s[k][k];
                        Slot b = s[i][k];
                        long tiBytes = (long) w * w * es;
                        Slot ts = new Slot(null, w, w, run.device(tiBytes), run.staging(tiBytes), tiBytes);
                        tFactors.add(ts.host);
                        run.sched.copyOut(b.dev, b.host, b.bytes);
                        Event made = run.sched.host(() -> DeviceTileKernels.tpqrtOnHost(t, d.host, d.ld(), b.host, ri,
                                w, ts.host), estimateNs(2.0 * ri * w * w), Access.out(d.host), Access.out(b.host),
                                Access.out(ts.host));
                        run.sched.copyIn(b.host, b.dev, b.bytes);
                        run.sched.copyIn(ts.host, ts.dev, tiBytes);
                        vi = new Operand(b, null, null);
                        ti = new Operand(ts, null, null);
                        toSend.add(() -> {
                            if (right.isEmpty()) {
                                return;
                            }
                            made.synchronize();
                            for (int dest : right) {
                                sends.add(send(comm, b.host, b.bytes, dest, viTag));
                                sends.add(send(comm, ts.host, tiBytes, dest, tiTag));
                            }
                        });
                    } else {
                        int from = columnOwner(a, k);
                        vi = run.incoming(comm, t, from, viTag, ri, w, "reflectors (" + i + ", " + k + ")");
                        ti = run.incoming(comm, t, from, tiTag, w, w, "T(" + i + ", " + k + ")");
                    }
                    for (int j = k + 1; j < nt; j++) {
                        Slot c1 = s[k][j];
                        Slot c2 = s[i][j];
                        if (c1 == null) {
                            continue;
                        }
                        Slot b = run.landed(vi);
                        Slot ts = run.landed(ti);
                        Buffer wj = work(run, work, k, j, nb, t);
                        int cols = c2.cols();
                        boolean next = j == k + 1;
                        run.launch(DeviceTileKernels.geam(cublas, t, w, cols, 1.0, c1.dev, c1.ld(), 0.0, wj, nb),
                                (double) w * cols, next);
                        run.launch(DeviceTileKernels.gemm(cublas, t, Trans.T, Trans.N, w, cols, ri, 1.0, b.dev, ri,
                                c2.dev, c2.ld(), 1.0, wj, nb), 2.0 * w * cols * ri, next);
                        run.launch(DeviceTileKernels.trmm(cublas, t, Side.LEFT, Uplo.UPPER, Trans.T, Diag.NON_UNIT, w,
                                cols, 1.0, ts.dev, w, wj, nb), (double) w * w * cols, next);
                        run.launch(DeviceTileKernels.geam(cublas, t, w, cols, -1.0, wj, nb, 1.0, c1.dev, c1.ld()),
                                (double) w * cols, next);
                        run.launch(DeviceTileKernels.gemm(cublas, t, Trans.N, Trans.N, ri, cols, w, -1.0, b.dev, ri,
                                wj, nb, 1.0, c2.dev, c2.ld()), 2.0 * w * cols * ri, next);
                    }
                }
                if (owner) {
                    Slot d = s[k][k];
                    run.sched.copyIn(d.host, d.dev, d.bytes);
                }
                toSend.forEach(Runnable::run);
            }
            run.finish(sends, s);
            run.copyBack();
            int n = 0;
            for (int k = 0; k < steps; k++) {
                if (columnOwner(a, k) != me) {
                    continue;
                }
                for (int i = k; i < mt; i++) {
                    Tile ti = f.t(i, k);
                    Pointer.memcpy(ti.pointer(), new Pointer(tFactors.get(n++).bytes().duplicate().clear()),
                            (long) ti.size() * es);
                }
                f.v(k).copyFrom(a.tile(k, k));
            }
        } catch (RuntimeException | Error e) {
            f.close();
            throw e;
        }
        return f;
    }

    /**
     * Runs this rank's share of an operation on a fresh {@link Run}, whose buffers go back to their pools at the end,
     * whatever happens. A failure that the ranks did not agree on (a device out of memory, a
     * CUDA error, a peer gone) aborts the communicator with a reason naming this rank, so that the other ranks' waits
     * for this rank's tiles fail at once instead of hanging, and before the operation's buffers go back to their pools
     * (an aborted communicator writes no more received tiles into them); the communicator is unusable afterwards. A
     * matrix that is not positive definite or is singular is agreed on by all ranks and leaves the communicator usable.
     */
    private <T> T share(Communicator comm, String op, java.util.function.Function<Run, T> body) {
        try (Run run = new Run()) {
            try {
                return body.apply(run);
            } catch (NotPositiveDefiniteException | SingularMatrixException | CommAbortedException e) {
                throw e;
            } catch (RuntimeException | Error e) {
                if (comm != null) {
                    comm.abort("rank " + comm.rank() + " failed in the device algebra's " + op + ": " + e);
                }
                throw e;
            }
        }
    }

    /** The tag of a QR message of step k about tile row i: 0 the explicit V(k), 1 T(i, k), 2 the reflectors A(i, k). */
    private static int qrTag(long base, int mt, int k, int i, int kind) {
        return (int) ((base + (3L * k + kind) * mt + i) % DistributedMatrix.GATHER_TAG_BASE);
    }

    private static void requireWholeColumns(String op, DistributedMatrix a) {
        for (int j = 0; j < a.nt(); j++) {
            for (int i = 1; i < a.mt(); i++) {
                if (!a.distribution().owner(i, j).equals(a.distribution().owner(0, j))) {
                    throw new IllegalArgumentException(op + ": " + a.describe() + " splits tile column " + j + " over "
                            + "ranks (tile " + i + " is on rank " + a.distribution().owner(i, j).rank() + "); the "
                            + "device " + op + " factors each panel on one rank: distribute by columns (a 1 x P grid, "
                            + "or TileAlgebra.redistribute), or use TileAlgebra, which copies by columns itself");
                }
            }
        }
    }

    private static int columnOwner(DistributedMatrix a, int j) {
        return a.distribution().owner(0, j).rank();
    }

    /** Whether this rank owns one of tile columns [c0, c1) (of a matrix distributed by columns). */
    private static boolean ownsColumn(DistributedMatrix a, int c0, int c1) {
        for (int j = c0; j < c1; j++) {
            if (a.isLocal(0, j)) {
                return true;
            }
        }
        return false;
    }

    /** Ranks other than {@code me} owning one of tile columns [c0, c1). */
    private static List<Integer> columnOwners(DistributedMatrix a, int c0, int c1, int me) {
        return owners(a, 0, 1, c0, c1, me);
    }

    /** Ranks other than {@code me} whose tiles read L(i, k) in step k: tile row i (columns k+1..i), tile column i. */
    private static List<Integer> panelReaders(DistributedMatrix a, int i, int k, int me) {
        TreeSet<Integer> ranks = new TreeSet<>(owners(a, i, i + 1, k + 1, i + 1, me));
        ranks.addAll(owners(a, i, a.mt(), i, i + 1, me));
        return new ArrayList<>(ranks);
    }

    /** Whether this rank's trailing update of step k reads L(i, k), i > k. */
    private static boolean readsPanelTile(DistributedMatrix a, int i, int k, int me) {
        return owns(a, i, i + 1, k + 1, i + 1, me) || owns(a, i, a.mt(), i, i + 1, me);
    }

    /** Ranks other than {@code me} owning a tile in rows [r0, r1) x columns [c0, c1), lower triangle for squares. */
    private static List<Integer> owners(DistributedMatrix m, int r0, int r1, int c0, int c1, int me) {
        TreeSet<Integer> ranks = new TreeSet<>();
        for (int j = c0; j < c1; j++) {
            for (int i = r0; i < r1; i++) {
                int r = m.distribution().owner(i, j).rank();
                if (r != me) {
                    ranks.add(r);
                }
            }
        }
        return new ArrayList<>(ranks);
    }

    private static boolean owns(DistributedMatrix m, int r0, int r1, int c0, int c1, int me) {
        for (int j = c0; j < c1; j++) {
            for (int i = r0; i < r1; i++) {
                if (m.isLocal(i, j)) {
                    return true;
                }
            }
        }
        return false;
    }

    /** The first of {@code count} tags for one operation's tile messages (below the gather tags). */
    private long nextTags(long count) {
        long first = tags;
        tags = (tags + count) % DistributedMatrix.GATHER_TAG_BASE;
        return first;
    }

    /** The tag of tile (i, j) of {@code m}, the operation's tags starting at {@code base + offset}. */
    private static int tag(long base, DistributedMatrix m, int i, int j, int offset) {
        return (int) ((base + offset + (long) j * m.mt() + i) % DistributedMatrix.GATHER_TAG_BASE);
    }

    private static CompletableFuture<Void> send(Communicator comm, Tile tile, int dest, int tag) {
        return comm.isend(tile.pointer().address(), (long) tile.size() * tile.type().bytes(), dest, tag);
    }

    private static CompletableFuture<Void> send(Communicator comm, Buffer host, long bytes, int dest, int tag) {
        return comm.isend(host.bytes().duplicate().clear().limit((int) bytes), dest, tag);
    }

    /**
     * A tile an operation reads: this rank's own slot, or another rank's tile whose receive into staging is posted and
     * which is copied in when it first lands ({@link Run#landed}).
     */
    private static final class Operand {
        final Slot slot;
        final CompletableFuture<Long> arrival;
        final String what;
        boolean copiedIn;

        Operand(Slot slot, CompletableFuture<Long> arrival, String what) {
            this.slot = slot;
            this.arrival = arrival;
            this.what = what;
        }
    }

    // ------------------------------------------------------------------------------------------------

    private void open() {
        if (closed) {
            throw new IllegalStateException("this DeviceTileAlgebra is closed");
        }
    }

    /**
     * Checks an operation's operands: true when they are spread over the ranks of the context's communicator, false
     * when they are whole matrices.
     */
    private boolean spread(String op, DistributedMatrix... ms) {
        boolean spread = !ms[0].isWhole();
        Communicator comm = ctx.communicator();
        for (DistributedMatrix m : ms) {
            if (m.isWhole() == spread) {
                throw new IllegalArgumentException(op + ": operands must all be whole or all spread over the ranks, "
                        + "got " + ms[0].describe() + " and " + m.describe());
            }
            if (spread && comm == null) {
                throw new IllegalArgumentException(op + ": " + m.describe() + " is spread over "
                        + m.distribution().ranks() + " ranks; launch the DeviceTileAlgebra with "
                        + "Context.communicator(...), or gather it to one rank");
            }
            if (spread && (m.distribution().ranks() != comm.size() || m.localRank() != comm.rank())) {
                throw new IllegalArgumentException(op + ": " + m.describe() + " is rank " + m.localRank() + "'s part "
                        + "of " + m.distribution().ranks() + " ranks, but this is rank " + comm.rank() + " of a "
                        + "communicator of " + comm.size());
            }
            if (m.distribution().layers() > 1) {
                throw new IllegalArgumentException(op + ": " + m.describe() + " is replicated on "
                        + m.distribution().layers() + " layers; a device algebra takes one copy of each tile "
                        + "(redistribute it, or use TileAlgebra's 2.5D GEMM)");
            }
            if (m.tileSize() != ms[0].tileSize() || m.type() != ms[0].type()) {
                throw new IllegalArgumentException(op + ": operands must share tile size and type, got "
                        + ms[0].describe() + " and " + m.describe());
            }
        }
        return spread;
    }

    private long estimateNs(double flops) {
        return Math.max(1, (long) (flops / ctx.gflops()));
    }

    /**
     * A tile's device buffer and its pinned staging buffer; {@code tile} is the matrix's tile, or null for a copy of
     * another rank's tile (rows x cols, column-major, ld = rows).
     */
    private record Slot(Tile tile, int rows, int cols, Buffer dev, Buffer host, long bytes) {
        int ld() {
            return rows;
        }
    }

    /**
     * One operation's buffers and scheduler. Closing it synchronises the device unless {@link #finish()} did, so
     * buffers go back to their pools only once no device work uses them, whatever failed on the way.
     */
    private final class Run implements AutoCloseable {
        final StreamScheduler sched = new StreamScheduler(device, ctx.singleStream());
        private final List<Buffer> held = new ArrayList<>();
        private final List<Slot> downloads = new ArrayList<>();
        private boolean finished;

        Slot slot(Tile t) {
            long bytes = (long) t.size() * t.type().bytes();
            Buffer dev = device.memory().acquire(bytes);
            held.add(dev);
            Buffer host = device.staging().acquire(bytes);
            held.add(host);
            return new Slot(t, t.rows(), t.cols(), dev, host, bytes);
        }

        /** A pinned staging buffer held until the operation ends. */
        Buffer staging(long bytes) {
            Buffer b = device.staging().acquire(bytes);
            held.add(b);
            return b;
        }

        /** A device buffer held until the operation ends. */
        Buffer device(long bytes) {
            Buffer b = device.memory().acquire(bytes);
            held.add(b);
            return b;
        }

        /**
         * Tile (i, j) of {@code m} as an operand: {@code own} (or a fresh upload) where this rank owns it, else a slot
         * whose receive from the owner is posted now.
         */
        Operand operand(Communicator comm, DistributedMatrix m, int i, int j, int tag, Slot own) {
            if (m.isLocal(i, j)) {
                return new Operand(own != null ? own : upload(m.tile(i, j)), null, null);
            }
            return incoming(comm, m.type(), m.distribution().owner(i, j).rank(), tag, m.tileRows(i), m.tileCols(j),
                    "tile (" + i + ", " + j + ") of " + m.describe());
        }

        /** A rows x cols block from another rank, its receive into a fresh staging buffer posted now. */
        Operand incoming(Communicator comm, DType type, int source, int tag, int rows, int cols, String what) {
            long bytes = (long) rows * cols * type.bytes();
            Slot s = new Slot(null, rows, cols, device(bytes), staging(bytes), bytes);
            ByteBuffer into = s.host.bytes().duplicate().clear().limit((int) bytes);
            return new Operand(s, comm.irecv(into, source, tag), what + " from rank " + source + " (tag " + tag + ")");
        }

        Operand operand(Communicator comm, DistributedMatrix m, int i, int j, int tag) {
            return operand(comm, m, i, j, tag, null);
        }

        /** The operand's slot, after waiting for its tile to arrive and enqueuing its copy in, the first time. */
        Slot landed(Operand o) {
            if (o.arrival != null && !o.copiedIn) {
                long got = o.arrival.join();
                if (got != o.slot.bytes) {
                    throw new IllegalStateException(o.what + " arrived with " + got + " bytes, expected "
                            + o.slot.bytes);
                }
                sched.copyIn(o.slot.host, o.slot.dev, o.slot.bytes);
                o.copiedIn = true;
            }
            return o.slot;
        }

        Slot upload(Tile t) {
            Slot s = slot(t);
            Pointer.memcpy(new Pointer(s.host.bytes().duplicate().clear()), t.pointer(), s.bytes);
            sched.copyIn(s.host, s.dev, s.bytes);
            return s;
        }

        void launch(DeviceCall call, double flops, boolean critical) {
            sched.launch(call, estimateNs(flops), critical);
        }

        void download(Slot s) {
            sched.copyOut(s.dev, s.host, s.bytes);
            downloads.add(s);
        }

        /**
         * Waits for the sends (they read staging buffers that the downloads overwrite, in LU with rows swapped since),
         * enqueues the download of every tile held, and waits for everything enqueued.
         */
        void finish(List<CompletableFuture<Void>> sends, Slot[][] tiles) {
            CompletableFuture.allOf(sends.toArray(new CompletableFuture[0])).join();
            for (Slot[] row : tiles) {
                for (Slot x : row) {
                    if (x != null) {
                        download(x);
                    }
                }
            }
            finish();
        }

        /** Waits for everything enqueued. */
        void finish() {
            finished = true;
            sched.synchronize();
        }

        /** After {@link #finish()}: the downloaded tiles from staging into the matrix. */
        void copyBack() {
            for (Slot s : downloads) {
                Pointer.memcpy(s.tile.pointer(), new Pointer(s.host.bytes().duplicate().clear()), s.bytes);
            }
        }

        @Override
        public void close() {
            try {
                if (!finished) {
                    sched.synchronize();
                }
            } finally {
                for (Buffer b : held) {
                    b.close();
                }
            }
        }
    }

    /** Destroys the cuBLAS handles (the device stays open). */
    @Override
    public synchronized void close() {
        if (closed) {
            return;
        }
        closed = true;
        if (cublas != null) {
            cublas.close();
        }
    }

    @Override
    public String toString() {
        return "DeviceTileAlgebra on " + device.name();
    }
}
