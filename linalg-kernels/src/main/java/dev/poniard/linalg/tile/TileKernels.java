package dev.poniard.linalg.tile;

import static org.bytedeco.openblas.global.openblas.*;

import dev.poniard.linalg.DType;
import org.bytedeco.javacpp.DoublePointer;
import org.bytedeco.javacpp.FloatPointer;
import org.bytedeco.javacpp.IntPointer;
import org.bytedeco.javacpp.Pointer;

/**
 * BLAS and LAPACK kernels on whole {@link Tile}s, calling OpenBLAS directly (ND4J 1.0.0-M2.1's
 * {@code trsm}/{@code syrk} are broken and {@code Nd4j.gemm} costs tens of microseconds per call).
 * Every kernel checks the shapes and types of its operands and names them when they do not fit; the
 * factorization kernels return LAPACK's {@code info} so callers can name the tile that failed.
 *
 * <p>Kernels are stateless and thread-safe. They run with whatever thread count OpenBLAS has; the tile
 * algorithms hold it to one per scheduler worker (see {@link #singleThreaded()}).
 */
public final class TileKernels {
    private TileKernels() {
    }

    public enum Trans { N, T }

    public enum Uplo { LOWER, UPPER }

    public enum Side { LEFT, RIGHT }

    public enum Diag { UNIT, NON_UNIT }

    /** Holds OpenBLAS to one thread; meant for {@code Scheduler.Context.workerStart}. */
    public static Runnable singleThreaded() {
        return () -> blas_set_num_threads(1);
    }

    /** Sets OpenBLAS's thread count (process-wide in a pthreads build). */
    public static void setBlasThreads(int n) {
        blas_set_num_threads(n);
    }

    public static int blasThreads() {
        return blas_get_num_threads();
    }

    /** C := alpha op(A) op(B) + beta C. */
    public static void gemm(Trans ta, Trans tb, double alpha, Tile a, Tile b, double beta, Tile c) {
        int m = ta == Trans.N ? a.rows() : a.cols();
        int k = ta == Trans.N ? a.cols() : a.rows();
        int kb = tb == Trans.N ? b.rows() : b.cols();
        int n = tb == Trans.N ? b.cols() : b.rows();
        if (k != kb || c.rows() != m || c.cols() != n) {
            throw new IllegalArgumentException("gemm: op(A) is " + m + "x" + k + ", op(B) is " + kb + "x" + n
                    + ", C is " + c.rows() + "x" + c.cols() + "; need op(A) m x k, op(B) k x n, C m x n");
        }
        sameType("gemm", a, b, c);
        if (a.type() == DType.F64) {
            cblas_dgemm(CblasColMajor, trans(ta), trans(tb), m, n, k, alpha, a.f64(), a.ld(), b.f64(), b.ld(),
                    beta, c.f64(), c.ld());
        } else {
            cblas_sgemm(CblasColMajor, trans(ta), trans(tb), m, n, k, (float) alpha, a.f32(), a.ld(), b.f32(), b.ld(),
                    (float) beta, c.f32(), c.ld());
        }
    }

    /** Y := Y + X, element by element (same shape and type). */
    public static void add(Tile x, Tile y) {
        if (x.rows() != y.rows() || x.cols() != y.cols()) {
            throw new IllegalArgumentException("add: X is " + x.rows() + "x" + x.cols() + ", Y is " + y.rows() + "x"
                    + y.cols() + "; need the same shape");
        }
        sameType("add", x, y);
        // Tiles are contiguous (ld = rows): one axpy over the whole buffer; y + 1*x rounds as y + x.
        if (x.type() == DType.F64) {
            cblas_daxpy(x.size(), 1.0, x.f64(), 1, y.f64(), 1);
        } else {
            cblas_saxpy(x.size(), 1.0f, x.f32(), 1, y.f32(), 1);
        }
    }

