package dev.poniard.linalg.device;

import static org.bytedeco.openblas.global.openblas.CblasColMajor;
import static org.bytedeco.openblas.global.openblas.CblasLeft;
import static org.bytedeco.openblas.global.openblas.CblasLower;
import static org.bytedeco.openblas.global.openblas.CblasNoTrans;
import static org.bytedeco.openblas.global.openblas.CblasNonUnit;
import static org.bytedeco.openblas.global.openblas.CblasRight;
import static org.bytedeco.openblas.global.openblas.CblasTrans;
import static org.bytedeco.openblas.global.openblas.CblasUnit;
import static org.bytedeco.openblas.global.openblas.CblasUpper;
import static org.bytedeco.openblas.global.openblas.LAPACK_COL_MAJOR;
import static org.bytedeco.openblas.global.openblas.LAPACKE_dgeqrt_work;
import static org.bytedeco.openblas.global.openblas.LAPACKE_dgetrf;
import static org.bytedeco.openblas.global.openblas.LAPACKE_dpotrf;
import static org.bytedeco.openblas.global.openblas.LAPACKE_dtpqrt_work;
import static org.bytedeco.openblas.global.openblas.LAPACKE_sgeqrt_work;
import static org.bytedeco.openblas.global.openblas.LAPACKE_sgetrf;
import static org.bytedeco.openblas.global.openblas.LAPACKE_spotrf;
import static org.bytedeco.openblas.global.openblas.LAPACKE_stpqrt_work;
import static org.bytedeco.openblas.global.openblas.cblas_daxpy;
import static org.bytedeco.openblas.global.openblas.cblas_dcopy;
import static org.bytedeco.openblas.global.openblas.cblas_dgemm;
import static org.bytedeco.openblas.global.openblas.cblas_dscal;
import static org.bytedeco.openblas.global.openblas.cblas_dsyrk;
import static org.bytedeco.openblas.global.openblas.cblas_dtrmm;
import static org.bytedeco.openblas.global.openblas.cblas_dtrsm;
import static org.bytedeco.openblas.global.openblas.cblas_saxpy;
import static org.bytedeco.openblas.global.openblas.cblas_scopy;
import static org.bytedeco.openblas.global.openblas.cblas_sgemm;
import static org.bytedeco.openblas.global.openblas.cblas_sscal;
import static org.bytedeco.openblas.global.openblas.cblas_ssyrk;
import static org.bytedeco.openblas.global.openblas.cblas_strmm;
import static org.bytedeco.openblas.global.openblas.cblas_strsm;

import dev.poniard.linalg.DType;
import dev.poniard.linalg.tile.TileKernels.Diag;
import dev.poniard.linalg.tile.TileKernels.Side;
import dev.poniard.linalg.tile.TileKernels.Trans;
import dev.poniard.linalg.tile.TileKernels.Uplo;
import dev.poniard.scheduler.stream.Buffer;
import dev.poniard.scheduler.stream.DeviceCall;
import dev.poniard.scheduler.stream.StreamScheduler.Access;
import dev.poniard.scheduler.stream.cuda.CudaDevice;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.IntBuffer;
import java.util.ArrayList;
import java.util.List;
import org.bytedeco.javacpp.DoublePointer;
import org.bytedeco.javacpp.FloatPointer;
import org.bytedeco.javacpp.IntPointer;
import org.bytedeco.javacpp.Pointer;

/**
 * Tile kernels as {@link DeviceCall}s on column-major tiles in device buffers: OpenBLAS on the buffers'
 * memory on the CPU emulation, cuBLAS on the stream on a GPU ({@link Cublas}; null for a CPU device, whose
 * streams never ask for the CUDA implementation). Shapes are checked by the caller
 * ({@link DeviceTileAlgebra}), which builds every call from a matrix's tile shapes.
 */
final class DeviceTileKernels {
    /** The row-interchange kernel's PTX module (a class-path resource) and entry. */
    static final String LASWP_MODULE = "/dev/poniard/linalg/kernels/laswp.ptx";
    static final String LASWP_ENTRY = "poniard_laswp";
    /** Columns per LAPACK tpqrt block in {@link #tpqrtOnHost}, whose T factors are then merged into one. */
    static final int TPQRT_INNER_BLOCK = 32;
    /** The most tiles one interchange launch can reach: their addresses go by value in the kernel's parameters. */
    static final int LASWP_MAX_TILES = 256;

