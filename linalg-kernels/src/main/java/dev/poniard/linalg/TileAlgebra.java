package dev.poniard.linalg;

import static dev.poniard.linalg.tile.TileKernels.Diag;
import static dev.poniard.linalg.tile.TileKernels.Side;
import static dev.poniard.linalg.tile.TileKernels.Trans;
import static dev.poniard.linalg.tile.TileKernels.Uplo;

import dev.poniard.linalg.tile.Tile;
import dev.poniard.linalg.tile.TileCopy;
import dev.poniard.linalg.tile.TileKernels;
import dev.poniard.scheduler.DataDeps;
import dev.poniard.scheduler.Scheduler;
import dev.poniard.scheduler.TaskFailedException;
import dev.poniard.scheduler.TaskOptions;
import java.time.Duration;
import java.util.HashMap;
import java.util.Map;
import java.util.function.Consumer;

/**
 * Tile linear algebra as data-dependency DAGs on a {@link Scheduler}: every operation spawns one task
 * per tile kernel in a {@link DataDeps} region, declaring which tiles it reads and writes, and the region
 * orders them, gives them critical-path priorities (so the panel of the next step runs ahead of the
 * trailing update — look-ahead without hand-written lookahead code) and waits.
 *
 * <pre>{@code
 * try (TileAlgebra la = TileAlgebra.launch(new TileAlgebra.Context().workers(2));
 *      DistributedMatrix a = DistributedMatrix.spd(DType.F64, 1000, 256, 42)) {
 *     la.cholesky(a); // lower triangle of a now holds L
 * }
 * }</pre>
 *
 * <p><b>Implementation overview.</b> The algorithms are the right-looking tile algorithms of PLASMA
 * (Buttari, Langou, Kurzak, Dongarra 2009): Cholesky as POTRF/TRSM/SYRK/GEMM; LU with partial pivoting
 * where each panel (a whole tile column below the diagonal) is one LAPACK getrf task on a contiguous
 * copy, followed per trailing tile column by one swap+TRSM task and per tile by GEMM — pivots stay exact
 * (as LAPACK) rather than tile-local; QR with the flat-tree TS kernels GEQRT/GEMQRT/TPQRT/TPMQRT, where
 * the reflectors of each diagonal tile are copied out so that applying them to the right does not wait
 * for the TPQRTs that update the triangle. Failures (not positive definite, singular) surface as
 * {@link NotPositiveDefiniteException} / {@link SingularMatrixException} after every task of the
 * region has settled, so nothing is left running.
 *
 * <p>OpenBLAS is held to one thread on each worker through the scheduler's {@code workerStart} hook.
 * With a scheduler passed in by the caller, the caller owns that setting.
 */
public final class TileAlgebra implements AutoCloseable {
    /** Throughput assumed for cost hints until the scheduler's cost model has measured a kernel. */
    private static final double HINT_FLOPS_PER_NS = 20.0;

    /**
     * Configuration. Defaults: {@code poniard.workers} or all cores, QR inner block {@code poniard.linalg.ib}
     * (32), no trace.
     */
    public static final class Context {
        private int workers = Integer.getInteger("poniard.workers", Runtime.getRuntime().availableProcessors());
        private int innerBlock = Integer.getInteger("poniard.linalg.ib", 32);
        private boolean trace;
        private Scheduler scheduler;

        public int workers() {
            return workers;
        }

        /** Worker threads of the scheduler this component launches (ignored with {@link #scheduler(Scheduler)}). */
        public Context workers(int value) {
            workers = value;
            return this;
        }

        public int innerBlock() {
            return innerBlock;
        }

        /** Inner block size {@code ib} of the QR kernels (LAPACK's nb of dgeqrt/dtpqrt). */
        public Context innerBlock(int value) {
            innerBlock = value;
            return this;
        }

        public boolean trace() {
            return trace;
        }

        /** Records a trace of every task ({@link #scheduler()}{@code .trace()}). */
        public Context trace(boolean value) {
            trace = value;
            return this;
        }

        public Scheduler scheduler() {
            return scheduler;
        }

        /** Runs on an existing scheduler, which {@link TileAlgebra#close()} then leaves open. */
        public Context scheduler(Scheduler value) {
            scheduler = value;
            return this;
        }