    /** B := alpha op(A)^-1 B (side LEFT) or alpha B op(A)^-1 (side RIGHT), A triangular. */
    public static void trsm(Side side, Uplo uplo, Trans ta, Diag diag, double alpha, Tile a, Tile b) {
        int k = side == Side.LEFT ? b.rows() : b.cols();
        if (a.rows() != a.cols() || a.rows() != k) {
            throw new IllegalArgumentException("trsm: A is " + a.rows() + "x" + a.cols() + " but must be square of order "
                    + k + " to solve with a " + b.rows() + "x" + b.cols() + " B from the " + side);
        }
        sameType("trsm", a, b);
        int s = side == Side.LEFT ? CblasLeft : CblasRight;
        int u = uplo(uplo);
        int d = diag == Diag.UNIT ? CblasUnit : CblasNonUnit;
        if (a.type() == DType.F64) {
            cblas_dtrsm(CblasColMajor, s, u, trans(ta), d, b.rows(), b.cols(), alpha, a.f64(), a.ld(), b.f64(), b.ld());
        } else {
            cblas_strsm(CblasColMajor, s, u, trans(ta), d, b.rows(), b.cols(), (float) alpha, a.f32(), a.ld(), b.f32(), b.ld());
        }
    }

    /** C := alpha op(A) op(A)^T + beta C on the {@code uplo} triangle of C; op(A) = A (N) or A^T (T). */
    public static void syrk(Uplo uplo, Trans ta, double alpha, Tile a, double beta, Tile c) {
        int n = ta == Trans.N ? a.rows() : a.cols();
        int k = ta == Trans.N ? a.cols() : a.rows();
        if (c.rows() != n || c.cols() != n) {
            throw new IllegalArgumentException("syrk: op(A) is " + n + "x" + k + " so C must be " + n + "x" + n
                    + ", got " + c.rows() + "x" + c.cols());
        }
        sameType("syrk", a, c);
        if (a.type() == DType.F64) {
            cblas_dsyrk(CblasColMajor, uplo(uplo), trans(ta), n, k, alpha, a.f64(), a.ld(), beta, c.f64(), c.ld());
        } else {
            cblas_ssyrk(CblasColMajor, uplo(uplo), trans(ta), n, k, (float) alpha, a.f32(), a.ld(), (float) beta, c.f32(), c.ld());
        }
    }

    /**
     * Cholesky factor of a square tile in place (the other triangle is left as it was). Returns LAPACK's
     * info: 0 on success, j > 0 if the leading minor of order j (1-based) is not positive definite.
     */
    public static int potrf(Uplo uplo, Tile a) {
        square("potrf", a);
        byte u = (byte) (uplo == Uplo.LOWER ? 'L' : 'U');
        return a.type() == DType.F64
                ? check("potrf", LAPACKE_dpotrf(LAPACK_COL_MAJOR, u, a.rows(), a.f64(), a.ld()))
                : check("potrf", LAPACKE_spotrf(LAPACK_COL_MAJOR, u, a.rows(), a.f32(), a.ld()));
    }

    /**
     * LU with partial pivoting of a (typically tall) panel in place: P A = L U. {@code ipiv} receives
     * min(m, n) 1-based row indices local to the panel, as LAPACK's dgetrf. Returns info: 0, or j > 0 if
     * U(j, j) (1-based) is exactly zero.
     */
    public static int getrf(Tile a, int[] ipiv) {
        int k = Math.min(a.rows(), a.cols());
        if (ipiv.length < k) {
            throw new IllegalArgumentException("getrf: ipiv has " + ipiv.length + " entries, needs " + k);
        }
        try (IntPointer p = new IntPointer(k)) {
            int info = a.type() == DType.F64
                    ? LAPACKE_dgetrf(LAPACK_COL_MAJOR, a.rows(), a.cols(), a.f64(), a.ld(), p)
                    : LAPACKE_sgetrf(LAPACK_COL_MAJOR, a.rows(), a.cols(), a.f32(), a.ld(), p);
            p.get(ipiv, 0, k);
            return check("getrf", info);
        }
    }