    private DeviceTileKernels() {
    }

    /** C := alpha op(A) op(B) + beta C; C is m x n, the inner dimension k. */
    static DeviceCall gemm(Cublas cublas, DType t, Trans ta, Trans tb, int m, int n, int k, double alpha, Buffer a,
                           int lda, Buffer b, int ldb, double beta, Buffer c, int ldc) {
        String name = prefix(t) + "gemm " + m + "x" + n + "x" + k;
        return DeviceCall.of(name, List.of(Access.in(a), Access.in(b), Access.out(c)), () -> {
            if (t == DType.F64) {
                cblas_dgemm(CblasColMajor, trans(ta), trans(tb), m, n, k, alpha, f64(a), lda, f64(b), ldb, beta, f64(c), ldc);
            } else {
                cblas_sgemm(CblasColMajor, trans(ta), trans(tb), m, n, k, (float) alpha, f32(a), lda, f32(b), ldb,
                        (float) beta, f32(c), ldc);
            }
        }, site -> cuda(cublas, name).gemm(site, t, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc));
    }

    /** B := alpha op(A)^-1 B (LEFT) or alpha B op(A)^-1 (RIGHT), A triangular; B is m x n. */
    static DeviceCall trsm(Cublas cublas, DType t, Side side, Uplo uplo, Trans ta, Diag diag, int m, int n, double alpha,
                           Buffer a, int lda, Buffer b, int ldb) {
        String name = prefix(t) + "trsm " + m + "x" + n;
        return DeviceCall.of(name, List.of(Access.in(a), Access.out(b)), () -> {
            int s = side == Side.LEFT ? CblasLeft : CblasRight;
            int d = diag == Diag.UNIT ? CblasUnit : CblasNonUnit;
            if (t == DType.F64) {
                cblas_dtrsm(CblasColMajor, s, uplo(uplo), trans(ta), d, m, n, alpha, f64(a), lda, f64(b), ldb);
            } else {
                cblas_strsm(CblasColMajor, s, uplo(uplo), trans(ta), d, m, n, (float) alpha, f32(a), lda, f32(b), ldb);
            }
        }, site -> cuda(cublas, name).trsm(site, t, side, uplo, ta, diag, m, n, alpha, a, lda, b, ldb));
    }

    /** B := alpha op(A) B (LEFT) or alpha B op(A) (RIGHT) in place, A triangular; B is m x n. */
    static DeviceCall trmm(Cublas cublas, DType t, Side side, Uplo uplo, Trans ta, Diag diag, int m, int n,
                           double alpha, Buffer a, int lda, Buffer b, int ldb) {
        String name = prefix(t) + "trmm " + m + "x" + n;
        return DeviceCall.of(name, List.of(Access.in(a), Access.out(b)), () -> {
            int s = side == Side.LEFT ? CblasLeft : CblasRight;
            int d = diag == Diag.UNIT ? CblasUnit : CblasNonUnit;
            if (t == DType.F64) {
                cblas_dtrmm(CblasColMajor, s, uplo(uplo), trans(ta), d, m, n, alpha, f64(a), lda, f64(b), ldb);
            } else {
                cblas_strmm(CblasColMajor, s, uplo(uplo), trans(ta), d, m, n, (float) alpha, f32(a), lda, f32(b), ldb);
            }
        }, site -> cuda(cublas, name).trmm(site, t, side, uplo, ta, diag, m, n, alpha, a, lda, b, ldb));
    }