        public Context conclude() {
            if (workers < 1) {
                throw new IllegalArgumentException("workers must be >= 1, got " + workers);
            }
            if (innerBlock < 1) {
                throw new IllegalArgumentException("innerBlock must be >= 1, got " + innerBlock);
            }
            return this;
        }
    }

    private final Context ctx;
    private final Scheduler scheduler;
    private final boolean ownsScheduler;

    private TileAlgebra(Context ctx) {
        this.ctx = ctx;
        if (ctx.scheduler() != null) {
            scheduler = ctx.scheduler();
            ownsScheduler = false;
        } else {
            scheduler = Scheduler.launch(new Scheduler.Context().name("linalg").workers(ctx.workers())
                    .trace(ctx.trace()).workerStart(TileKernels.singleThreaded()));
            ownsScheduler = true;
        }
    }

    public static TileAlgebra launch(Context ctx) {
        return new TileAlgebra(ctx.conclude());
    }

    public Scheduler scheduler() {
        return scheduler;
    }

    public Context context() {
        return ctx;
    }

    @Override
    public void close() {
        if (ownsScheduler) {
            scheduler.close();
        }
    }

    // ------------------------------------------------------------------------------------------------
    // GEMM

    /** C := alpha A B + beta C. */
    public void gemm(double alpha, DistributedMatrix a, DistributedMatrix b, double beta, DistributedMatrix c) {
        gemm(Trans.N, Trans.N, alpha, a, b, beta, c);
    }

    /** C := alpha op(A) op(B) + beta C, all three with the same tile size. */
    public void gemm(Trans ta, Trans tb, double alpha, DistributedMatrix a, DistributedMatrix b, double beta,
                     DistributedMatrix c) {
        int m = ta == Trans.N ? a.rows() : a.cols();
        int k = ta == Trans.N ? a.cols() : a.rows();
        int kb = tb == Trans.N ? b.rows() : b.cols();
        int n = tb == Trans.N ? b.cols() : b.rows();
        if (k != kb || c.rows() != m || c.cols() != n) {
            throw new IllegalArgumentException("gemm: op(A) is " + m + "x" + k + ", op(B) is " + kb + "x" + n + ", C is "
                    + c.rows() + "x" + c.cols() + "; need op(A) m x k, op(B) k x n, C m x n");
        }
        sameTiling("gemm", a, b, c);
        int nb = c.tileSize();
        int kt = (k + nb - 1) / nb;
        Ops ops = new Ops(c);
        run(region -> {
            for (int i = 0; i < c.mt(); i++) {
                for (int j = 0; j < c.nt(); j++) {
                    for (int l = 0; l < kt; l++) {
                        Tile x = ta == Trans.N ? a.tile(i, l) : a.tile(l, i);
                        Tile y = tb == Trans.N ? b.tile(l, j) : b.tile(j, l);
                        double bl = l == 0 ? beta : 1.0;
                        region.spawn(ops.gemm, args -> {
                            TileKernels.gemm(ta, tb, alpha, (Tile) args[0], (Tile) args[1], bl, (Tile) args[2]);
                            return null;
                        }, DataDeps.in(x), DataDeps.in(y), DataDeps.inout(c.tile(i, j)));
                    }
                }
            }
        });
    }

    // ------------------------------------------------------------------------------------------------
    // Cholesky