    /**
     * QR of a tile with the compact WY representation (LAPACK dgeqrt): R in the upper triangle, the
     * Householder vectors below it, the block reflector factors in {@code t} (ib x min(m, n)). In this and
     * the other QR kernels an inner block size above the number of reflectors is clamped, as LAPACK requires.
     */
    public static void geqrt(int ib, Tile a, Tile t) {
        int k = Math.min(a.rows(), a.cols());
        checkT("geqrt", ib, k, t);
        sameType("geqrt", a, t);
        ib = Math.min(ib, k);
        try (Pointer w = work(a.type(), (long) ib * a.cols())) {
            check("geqrt", a.type() == DType.F64
                    ? LAPACKE_dgeqrt_work(LAPACK_COL_MAJOR, a.rows(), a.cols(), ib, a.f64(), a.ld(), t.f64(), t.ld(), (DoublePointer) w)
                    : LAPACKE_sgeqrt_work(LAPACK_COL_MAJOR, a.rows(), a.cols(), ib, a.f32(), a.ld(), t.f32(), t.ld(), (FloatPointer) w));
        }
    }

    /**
     * C := op(Q) C with Q from {@link #geqrt} of {@code v} (k = min(v.rows, v.cols) reflectors), applied
     * from the left: the unmqr/gemqrt update of the tiles right of a diagonal tile.
     */
    public static void gemqrt(Trans trans, int ib, Tile v, Tile t, Tile c) {
        int k = Math.min(v.rows(), v.cols());
        checkT("gemqrt", ib, k, t);
        if (c.rows() != v.rows()) {
            throw new IllegalArgumentException("gemqrt: C has " + c.rows() + " rows, the reflectors have " + v.rows());
        }
        sameType("gemqrt", v, t, c);
        ib = Math.min(ib, k);
        byte tr = (byte) (trans == Trans.N ? 'N' : 'T');
        try (Pointer w = work(v.type(), (long) ib * c.cols())) {
            check("gemqrt", v.type() == DType.F64
                    ? LAPACKE_dgemqrt_work(LAPACK_COL_MAJOR, (byte) 'L', tr, c.rows(), c.cols(), k, ib, v.f64(), v.ld(),
                            t.f64(), t.ld(), c.f64(), c.ld(), (DoublePointer) w)
                    : LAPACKE_sgemqrt_work(LAPACK_COL_MAJOR, (byte) 'L', tr, c.rows(), c.cols(), k, ib, v.f32(), v.ld(),
                            t.f32(), t.ld(), c.f32(), c.ld(), (FloatPointer) w));
        }
    }

    /**
     * QR of the stacked pair [R; B] where R is the upper triangle of the first n rows of {@code a}
     * (n = a.cols) and B is a full m x n tile (LAPACK dtpqrt with l = 0): R is updated in place, B is
     * replaced by the reflectors V, {@code t} (ib x n) receives their block factors.
     */
    public static void tpqrt(int ib, Tile a, Tile b, Tile t) {
        int n = a.cols();
        if (a.rows() < n || b.cols() != n) {
            throw new IllegalArgumentException("tpqrt: need A with at least as many rows as columns and B with A's "
                    + n + " columns; got A " + a.rows() + "x" + a.cols() + ", B " + b.rows() + "x" + b.cols());
        }
        checkT("tpqrt", ib, n, t);
        sameType("tpqrt", a, b, t);
        ib = Math.min(ib, n);
        try (Pointer w = work(a.type(), (long) ib * n)) {
            check("tpqrt", a.type() == DType.F64
                    ? LAPACKE_dtpqrt_work(LAPACK_COL_MAJOR, b.rows(), n, 0, ib, a.f64(), a.ld(), b.f64(), b.ld(), t.f64(), t.ld(), (DoublePointer) w)
                    : LAPACKE_stpqrt_work(LAPACK_COL_MAJOR, b.rows(), n, 0, ib, a.f32(), a.ld(), b.f32(), b.ld(), t.f32(), t.ld(), (FloatPointer) w));
        }
    }