    /**
     * C := alpha A + beta C on m x n column-major blocks at the start of their buffers (a copy for beta = 0, when C is
     * not read); A and C must be different buffers.
     */
    static DeviceCall geam(Cublas cublas, DType t, int m, int n, double alpha, Buffer a, int lda, double beta, Buffer c,
                           int ldc) {
        if (a == c) {
            throw new IllegalArgumentException("geam: A and C are the same buffer");
        }
        String name = prefix(t) + "geam " + m + "x" + n;
        return DeviceCall.of(name, List.of(Access.in(a), Access.out(c)), () -> {
            for (int j = 0; j < n; j++) {
                long ja = (long) j * lda, jc = (long) j * ldc;
                if (t == DType.F64) {
                    DoublePointer x = f64(a).position(ja), y = f64(c).position(jc);
                    if (beta == 0) {
                        cblas_dcopy(m, x, 1, y, 1);
                        if (alpha != 1) {
                            cblas_dscal(m, alpha, y, 1);
                        }
                    } else {
                        if (beta != 1) {
                            cblas_dscal(m, beta, y, 1);
                        }
                        cblas_daxpy(m, alpha, x, 1, y, 1);
                    }
                } else {
                    FloatPointer x = f32(a).position(ja), y = f32(c).position(jc);
                    if (beta == 0) {
                        cblas_scopy(m, x, 1, y, 1);
                        if (alpha != 1) {
                            cblas_sscal(m, (float) alpha, y, 1);
                        }
                    } else {
                        if (beta != 1) {
                            cblas_sscal(m, (float) beta, y, 1);
                        }
                        cblas_saxpy(m, (float) alpha, x, 1, y, 1);
                    }
                }
            }
        }, site -> cuda(cublas, name).geam(site, t, m, n, alpha, a, lda, beta, c, ldc));
    }

    /** C := alpha op(A) op(A)^T + beta C on the {@code uplo} triangle of the n x n C; op(A) is n x k. */
    static DeviceCall syrk(Cublas cublas, DType t, Uplo uplo, Trans ta, int n, int k, double alpha, Buffer a, int lda,
                           double beta, Buffer c, int ldc) {
        String name = prefix(t) + "syrk " + n + "x" + k;
        return DeviceCall.of(name, List.of(Access.in(a), Access.out(c)), () -> {
            if (t == DType.F64) {
                cblas_dsyrk(CblasColMajor, uplo(uplo), trans(ta), n, k, alpha, f64(a), lda, beta, f64(c), ldc);
            } else {
                cblas_ssyrk(CblasColMajor, uplo(uplo), trans(ta), n, k, (float) alpha, f32(a), lda, (float) beta, f32(c), ldc);
            }
        }, site -> cuda(cublas, name).syrk(site, t, uplo, ta, n, k, alpha, a, lda, beta, c, ldc));
    }

    /**
     * Lower Cholesky factor of the n x n column-major matrix in a host-visible buffer (pinned staging memory),
     * in place; returns LAPACK's info (0, or the 1-based order of the first minor that is not positive definite).
     */
    static int potrfOnHost(DType t, Buffer host, int n) {
        int info = t == DType.F64
                ? LAPACKE_dpotrf(LAPACK_COL_MAJOR, (byte) 'L', n, f64(host), n)
                : LAPACKE_spotrf(LAPACK_COL_MAJOR, (byte) 'L', n, f32(host), n);
        if (info < 0) {
            throw new IllegalStateException("LAPACK potrf rejected argument " + (-info) + " (info " + info + ")");
        }
        return info;
    }