    /**
     * Cholesky factorization A = L L^T in place: the lower triangle of {@code a} becomes L, the strict upper
     * triangle is left as it was (only the lower triangle of A is read).
     *
     * @throws NotPositiveDefiniteException naming the column and diagonal tile where it fails
     */
    public DistributedMatrix cholesky(DistributedMatrix a) {
        square("cholesky", a);
        int nt = a.nt();
        Ops ops = new Ops(a);
        run(region -> {
            for (int k = 0; k < nt; k++) {
                int kk = k;
                Tile akk = a.tile(k, k);
                region.spawn(ops.potrf, args -> {
                    int info = TileKernels.potrf(Uplo.LOWER, (Tile) args[0]);
                    if (info > 0) {
                        throw new NotPositiveDefiniteException(kk, kk * a.tileSize() + info - 1);
                    }
                    return null;
                }, DataDeps.inout(akk));
                for (int i = k + 1; i < nt; i++) {
                    region.spawn(ops.trsm, args -> {
                        TileKernels.trsm(Side.RIGHT, Uplo.LOWER, Trans.T, Diag.NON_UNIT, 1.0, (Tile) args[0], (Tile) args[1]);
                        return null;
                    }, DataDeps.in(akk), DataDeps.inout(a.tile(i, k)));
                }
                for (int j = k + 1; j < nt; j++) {
                    Tile ajk = a.tile(j, k);
                    region.spawn(ops.syrk, args -> {
                        TileKernels.syrk(Uplo.LOWER, Trans.N, -1.0, (Tile) args[0], 1.0, (Tile) args[1]);
                        return null;
                    }, DataDeps.in(ajk), DataDeps.inout(a.tile(j, j)));
                    for (int i = j + 1; i < nt; i++) {
                        region.spawn(ops.gemm, args -> {
                            TileKernels.gemm(Trans.N, Trans.T, -1.0, (Tile) args[0], (Tile) args[1], 1.0, (Tile) args[2]);
                            return null;
                        }, DataDeps.in(a.tile(i, k)), DataDeps.in(ajk), DataDeps.inout(a.tile(i, j)));
                    }
                }
            }
        });
        return a;
    }

    /** Solves A X = B for SPD A: factors a copy of A and returns X (A and B unchanged). */
    public DistributedMatrix solveSpd(DistributedMatrix a, DistributedMatrix b) {
        square("solveSpd", a);
        checkRhs("solveSpd", a, b);
        try (DistributedMatrix l = a.copy()) {
            cholesky(l);
            return choleskySolve(l, b);
        }
    }

    /** X with L L^T X = B, L from {@link #cholesky}; returns a new matrix. */
    public DistributedMatrix choleskySolve(DistributedMatrix l, DistributedMatrix b) {
        checkRhs("choleskySolve", l, b);
        DistributedMatrix x = b.copy();
        triangularSolve(Uplo.LOWER, Trans.N, Diag.NON_UNIT, 1.0, l, x);
        triangularSolve(Uplo.LOWER, Trans.T, Diag.NON_UNIT, 1.0, l, x);
        return x;
    }

    // ------------------------------------------------------------------------------------------------
    // Triangular solve

    /** B := alpha op(A)^-1 B in place, for the {@code uplo} triangle of square A (left side). */
    public void triangularSolve(Uplo uplo, Trans trans, Diag diag, double alpha, DistributedMatrix a, DistributedMatrix b) {
        square("triangularSolve", a);
        checkRhs("triangularSolve", a, b);
        Ops ops = new Ops(b);
        run(region -> trsmLeft(region, ops, uplo, trans, diag, alpha, a::tile, a.nt(), b));
    }

    /** Tile access for algorithms that also run on derived grids (R of a QR). */
    @FunctionalInterface
    interface TileGrid {
        Tile at(int i, int j);
    }

    /** Spawns the tile forward or backward substitution of op(A) X = alpha B over kt tile rows of B. */
    private static void trsmLeft(DataDeps region, Ops ops, Uplo uplo, Trans trans, Diag diag, double alpha,
                                 TileGrid a, int kt, DistributedMatrix b) {
        boolean forward = (uplo == Uplo.LOWER) == (trans == Trans.N);
        for (int s = 0; s < kt; s++) {
            int k = forward ? s : kt - 1 - s;
            Tile akk = a.at(k, k);
            for (int j = 0; j < b.nt(); j++) {
                Tile bkj = b.tile(k, j);
                double scale = s == 0 ? alpha : 1.0;
                region.spawn(ops.trsm, args -> {
                    TileKernels.trsm(Side.LEFT, uplo, trans, diag, scale, (Tile) args[0], (Tile) args[1]);
                    return null;
                }, DataDeps.in(akk), DataDeps.inout(bkj));
                for (int i = forward ? k + 1 : 0; forward ? i < kt : i < k; i++) {
                    // op(A)(i, k) is A(i, k) or A(k, i)^T; the first update also applies alpha to B(i, j).
                    Tile aik = trans == Trans.N ? a.at(i, k) : a.at(k, i);
                    double beta = s == 0 ? alpha : 1.0;
                    region.spawn(ops.gemm, args -> {
                        TileKernels.gemm(trans, Trans.N, -1.0, (Tile) args[0], (Tile) args[1], beta, (Tile) args[2]);
                        return null;
                    }, DataDeps.in(aik), DataDeps.in(bkj), DataDeps.inout(b.tile(i, j)));
                }
            }
        }
    }