    /**
     * Applies op(Q) of a {@link #tpqrt} (reflectors {@code v}, m x k, factors {@code t}) from the left to
     * the stacked pair [A1; B], where A1 is the first k rows of {@code a}: the tile-QR trailing update.
     */
    public static void tpmqrt(Trans trans, int ib, Tile v, Tile t, Tile a, Tile b) {
        int k = v.cols();
        if (v.rows() != b.rows() || a.rows() < k || a.cols() != b.cols()) {
            throw new IllegalArgumentException("tpmqrt: V is " + v.rows() + "x" + k + ", A is " + a.rows() + "x" + a.cols()
                    + ", B is " + b.rows() + "x" + b.cols() + "; need V m x k, A at least k x n, B m x n");
        }
        checkT("tpmqrt", ib, k, t);
        sameType("tpmqrt", v, t, a, b);
        ib = Math.min(ib, k);
        byte tr = (byte) (trans == Trans.N ? 'N' : 'T');
        try (Pointer w = work(v.type(), (long) ib * b.cols())) {
            check("tpmqrt", v.type() == DType.F64
                    ? LAPACKE_dtpmqrt_work(LAPACK_COL_MAJOR, (byte) 'L', tr, b.rows(), b.cols(), k, 0, ib, v.f64(), v.ld(),
                            t.f64(), t.ld(), a.f64(), a.ld(), b.f64(), b.ld(), (DoublePointer) w)
                    : LAPACKE_stpmqrt_work(LAPACK_COL_MAJOR, (byte) 'L', tr, b.rows(), b.cols(), k, 0, ib, v.f32(), v.ld(),
                            t.f32(), t.ld(), a.f32(), a.ld(), b.f32(), b.ld(), (FloatPointer) w));
        }
    }

    /** Rows of a T tile for inner block size {@code ib} and {@code k} reflectors: the LAPACK {@code ldt}. */
    public static int tRows(int ib, int k) {
        return Math.max(1, Math.min(ib, k));
    }

    /**
     * Workspace for the QR kernels, sized as LAPACK documents (ib x n for side L). The LAPACKE wrappers that
     * allocate it themselves are avoided: OpenBLAS 0.3.21's LAPACKE_dtpmqrt sizes it from the wrong
     * dimension and corrupts the heap when B has fewer rows than columns.
     */
    private static Pointer work(DType type, long n) {
        return type == DType.F64 ? new DoublePointer(Math.max(1, n)) : new FloatPointer(Math.max(1, n));
    }

    private static void checkT(String op, int ib, int k, Tile t) {
        if (ib < 1) {
            throw new IllegalArgumentException(op + ": inner block size must be >= 1, got " + ib);
        }
        if (t.rows() < Math.min(ib, k) || t.cols() < k) {
            throw new IllegalArgumentException(op + ": T must be at least " + Math.min(ib, k) + "x" + k + ", got "
                    + t.rows() + "x" + t.cols());
        }
    }

    private static void square(String op, Tile a) {
        if (a.rows() != a.cols()) {
            throw new IllegalArgumentException(op + ": tile must be square, got " + a.rows() + "x" + a.cols());
        }
    }

    private static void sameType(String op, Tile... tiles) {
        for (Tile t : tiles) {
            if (t.type() != tiles[0].type()) {
                throw new IllegalArgumentException(op + ": operands mix " + tiles[0].type() + " and " + t.type());
            }
        }
    }

    /** Negative info is a bad argument: a bug here, never the caller's data. */
    private static int check(String op, int info) {
        if (info < 0) {
            throw new IllegalStateException("LAPACK " + op + " rejected argument " + (-info) + " (info " + info + ")");
        }
        return info;
    }

    private static int trans(Trans t) {
        return t == Trans.N ? CblasNoTrans : CblasTrans;
    }

    private static int uplo(Uplo u) {
        return u == Uplo.LOWER ? CblasLower : CblasUpper;
    }
}