    /**
     * The row interchanges of one LU panel on one tile column: for r = 0 .. npiv - 1 in order, rows r and piv[r]
     * swap, both counted from the first row of {@code column} (tiles of {@code nb} rows, the last {@code lastRows},
     * all {@code cols} wide). {@code piv} is a device buffer of {@code npiv} ints. A CUDA device launches the shipped
     * {@code poniard_laswp} PTX ({@code gpu} null on the CPU emulation, whose lanes run the same loop in Java).
     */
    static DeviceCall laswp(CudaDevice gpu, DType t, List<Buffer> column, int nb, int lastRows, int cols, Buffer piv,
                            int npiv) {
        if (column.size() > LASWP_MAX_TILES) {
            throw new IllegalArgumentException("a device LU reaches at most " + LASWP_MAX_TILES + " tile rows below a "
                    + "panel, got " + column.size() + ": use a larger tile size");
        }
        List<Access> acc = new ArrayList<>();
        acc.add(Access.in(piv));
        for (Buffer b : column) {
            acc.add(Access.out(b));
        }
        int es = t.bytes();
        return DeviceCall.of("laswp " + npiv + " rows x " + cols, acc, () -> {
            IntBuffer p = ints(piv);
            ByteBuffer[] tiles = new ByteBuffer[column.size()];
            for (int i = 0; i < tiles.length; i++) {
                tiles[i] = column.get(i).bytes().duplicate().order(ByteOrder.nativeOrder());
            }
            int last = tiles.length - 1;
            for (int r = 0; r < npiv; r++) {
                int q = p.get(r);
                if (q == r) {
                    continue;
                }
                ByteBuffer ta = tiles[r / nb], tb = tiles[q / nb];
                int lda = r / nb == last ? lastRows : nb, ldb = q / nb == last ? lastRows : nb;
                for (int c = 0; c < cols; c++) {
                    int ia = (c * lda + r % nb) * es, ib = (c * ldb + q % nb) * es;
                    if (es == 8) {
                        long x = ta.getLong(ia);
                        ta.putLong(ia, tb.getLong(ib));
                        tb.putLong(ib, x);
                    } else {
                        int x = ta.getInt(ia);
                        ta.putInt(ia, tb.getInt(ib));
                        tb.putInt(ib, x);
                    }
                }
            }
        }, site -> CudaRowSwaps.launch(cuda(gpu, "laswp"), site, column, nb, lastRows, cols, es, piv, npiv));
    }

    /**
     * LU with partial pivoting of one panel held as column-major tiles in host-visible buffers ({@code tiles}, each
     * {@code rows[i]} x {@code w}), in place: gathered into {@code scratch} (room for the whole panel), factored by
     * LAPACK {@code getrf}, scattered back. The min(Σrows, w) pivots go into {@code piv} as 0-based rows from the
     * panel's top. Returns LAPACK's info: 0, or the 1-based column of the first exactly zero pivot.
     */
    static int getrfOnHost(DType t, List<Buffer> tiles, int[] rows, int w, Buffer scratch, Buffer piv) {
        int pm = 0;
        for (int r : rows) {
            pm += r;
        }
        copyPanel(tiles, rows, w, pm, t.bytes(), scratch, true);
        IntPointer ipiv = new IntPointer(new Pointer(piv.bytes().duplicate().clear()));
        int info = t == DType.F64
                ? LAPACKE_dgetrf(LAPACK_COL_MAJOR, pm, w, f64(scratch), pm, ipiv)
                : LAPACKE_sgetrf(LAPACK_COL_MAJOR, pm, w, f32(scratch), pm, ipiv);
        if (info < 0) {
            throw new IllegalStateException("LAPACK getrf rejected argument " + (-info) + " (info " + info + ")");
        }
        IntBuffer p = ints(piv);
        for (int r = 0; r < Math.min(pm, w); r++) {
            p.put(r, p.get(r) - 1);
        }
        copyPanel(tiles, rows, w, pm, t.bytes(), scratch, false);
        return info;
    }

    /**
     * QR of the m x n column-major tile in a host-visible buffer with all k = min(m, n) reflectors in one block
     * (LAPACK geqrt with nb = k), in place: R on and above the diagonal, the reflectors below. Their k x k block factor
     * goes into {@code tf} (ld k, zeros elsewhere), and the reflectors once more into {@code v} as an explicit m x k
     * matrix (unit diagonal, zeros above it), so the device applies them with GEMMs alone.
     */
    static void geqrtOnHost(DType t, Buffer a, int m, int n, Buffer tf, Buffer v) {
        int k = Math.min(m, n);
        zero(tf);
        int info;
        try (Pointer work = workspace(t, (long) k * n)) {
            info = t == DType.F64
                    ? LAPACKE_dgeqrt_work(LAPACK_COL_MAJOR, m, n, k, f64(a), m, f64(tf), k, (DoublePointer) work)
                    : LAPACKE_sgeqrt_work(LAPACK_COL_MAJOR, m, n, k, f32(a), m, f32(tf), k, (FloatPointer) work);
        }
        if (info != 0) {
            throw new IllegalStateException("LAPACK geqrt rejected argument " + (-info) + " (info " + info + ")");
        }
        ByteBuffer src = a.bytes().duplicate().order(ByteOrder.nativeOrder());
        ByteBuffer dst = v.bytes().duplicate().order(ByteOrder.nativeOrder());
        int es = t.bytes();
        for (int c = 0; c < k; c++) {
            for (int r = 0; r < m; r++) {
                int i = (c * m + r) * es;
                double x = r < c ? 0 : r == c ? 1 : es == 8 ? src.getDouble(i) : src.getFloat(i);
                if (es == 8) {
                    dst.putDouble(i, x);
                } else {
                    dst.putFloat(i, (float) x);
                }
            }
        }
    }