    // ------------------------------------------------------------------------------------------------
    // LU

    /**
     * LU factorization with partial pivoting in place, P A = L U as LAPACK's getrf: U in the upper
     * triangle, the unit lower L below it, and the row interchanges in the result's pivots.
     *
     * @throws SingularMatrixException naming the first column with an exactly zero pivot
     */
    public LuFactorization lu(DistributedMatrix a) {
        int nb = a.tileSize();
        int steps = Math.min(a.mt(), a.nt());
        int[] piv = new int[Math.min(a.rows(), a.cols())];
        Ops ops = new Ops(a);
        run(region -> {
            for (int k = 0; k < steps; k++) {
                int kk = k;
                int w = a.tileCols(k);
                int r0 = k * nb;
                int pm = a.rows() - r0;
                Object[] panel = new Object[a.mt() - k];
                for (int i = k; i < a.mt(); i++) {
                    panel[i - k] = DataDeps.inout(a.tile(i, k));
                }
                region.spawn(ops.getrf, args -> {
                    factorPanel(a, kk, w, pm, piv);
                    return null;
                }, panel);
                // Left swaps: this step's interchanges on the finished columns, off the critical path.
                for (int j = 0; j < k; j++) {
                    int jj = j;
                    region.spawn(ops.laswp, args -> {
                        applyPivots(a, piv, kk, jj);
                        return null;
                    }, columnFrom(a, k, j, DataDeps.in(a.tile(k, k))));
                }
                for (int j = k + 1; j < a.nt(); j++) {
                    int jj = j;
                    region.spawn(ops.trsm, args -> {
                        applyPivots(a, piv, kk, jj);
                        Tile akk = a.tile(kk, kk);
                        Tile akj = a.tile(kk, jj);
                        if (akk.rows() == akk.cols()) {
                            TileKernels.trsm(Side.LEFT, Uplo.LOWER, Trans.N, Diag.UNIT, 1.0, akk, akj);
                        } else {
                            // A wide last panel: L is the leading square of the diagonal tile.
                            try (Tile l = TileCopy.leading(akk, akk.rows(), akk.rows())) {
                                TileKernels.trsm(Side.LEFT, Uplo.LOWER, Trans.N, Diag.UNIT, 1.0, l, akj);
                            }
                        }
                        return null;
                    }, columnFrom(a, k, j, DataDeps.in(a.tile(k, k))));
                    for (int i = k + 1; i < a.mt(); i++) {
                        region.spawn(ops.gemm, args -> {
                            TileKernels.gemm(Trans.N, Trans.N, -1.0, (Tile) args[0], (Tile) args[1], 1.0, (Tile) args[2]);
                            return null;
                        }, DataDeps.in(a.tile(i, k)), DataDeps.in(a.tile(k, j)), DataDeps.inout(a.tile(i, j)));
                    }
                }
            }
        });
        return new LuFactorization(a, piv);
    }

    /** Access list: one extra access, then inout on tiles (k..mt-1, j). */
    private static Object[] columnFrom(DistributedMatrix a, int k, int j, Object extra) {
        Object[] out = new Object[a.mt() - k + 1];
        out[0] = extra;
        for (int i = k; i < a.mt(); i++) {
            out[i - k + 1] = DataDeps.inout(a.tile(i, j));
        }
        return out;
    }

    /** getrf on a contiguous copy of tile column k from row k*nb down; pivots are stored as global rows. */
    private static void factorPanel(DistributedMatrix a, int k, int w, int pm, int[] piv) {
        int nb = a.tileSize();
        try (Tile p = Tile.allocate(a.type(), pm, w)) {
            for (int i = k; i < a.mt(); i++) {
                TileCopy.block(a.tile(i, k), 0, 0, p, (i - k) * nb, 0, a.tileRows(i), w);
            }
            int[] ipiv = new int[Math.min(pm, w)];
            int info = TileKernels.getrf(p, ipiv);
            for (int i = k; i < a.mt(); i++) {
                TileCopy.block(p, (i - k) * nb, 0, a.tile(i, k), 0, 0, a.tileRows(i), w);
            }
            for (int r = 0; r < ipiv.length; r++) {
                piv[k * nb + r] = k * nb + ipiv[r] - 1;
            }
            if (info > 0) {
                throw new SingularMatrixException(k, k * nb + info - 1);
            }
        }
    }

