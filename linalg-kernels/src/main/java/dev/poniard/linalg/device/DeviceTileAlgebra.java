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
import dev.poniard.scheduler.stream.Buffer;
import dev.poniard.scheduler.stream.Device;
import dev.poniard.scheduler.stream.DeviceCall;
import dev.poniard.scheduler.stream.StreamScheduler;
import dev.poniard.scheduler.stream.StreamScheduler.Access;
import dev.poniard.scheduler.stream.cuda.CudaDevice;
import java.nio.IntBuffer;
import java.util.ArrayList;
import java.util.List;
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
 * copies out, synchronises the device once, and copies staging back into the tiles. The host never blocks
 * between (1) and (3).
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

    /** C := alpha op(A) op(B) + beta C, all three whole matrices with the same tile size and type. */
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
        check("gemm", a, b, c);
        if (a == c || b == c) {
            throw new IllegalArgumentException("gemm: C (" + c + ") is also " + (a == c ? "A" : "B")
                    + "; C's tiles are overwritten while A's and B's are read, so pass a copy");
        }
        DType t = c.type();
        int kt = ta == Trans.N ? a.nt() : a.mt();
        try (Run run = new Run()) {
            // beta = 0: BLAS does not read C, so its tiles need no copy in
            Slot[][] cs = new Slot[c.mt()][c.nt()];
            for (int j = 0; j < c.nt(); j++) {
                for (int i = 0; i < c.mt(); i++) {
                    cs[i][j] = beta == 0 ? run.slot(c.tile(i, j)) : run.upload(c.tile(i, j));
                }
            }
            // A and B in the order the steps read them, so the first products can start early
            Slot[][] as = new Slot[a.mt()][a.nt()];
            Slot[][] bs = new Slot[b.mt()][b.nt()];
            for (int l = 0; l < kt; l++) {
                for (int i = 0; i < c.mt(); i++) {
                    int r = ta == Trans.N ? i : l, q = ta == Trans.N ? l : i;
                    as[r][q] = run.upload(a.tile(r, q));
                }
                for (int j = 0; j < c.nt(); j++) {
                    int r = tb == Trans.N ? l : j, q = tb == Trans.N ? j : l;
                    bs[r][q] = run.upload(b.tile(r, q));
                }
            }
            for (int l = 0; l < kt; l++) {
                double betaStep = l == 0 ? beta : 1.0;
                for (int i = 0; i < c.mt(); i++) {
                    for (int j = 0; j < c.nt(); j++) {
                        Slot x = ta == Trans.N ? as[i][l] : as[l][i];
                        Slot y = tb == Trans.N ? bs[l][j] : bs[j][l];
                        Slot z = cs[i][j];
                        int kk = ta == Trans.N ? x.tile.cols() : x.tile.rows();
                        run.launch(DeviceTileKernels.gemm(cublas, t, ta, tb, z.tile.rows(), z.tile.cols(), kk, alpha,
                                x.dev, x.ld(), y.dev, y.ld(), betaStep, z.dev, z.ld()),
                                2.0 * z.tile.rows() * z.tile.cols() * kk, false);
                    }
                }
            }
            for (Slot[] row : cs) {
                for (Slot z : row) {
                    run.download(z);
                }
            }
            run.finish();
            run.copyBack();
        }
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
        check("cholesky", a);
        DType t = a.type();
        int nt = a.nt();
        int nb = a.tileSize();
        PotrfFailure failure = new PotrfFailure();
        try (Run run = new Run()) {
            Slot[][] s = new Slot[nt][nt];
            for (int j = 0; j < nt; j++) {
                for (int i = j; i < nt; i++) {
                    s[i][j] = run.upload(a.tile(i, j));
                }
            }
            for (int k = 0; k < nt; k++) {
                Slot d = s[k][k];
                potrf(run, t, k, d, failure);
                int w = d.tile.cols();
                for (int i = k + 1; i < nt; i++) {
                    Slot b = s[i][k];
                    run.launch(DeviceTileKernels.trsm(cublas, t, Side.RIGHT, Uplo.LOWER, Trans.T, Diag.NON_UNIT,
                            b.tile.rows(), w, 1.0, d.dev, d.ld(), b.dev, b.ld()), (double) b.tile.rows() * w * w, true);
                }
                for (int j = k + 1; j < nt; j++) {
                    // look-ahead: tile column k + 1 is the next panel
                    boolean next = j == k + 1;
                    Slot ajk = s[j][k];
                    Slot ajj = s[j][j];
                    run.launch(DeviceTileKernels.syrk(cublas, t, Uplo.LOWER, Trans.N, ajj.tile.rows(), w, -1.0, ajk.dev,
                            ajk.ld(), 1.0, ajj.dev, ajj.ld()), (double) ajj.tile.rows() * ajj.tile.rows() * w, next);
                    for (int i = j + 1; i < nt; i++) {
                        Slot aik = s[i][k];
                        Slot aij = s[i][j];
                        run.launch(DeviceTileKernels.gemm(cublas, t, Trans.N, Trans.T, aij.tile.rows(), aij.tile.cols(), w,
                                -1.0, aik.dev, aik.ld(), ajk.dev, ajk.ld(), 1.0, aij.dev, aij.ld()),
                                2.0 * aij.tile.rows() * aij.tile.cols() * w, next);
                    }
                }
            }
            for (int j = 0; j < nt; j++) {
                for (int i = j; i < nt; i++) {
                    run.download(s[i][j]);
                }
            }
            run.finish();
            if (failure.tile >= 0) {
                throw new NotPositiveDefiniteException(failure.tile, failure.tile * nb + failure.info - 1);
            }
            run.copyBack();
        }
        return a;
    }

    /** The first POTRF that failed; written by a host function, read after the device has synchronised. */
    private static final class PotrfFailure {
        volatile int tile = -1;
        volatile int info;
    }

    /** Hybrid POTRF of diagonal tile k: out to its staging buffer, LAPACK on the host, back in. */
    private void potrf(Run run, DType t, int k, Slot d, PotrfFailure failure) {
        int n = d.tile.rows();
        run.sched.copyOut(d.dev, d.host, d.bytes);
        run.sched.host(() -> {
            if (failure.tile >= 0) {
                return;
            }
            int info = DeviceTileKernels.potrfOnHost(t, d.host, n);
            if (info > 0) {
                failure.info = info;
                failure.tile = k;
            }
        }, estimateNs((double) n * n * n / 3), Access.out(d.host));
        run.sched.copyIn(d.host, d.dev, d.bytes);
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
        check("lu", a);
        DType t = a.type();
        int mt = a.mt();
        int nt = a.nt();
        int nb = a.tileSize();
        int steps = Math.min(mt, nt);
        int[] piv = new int[Math.min(a.rows(), a.cols())];
        PanelFailure failure = new PanelFailure();
        CudaDevice gpu = device instanceof CudaDevice ? (CudaDevice) device : null;
        try (Run run = new Run()) {
            Slot[][] s = new Slot[mt][nt];
            for (int j = 0; j < nt; j++) {
                for (int i = 0; i < mt; i++) {
                    s[i][j] = run.upload(a.tile(i, j));
                }
            }
            Buffer scratch = run.staging((long) a.rows() * nb * t.bytes());
            for (int k = 0; k < steps; k++) {
                int w = a.tileCols(k);
                int pm = a.rows() - k * nb;
                int npiv = Math.min(pm, w);
                Buffer pivHost = run.staging(4L * npiv);
                Buffer pivDev = run.device(4L * npiv);
                panel(run, t, a, s, k, scratch, pivHost, piv, failure);
                run.sched.copyIn(pivHost, pivDev, 4L * npiv);
                Slot d = s[k][k];
                for (int j = 0; j < nt; j++) {
                    if (j == k) {
                        continue;
                    }
                    // look-ahead: tile column k + 1 is the next panel
                    boolean next = j == k + 1;
                    List<Buffer> column = new ArrayList<>();
                    for (int i = k; i < mt; i++) {
                        column.add(s[i][j].dev);
                    }
                    int cols = a.tileCols(j);
                    run.launch(DeviceTileKernels.laswp(gpu, t, column, nb, a.tileRows(mt - 1), cols, pivDev, npiv),
                            (double) npiv * cols, next);
                    if (j < k) {
                        continue; // the left swaps of finished columns are all they need
                    }
                    Slot u = s[k][j];
                    run.launch(DeviceTileKernels.trsm(cublas, t, Side.LEFT, Uplo.LOWER, Trans.N, Diag.UNIT,
                            u.tile.rows(), cols, 1.0, d.dev, d.ld(), u.dev, u.ld()),
                            (double) u.tile.rows() * u.tile.rows() * cols, next);
                    for (int i = k + 1; i < mt; i++) {
                        Slot l = s[i][k];
                        Slot c = s[i][j];
                        run.launch(DeviceTileKernels.gemm(cublas, t, Trans.N, Trans.N, c.tile.rows(), cols, w, -1.0,
                                l.dev, l.ld(), u.dev, u.ld(), 1.0, c.dev, c.ld()),
                                2.0 * c.tile.rows() * cols * w, next);
                    }
                }
            }
            for (int j = 0; j < nt; j++) {
                for (int i = 0; i < mt; i++) {
                    run.download(s[i][j]);
                }
            }
            run.finish();
            if (failure.tile >= 0) {
                throw new SingularMatrixException(failure.tile, failure.column);
            }
            run.copyBack();
        }
        return new LuFactorization(a, piv);
    }

    /** The first panel that met an exactly zero pivot; written by a host function, read after synchronising. */
    private static final class PanelFailure {
        volatile int tile = -1;
        volatile int column;
    }

    /**
     * Hybrid getrf of panel k (tiles k.. of tile column k), as MAGMA does: the tiles out to their staging buffers,
     * LAPACK on the host gathers, factors and scatters them, then they go back in. The host function writes the
     * panel's pivots into {@code pivHost} (0-based from the panel's top, for the device's row interchanges) and into
     * {@code piv} (global rows, the result). After a singular panel the later ones do nothing.
     */
    private void panel(Run run, DType t, DistributedMatrix a, Slot[][] s, int k, Buffer scratch, Buffer pivHost,
                       int[] piv, PanelFailure failure) {
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
            rows[i - k] = p.tile.rows();
            acc.add(Access.out(p.host));
        }
        acc.add(Access.out(scratch));
        acc.add(Access.out(pivHost));
        int pm = a.rows() - k * nb;
        run.sched.host(() -> {
            if (failure.tile >= 0) {
                return;
            }
            int info = DeviceTileKernels.getrfOnHost(t, hosts, rows, w, scratch, pivHost);
            IntBuffer rel = DeviceTileKernels.ints(pivHost);
            for (int r = 0; r < Math.min(pm, w); r++) {
                piv[k * nb + r] = k * nb + rel.get(r);
            }
            if (info > 0) {
                failure.column = k * nb + info - 1;
                failure.tile = k;
            }
        }, estimateNs((double) pm * w * w - (double) w * w * w / 3), acc.toArray(new Access[0]));
        for (int i = k; i < mt; i++) {
            Slot p = s[i][k];
            run.sched.copyIn(p.host, p.dev, p.bytes);
        }
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
        check("qr", a);
        DType t = a.type();
        int mt = a.mt();
        int nt = a.nt();
        int nb = a.tileSize();
        int steps = Math.min(mt, nt);
        QrFactorization f = QrFactorization.allocate(a, nb);
        try (Run run = new Run()) {
            Slot[][] s = new Slot[mt][nt];
            for (int j = 0; j < nt; j++) {
                for (int i = 0; i < mt; i++) {
                    s[i][j] = run.upload(a.tile(i, j));
                }
            }
            // one work block per tile column and step parity: the updates of a tile column in one step are chained
            // through its tile in the panel's row anyway, and the next step's may start before this step's end
            Buffer[][] work = new Buffer[2][nt];
            List<Buffer> tFactors = new ArrayList<>(); // T in staging, in the order of f.t(i, k), copied out after the run
            for (int k = 0; k < steps; k++) {
                Slot d = s[k][k];
                int w = a.tileCols(k);
                int rk = d.tile.rows();
                int refl = Math.min(rk, w);
                long tBytes = (long) f.t(k, k).size() * t.bytes();
                Buffer tHost = run.staging(tBytes);
                Buffer tDev = run.device(tBytes);
                long vBytes = (long) rk * refl * t.bytes();
                Buffer vHost = run.staging(vBytes);
                Buffer vDev = run.device(vBytes);
                tFactors.add(tHost);
                // the diagonal tile stays on the host until its last TPQRT; V goes in as an explicit matrix
                run.sched.copyOut(d.dev, d.host, d.bytes);
                run.sched.host(() -> DeviceTileKernels.geqrtOnHost(t, d.host, rk, w, tHost, vHost),
                        estimateNs(2.0 * rk * w * w), Access.out(d.host), Access.out(tHost), Access.out(vHost));
                run.sched.copyIn(tHost, tDev, tBytes);
                run.sched.copyIn(vHost, vDev, vBytes);
                for (int j = k + 1; j < nt; j++) {
                    Slot c = s[k][j];
                    Buffer wj = work(run, work, k, j, nb, t);
                    int cols = c.tile.cols();
                    boolean next = j == k + 1;
                    // C := (I - V T V^T)^T C = C - V (T^T (V^T C))
                    run.launch(DeviceTileKernels.gemm(cublas, t, Trans.T, Trans.N, refl, cols, rk, 1.0, vDev, rk,
                            c.dev, c.ld(), 0.0, wj, nb), 2.0 * refl * cols * rk, next);
                    run.launch(DeviceTileKernels.trmm(cublas, t, Side.LEFT, Uplo.UPPER, Trans.T, Diag.NON_UNIT, refl,
                            cols, 1.0, tDev, refl, wj, nb), (double) refl * refl * cols, next);
                    run.launch(DeviceTileKernels.gemm(cublas, t, Trans.N, Trans.N, rk, cols, refl, -1.0, vDev, rk, wj,
                            nb, 1.0, c.dev, c.ld()), 2.0 * refl * cols * rk, next);
                }
                for (int i = k + 1; i < mt; i++) {
                    Slot b = s[i][k];
                    int ri = b.tile.rows();
                    long tiBytes = (long) f.t(i, k).size() * t.bytes();
                    Buffer tiHost = run.staging(tiBytes);
                    Buffer tiDev = run.device(tiBytes);
                    tFactors.add(tiHost);
                    run.sched.copyOut(b.dev, b.host, b.bytes);
                    run.sched.host(() -> DeviceTileKernels.tpqrtOnHost(t, d.host, d.ld(), b.host, ri, w, tiHost),
                            estimateNs(2.0 * ri * w * w), Access.out(d.host), Access.out(b.host), Access.out(tiHost));
                    run.sched.copyIn(b.host, b.dev, b.bytes);
                    run.sched.copyIn(tiHost, tiDev, tiBytes);
                    for (int j = k + 1; j < nt; j++) {
                        Slot c1 = s[k][j];
                        Slot c2 = s[i][j];
                        Buffer wj = work(run, work, k, j, nb, t);
                        int cols = c2.tile.cols();
                        boolean next = j == k + 1;
                        // [C1; C2] := (I - [I; V] T [I; V]^T)^T [C1; C2], C1 the top w rows of the panel row's tile:
                        // W = C1 + V^T C2; W = T^T W; C1 -= W; C2 -= V W
                        run.launch(DeviceTileKernels.geam(cublas, t, w, cols, 1.0, c1.dev, c1.ld(), 0.0, wj, nb),
                                (double) w * cols, next);
                        run.launch(DeviceTileKernels.gemm(cublas, t, Trans.T, Trans.N, w, cols, ri, 1.0, b.dev, ri,
                                c2.dev, c2.ld(), 1.0, wj, nb), 2.0 * w * cols * ri, next);
                        run.launch(DeviceTileKernels.trmm(cublas, t, Side.LEFT, Uplo.UPPER, Trans.T, Diag.NON_UNIT, w,
                                cols, 1.0, tiDev, w, wj, nb), (double) w * w * cols, next);
                        run.launch(DeviceTileKernels.geam(cublas, t, w, cols, -1.0, wj, nb, 1.0, c1.dev, c1.ld()),
                                (double) w * cols, next);
                        run.launch(DeviceTileKernels.gemm(cublas, t, Trans.N, Trans.N, ri, cols, w, -1.0, b.dev, ri,
                                wj, nb, 1.0, c2.dev, c2.ld()), 2.0 * w * cols * ri, next);
                    }
                }
                run.sched.copyIn(d.host, d.dev, d.bytes);
            }
            for (int j = 0; j < nt; j++) {
                for (int i = 0; i < mt; i++) {
                    run.download(s[i][j]);
                }
            }
            run.finish();
            run.copyBack();
            // T as the host functions left it in staging; the reflector copies are the diagonal tiles' lower parts
            int n = 0;
            for (int k = 0; k < steps; k++) {
                for (int i = k; i < mt; i++) {
                    Tile ti = f.t(i, k);
                    Pointer.memcpy(ti.pointer(), new Pointer(tFactors.get(n++).bytes().duplicate().clear()),
                            (long) ti.size() * t.bytes());
                }
                f.v(k).copyFrom(a.tile(k, k));
            }
        } catch (RuntimeException | Error e) {
            f.close();
            throw e;
        }
        return f;
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

    private void open() {
        if (closed) {
            throw new IllegalStateException("this DeviceTileAlgebra is closed");
        }
    }

    private static void check(String op, DistributedMatrix... ms) {
        for (DistributedMatrix m : ms) {
            if (!m.isWhole()) {
                throw new IllegalArgumentException(op + ": " + m.describe() + " is spread over "
                        + m.distribution().ranks() + " ranks; a device algebra works on whole matrices (gather it to"
                        + " one rank, or use TileAlgebra with a communicator)");
            }
            if (m.tileSize() != ms[0].tileSize() || m.type() != ms[0].type()) {
                throw new IllegalArgumentException(op + ": operands must share tile size and type, got "
                        + ms[0].describe() + " and " + m.describe());
            }
        }
    }

    private long estimateNs(double flops) {
        return Math.max(1, (long) (flops / ctx.gflops()));
    }

    /** A tile's device buffer and its pinned staging buffer. */
    private record Slot(Tile tile, Buffer dev, Buffer host, long bytes) {
        int ld() {
            return tile.ld();
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
            return new Slot(t, dev, host, bytes);
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