    /**
     * QR of the stacked pair [R; B] (LAPACK tpqrt with l = 0) with all n reflectors in one block: R the upper triangle
     * of the first n rows of the tile in {@code a} (ld {@code lda}), updated in place; B the m x n tile in {@code b},
     * replaced by the reflectors V; their n x n block factor into {@code tf} (ld n, zeros below the diagonal).
     *
     * <p>LAPACK's tpqrt factors each block of ib columns with the level-2 tpqrt2, so asking it for one block of n
     * columns runs at level-2 speed (about a tenth of the level-3 rate at n = 512 here). This factors in blocks of
     * {@link #TPQRT_INNER_BLOCK} instead and merges their T factors into one, as a compact WY product of two block
     * reflectors does: T = [T1, -T1 (V1^T V2) T2; 0, T2], where V1^T V2 is a block of B's Gram matrix (the reflectors'
     * identity tops are disjoint), so the merge costs one SYRK and two TRMMs per block.
     */
    static void tpqrtOnHost(DType t, Buffer a, int lda, Buffer b, int m, int n, Buffer tf) {
        int ib = Math.min(n, TPQRT_INNER_BLOCK);
        boolean f64 = t == DType.F64;
        zero(tf);
        try (Pointer blocks = workspace(t, (long) ib * n); Pointer gram = workspace(t, (long) n * n);
             Pointer work = workspace(t, (long) ib * n)) {
            int info = f64
                    ? LAPACKE_dtpqrt_work(LAPACK_COL_MAJOR, m, n, 0, ib, f64(a), lda, f64(b), m, (DoublePointer) blocks,
                            ib, (DoublePointer) work)
                    : LAPACKE_stpqrt_work(LAPACK_COL_MAJOR, m, n, 0, ib, f32(a), lda, f32(b), m, (FloatPointer) blocks,
                            ib, (FloatPointer) work);
            if (info != 0) {
                throw new IllegalStateException("LAPACK tpqrt rejected argument " + (-info) + " (info " + info + ")");
            }
            if (f64) {
                mergeT(f64(tf), (DoublePointer) blocks, (DoublePointer) gram, f64(b), m, n, ib);
            } else {
                mergeT(f32(tf), (FloatPointer) blocks, (FloatPointer) gram, f32(b), m, n, ib);
            }
        }
    }

    /** The n x n T of {@link #tpqrtOnHost} from LAPACK's blocked T ({@code ib} x n) and the reflectors V (m x n). */
    private static void mergeT(DoublePointer tf, DoublePointer blocks, DoublePointer gram, DoublePointer v, int m,
                               int n, int ib) {
        cblas_dsyrk(CblasColMajor, CblasUpper, CblasTrans, n, m, 1.0, v, m, 0.0, gram, n);
        for (int c = 0; c < n; c += ib) {
            int jb = Math.min(ib, n - c);
            for (int q = 0; q < jb; q++) {
                cblas_dcopy(q + 1, at(blocks, (long) (c + q) * ib), 1, at(tf, (long) (c + q) * n + c), 1);
                cblas_dcopy(c, at(gram, (long) (c + q) * n), 1, at(tf, (long) (c + q) * n), 1);
            }
            if (c > 0) {
                cblas_dtrmm(CblasColMajor, CblasLeft, CblasUpper, CblasNoTrans, CblasNonUnit, c, jb, -1.0, tf, n,
                        at(tf, (long) c * n), n);
                cblas_dtrmm(CblasColMajor, CblasRight, CblasUpper, CblasNoTrans, CblasNonUnit, c, jb, 1.0,
                        at(tf, (long) c * n + c), n, at(tf, (long) c * n), n);
            }
        }
    }