    /** Applies step k's row interchanges (in order) to tile column j. */
    private static void applyPivots(DistributedMatrix a, int[] piv, int k, int j) {
        int nb = a.tileSize();
        int end = Math.min(piv.length, (k + 1) * nb);
        for (int r = k * nb; r < end; r++) {
            int p = piv[r];
            if (p != r) {
                TileCopy.swapRows(a.tile(r / nb, j), r % nb, a.tile(p / nb, j), p % nb);
            }
        }
    }

    /** Solves A X = B for square A by LU with partial pivoting on a copy; A and B are unchanged. */
    public DistributedMatrix solve(DistributedMatrix a, DistributedMatrix b) {
        square("solve", a);
        checkRhs("solve", a, b);
        try (DistributedMatrix f = a.copy()) {
            return luSolve(lu(f), b);
        }
    }

    /** X with A X = B from an LU factorization of square A; returns a new matrix. */
    public DistributedMatrix luSolve(LuFactorization lu, DistributedMatrix b) {
        DistributedMatrix a = lu.factors();
        square("luSolve", a);
        checkRhs("luSolve", a, b);
        DistributedMatrix x = b.copy();
        int[] piv = lu.pivots();
        Ops ops = new Ops(x);
        run(region -> {
            for (int j = 0; j < x.nt(); j++) {
                int jj = j;
                Object[] col = new Object[x.mt()];
                for (int i = 0; i < x.mt(); i++) {
                    col[i] = DataDeps.inout(x.tile(i, j));
                }
                region.spawn(ops.laswp, args -> {
                    for (int k = 0; k < x.mt(); k++) {
                        applyPivots(x, piv, k, jj);
                    }
                    return null;
                }, col);
            }
            trsmLeft(region, ops, Uplo.LOWER, Trans.N, Diag.UNIT, 1.0, a::tile, a.nt(), x);
            trsmLeft(region, ops, Uplo.UPPER, Trans.N, Diag.NON_UNIT, 1.0, a::tile, a.nt(), x);
        });
        return x;
    }

    // ------------------------------------------------------------------------------------------------
    // QR

    /**
     * Tile QR factorization A = Q R in place (flat-tree TS kernels): R in the upper triangle of the first
     * min(m, n) rows, Q as Householder reflectors in the rest of {@code a} and the returned factors.
     */
    public QrFactorization qr(DistributedMatrix a) {
        int ib = ctx.innerBlock();
        int steps = Math.min(a.mt(), a.nt());
        Tile[][] t = new Tile[a.mt()][steps];
        Tile[] v = new Tile[steps];
        for (int k = 0; k < steps; k++) {
            int w = a.tileCols(k);
            for (int i = k; i < a.mt(); i++) {
                int refl = i == k ? Math.min(a.tileRows(k), w) : w;
                t[i][k] = Tile.allocate(a.type(), TileKernels.tRows(ib, refl), w);
            }
            v[k] = Tile.allocate(a.type(), a.tileRows(k), w);
        }
        QrFactorization f = new QrFactorization(a, t, v, ib);
        Ops ops = new Ops(a);
        try {
            run(region -> {
                for (int k = 0; k < steps; k++) {
                    Tile akk = a.tile(k, k);
                    Tile vk = v[k];
                    Tile tkk = t[k][k];
                    region.spawn(ops.geqrt, args -> {
                        TileKernels.geqrt(ib, (Tile) args[0], (Tile) args[1]);
                        ((Tile) args[2]).copyFrom((Tile) args[0]);
                        return null;
                    }, DataDeps.inout(akk), DataDeps.out(tkk), DataDeps.out(vk));
                    for (int j = k + 1; j < a.nt(); j++) {
                        region.spawn(ops.gemqrt, args -> {
                            TileKernels.gemqrt(Trans.T, ib, (Tile) args[0], (Tile) args[1], (Tile) args[2]);
                            return null;
                        }, DataDeps.in(vk), DataDeps.in(tkk), DataDeps.inout(a.tile(k, j)));
                    }
                    for (int i = k + 1; i < a.mt(); i++) {
                        Tile aik = a.tile(i, k);
                        Tile tik = t[i][k];
                        region.spawn(ops.tpqrt, args -> {
                            TileKernels.tpqrt(ib, (Tile) args[0], (Tile) args[1], (Tile) args[2]);
                            return null;
                        }, DataDeps.inout(akk), DataDeps.inout(aik), DataDeps.out(tik));
                        for (int j = k + 1; j < a.nt(); j++) {
                            region.spawn(ops.tpmqrt, args -> {
                                TileKernels.tpmqrt(Trans.T, ib, (Tile) args[0], (Tile) args[1], (Tile) args[2], (Tile) args[3]);
                                return null;
                            }, DataDeps.in(aik), DataDeps.in(tik), DataDeps.inout(a.tile(k, j)), DataDeps.inout(a.tile(i, j)));
                        }
                    }
                }
            });
        } catch (RuntimeException e) {
            f.close();
            throw e;
        }
        return f;
    }

    /** B := Q^T B (trans T) or Q B (trans N) in place, with Q from {@link #qr}. */
    public void applyQ(QrFactorization f, Trans trans, DistributedMatrix b) {
        DistributedMatrix a = f.factors();
        if (b.rows() != a.rows() || b.tileSize() != a.tileSize() || b.type() != a.type()) {
            throw new IllegalArgumentException("applyQ: B is " + b.describe() + " but Q is " + a.rows() + "x" + a.rows()
                    + " for " + a.describe());
        }
        int ib = f.innerBlock();
        int steps = Math.min(a.mt(), a.nt());
        Ops ops = new Ops(b);
        run(region -> {
            for (int s = 0; s < steps; s++) {
                // Q^T applies the steps' reflectors in factorization order, Q in reverse.
                int k = trans == Trans.T ? s : steps - 1 - s;
                for (int j = 0; j < b.nt(); j++) {
                    Tile bkj = b.tile(k, j);
                    Runnable diag = () -> region.spawn(ops.gemqrt, args -> {
                        TileKernels.gemqrt(trans, ib, (Tile) args[0], (Tile) args[1], (Tile) args[2]);
                        return null;
                    }, DataDeps.in(f.v(k)), DataDeps.in(f.t(k, k)), DataDeps.inout(bkj));
                    if (trans == Trans.T) {
                        diag.run();
                    }
                    for (int s2 = 0; s2 < a.mt() - k - 1; s2++) {
                        int i = trans == Trans.T ? k + 1 + s2 : a.mt() - 1 - s2;
                        region.spawn(ops.tpmqrt, args -> {
                            TileKernels.tpmqrt(trans, ib, (Tile) args[0], (Tile) args[1], (Tile) args[2], (Tile) args[3]);
                            return null;
                        }, DataDeps.in(a.tile(i, k)), DataDeps.in(f.t(i, k)), DataDeps.inout(bkj), DataDeps.inout(b.tile(i, j)));
                    }
                    if (trans == Trans.N) {
                        diag.run();
                    }
                }
            }
        });
    }

    /**
     * Least-squares solution of min ||A X - B|| for A with at least as many rows as columns and full
     * column rank, through QR of a copy of A. Returns X (cols(A) x cols(B)); A and B are unchanged.
     *
     * @throws SingularMatrixException if R has an exactly zero diagonal entry (A is rank deficient)
     */
    public DistributedMatrix leastSquares(DistributedMatrix a, DistributedMatrix b) {
        if (a.rows() < a.cols()) {
            throw new IllegalArgumentException("leastSquares needs rows >= cols, got " + a.rows() + "x" + a.cols()
                    + "; an underdetermined system has no unique solution");
        }
        checkRhs("leastSquares", a, b);
        try (DistributedMatrix f = a.copy(); QrFactorization qr = qr(f); DistributedMatrix qtb = b.copy()) {
            applyQ(qr, Trans.T, qtb);
            int n = a.cols();
            int nb = a.tileSize();
            DistributedMatrix x = DistributedMatrix.zeros(a.type(), n, b.cols(), nb, b.distribution());
            for (int i = 0; i < x.mt(); i++) {
                for (int j = 0; j < x.nt(); j++) {
                    TileCopy.block(qtb.tile(i, j), 0, 0, x.tile(i, j), 0, 0, x.tileRows(i), x.tileCols(j));
                }
            }
            int last = a.nt() - 1;
            Tile rLast = f.tile(last, last);
            Tile square = rLast.rows() == rLast.cols() ? rLast : TileCopy.leading(rLast, rLast.cols(), rLast.cols());
            try {
                for (int k = 0; k < n; k++) {
                    if (f.get(k, k) == 0) {
                        throw new SingularMatrixException(k / nb, k);
                    }
                }
                Ops ops = new Ops(x);
                run(region -> trsmLeft(region, ops, Uplo.UPPER, Trans.N, Diag.NON_UNIT, 1.0,
                        (i, j) -> i == last && j == last ? square : f.tile(i, j), a.nt(), x));
            } catch (RuntimeException e) {
                x.close();
                throw e;
            } finally {
                if (square != rLast) {
                    square.close();
                }
            }
            return x;
        }
    }