    private static void mergeT(FloatPointer tf, FloatPointer blocks, FloatPointer gram, FloatPointer v, int m, int n,
                               int ib) {
        cblas_ssyrk(CblasColMajor, CblasUpper, CblasTrans, n, m, 1.0f, v, m, 0.0f, gram, n);
        for (int c = 0; c < n; c += ib) {
            int jb = Math.min(ib, n - c);
            for (int q = 0; q < jb; q++) {
                cblas_scopy(q + 1, at(blocks, (long) (c + q) * ib), 1, at(tf, (long) (c + q) * n + c), 1);
                cblas_scopy(c, at(gram, (long) (c + q) * n), 1, at(tf, (long) (c + q) * n), 1);
            }
            if (c > 0) {
                cblas_strmm(CblasColMajor, CblasLeft, CblasUpper, CblasNoTrans, CblasNonUnit, c, jb, -1.0f, tf, n,
                        at(tf, (long) c * n), n);
                cblas_strmm(CblasColMajor, CblasRight, CblasUpper, CblasNoTrans, CblasNonUnit, c, jb, 1.0f,
                        at(tf, (long) c * n + c), n, at(tf, (long) c * n), n);
            }
        }
    }

    private static DoublePointer at(DoublePointer p, long i) {
        return new DoublePointer(p).position(p.position() + i);
    }

    private static FloatPointer at(FloatPointer p, long i) {
        return new FloatPointer(p).position(p.position() + i);
    }

    /** Pooled buffers hold what their last user left: T's unused entries must read as LAPACK's callers expect. */
    private static void zero(Buffer b) {
        ByteBuffer bb = b.bytes().duplicate();
        Pointer.memset(new Pointer(bb.clear()), 0, bb.capacity());
    }

    private static Pointer workspace(DType t, long n) {
        return t == DType.F64 ? new DoublePointer(Math.max(1, n)) : new FloatPointer(Math.max(1, n));
    }

    /** Copies the tiles of a panel into the column-major {@code pm} x {@code w} panel, or back. */
    private static void copyPanel(List<Buffer> tiles, int[] rows, int w, int pm, int es, Buffer scratch, boolean in) {
        ByteBuffer panel = scratch.bytes().duplicate();
        int top = 0;
        for (int i = 0; i < tiles.size(); i++) {
            ByteBuffer tile = tiles.get(i).bytes().duplicate();
            for (int c = 0; c < w; c++) {
                int inTile = c * rows[i] * es, inPanel = (c * pm + top) * es;
                if (in) {
                    panel.put(inPanel, tile, inTile, rows[i] * es);
                } else {
                    tile.put(inTile, panel, inPanel, rows[i] * es);
                }
            }
            top += rows[i];
        }
    }

    /** A host-visible buffer as native-order ints from its start. */
    static IntBuffer ints(Buffer b) {
        ByteBuffer bb = b.bytes().duplicate().order(ByteOrder.nativeOrder());
        bb.clear();
        return bb.asIntBuffer();
    }

    /** A call's CUDA handle (cuBLAS handles, the device), which a call built for a CPU device does not have. */
    private static <T> T cuda(T handle, String call) {
        if (handle == null) {
            throw new IllegalStateException(call + " was built for a CPU device and cannot run on a CUDA stream");
        }
        return handle;
    }

    private static String prefix(DType t) {
        return t == DType.F64 ? "d" : "s";
    }

    /** The buffer's memory (JVM-visible here) as a BLAS argument; javacpp reads the direct buffer's address. */
    private static DoublePointer f64(Buffer b) {
        return new DoublePointer(new Pointer(b.bytes().duplicate().clear()));
    }

    private static FloatPointer f32(Buffer b) {
        return new FloatPointer(new Pointer(b.bytes().duplicate().clear()));
    }

    private static int trans(Trans t) {
        return t == Trans.N ? CblasNoTrans : CblasTrans;
    }

    private static int uplo(Uplo u) {
        return u == Uplo.LOWER ? CblasLower : CblasUpper;
    }
}