    // ------------------------------------------------------------------------------------------------

    /** Runs one region and turns a failed task back into the exception that explains it. */
    private void run(Consumer<DataDeps> body) {
        try (DataDeps region = scheduler.dataDeps()) {
            body.accept(region);
        } catch (TaskFailedException e) {
            Throwable cause = e.getCause();
            if (cause instanceof NotPositiveDefiniteException || cause instanceof SingularMatrixException
                    || cause instanceof IllegalArgumentException) {
                cause.addSuppressed(e);
                throw (RuntimeException) cause;
            }
            throw e;
        }
    }

    private static void square(String op, DistributedMatrix a) {
        if (a.rows() != a.cols()) {
            throw new IllegalArgumentException(op + " needs a square matrix, got " + a.rows() + "x" + a.cols());
        }
    }

    private static void checkRhs(String op, DistributedMatrix a, DistributedMatrix b) {
        if (b.rows() != a.rows()) {
            throw new IllegalArgumentException(op + ": B has " + b.rows() + " rows but A is " + a.rows() + "x" + a.cols());
        }
        sameTiling(op, a, b);
    }

    private static void sameTiling(String op, DistributedMatrix... ms) {
        for (DistributedMatrix m : ms) {
            if (m.tileSize() != ms[0].tileSize() || m.type() != ms[0].type()) {
                throw new IllegalArgumentException(op + ": operands must share tile size and type, got "
                        + ms[0].describe() + " and " + m.describe());
            }
        }
    }

    /**
     * Task options per kernel for one operation: names carry the type and tile size, since they are the
     * cost model's signatures, and cost hints give sensible critical-path ranks before anything is measured.
     */
    private static final class Ops {
        final TaskOptions gemm;
        final TaskOptions trsm;
        final TaskOptions syrk;
        final TaskOptions potrf;
        final TaskOptions getrf;
        final TaskOptions laswp;
        final TaskOptions geqrt;
        final TaskOptions gemqrt;
        final TaskOptions tpqrt;
        final TaskOptions tpmqrt;

        Ops(DistributedMatrix m) {
            double b = m.tileSize();
            double b3 = b * b * b;
            Map<String, TaskOptions> made = new HashMap<>();
            String suffix = "_" + m.type().name().toLowerCase() + "_" + m.tileSize();
            gemm = opt(made, "gemm" + suffix, 2 * b3);
            trsm = opt(made, "trsm" + suffix, b3);
            syrk = opt(made, "syrk" + suffix, b3);
            potrf = opt(made, "potrf" + suffix, b3 / 3);
            getrf = opt(made, "getrf" + suffix, b3 * m.mt());
            laswp = opt(made, "laswp" + suffix, b * b * 4);
            geqrt = opt(made, "geqrt" + suffix, 4 * b3 / 3);
            gemqrt = opt(made, "gemqrt" + suffix, 2 * b3);
            tpqrt = opt(made, "tpqrt" + suffix, 2 * b3);
            tpmqrt = opt(made, "tpmqrt" + suffix, 4 * b3);
        }

        private static TaskOptions opt(Map<String, TaskOptions> made, String name, double flops) {
            return made.computeIfAbsent(name, n -> TaskOptions.named(n)
                    .costHint(Duration.ofNanos(Math.max(1, (long) (flops / HINT_FLOPS_PER_NS)))));
        }
    }
}
