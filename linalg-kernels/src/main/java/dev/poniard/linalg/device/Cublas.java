package dev.poniard.linalg.device;

import dev.poniard.linalg.DType;
import dev.poniard.linalg.tile.TileKernels.Diag;
import dev.poniard.linalg.tile.TileKernels.Side;
import dev.poniard.linalg.tile.TileKernels.Trans;
import dev.poniard.linalg.tile.TileKernels.Uplo;
import dev.poniard.scheduler.stream.Buffer;
import dev.poniard.scheduler.stream.Stream;
import dev.poniard.scheduler.stream.cuda.CudaCallSite;
import dev.poniard.scheduler.stream.cuda.CudaDevice;
import java.util.IdentityHashMap;
import java.util.Map;
import jcuda.Pointer;
import jcuda.jcublas.JCublas2;
import jcuda.jcublas.cublasDiagType;
import jcuda.jcublas.cublasFillMode;
import jcuda.jcublas.cublasHandle;
import jcuda.jcublas.cublasOperation;
import jcuda.jcublas.cublasSideMode;
import jcuda.jcublas.cublasStatus;
import jcuda.runtime.cudaStream_t;

/**
 * cuBLAS on a CUDA device's compute streams: one handle per stream, created and bound to it
 * ({@code cublasSetStream}) once, when the device algebra is launched, so a tile kernel only enqueues its
 * call; one handle per stream also gives each stream its own cuBLAS workspace.
 *
 * <p>This is the only class that touches {@link JCublas2}: initialising it loads {@code libcublas.so.12},
 * which throws {@link UnsatisfiedLinkError} where the library is missing (DESIGN §5), so nothing else may
 * refer to it and {@link #open} turns that into a clear "no cuBLAS" error. Scalars go by host pointer
 * (cuBLAS's default pointer mode), which cuBLAS reads before the call returns.
 */
final class Cublas implements AutoCloseable {
    private final CudaDevice device;
    private final Map<Stream, cublasHandle> handles = new IdentityHashMap<>();

    private Cublas(CudaDevice device) {
        this.device = device;
    }

    /**
     * Handles for every compute stream of {@code device}.
     *
     * @throws IllegalStateException "no cuBLAS: ..." where libcublas cannot be loaded
     */
    static Cublas open(CudaDevice device) {
        requireLibrary();
        Cublas c = new Cublas(device);
        try {
            device.bind();
            for (Stream s : device.computeStreams()) {
                cublasHandle h = new cublasHandle();
                check(JCublas2.cublasCreate(h), "cublasCreate");
                c.handles.put(s, h);
                check(JCublas2.cublasSetStream(h, new cudaStream_t(device.handle(s))), "cublasSetStream(" + s + ")");
            }
            return c;
        } catch (RuntimeException e) {
            c.close();
            throw e;
        }
    }

    /**
     * Loads JCublas2, and with it libcublas, now.
     *
     * @throws IllegalStateException "no cuBLAS: ..." where it cannot be loaded (every time, not only the first)
     */
    static void requireLibrary() {
        try {
            Class.forName("jcuda.jcublas.JCublas2", true, Cublas.class.getClassLoader());
        } catch (ClassNotFoundException | LinkageError e) {
            throw new IllegalStateException("no cuBLAS: JCublas2 could not be loaded (" + firstLine(e) + "); GPU tile"
                    + " kernels need libcublas.so.12 (CUDA 12 cuBLAS) on the library path (LD_LIBRARY_PATH) next to"
                    + " the NVIDIA driver, and the jcublas and jcublas-natives jars on the class path", e);
        }
    }

    private static String firstLine(Throwable e) {
        String s = e.toString();
        int nl = s.indexOf('\n');
        return nl < 0 ? s : s.substring(0, nl);
    }

    private cublasHandle handle(CudaCallSite site) {
        cublasHandle h = handles.get(site.stream());
        if (h == null) {
            throw new IllegalArgumentException(site.stream() + " is not a compute stream of " + device.name()
                    + ", for which this algebra made its cuBLAS handles");
        }
        return h;
    }

    /** C := alpha op(A) op(B) + beta C on column-major device buffers. */
    void gemm(CudaCallSite site, DType t, Trans ta, Trans tb, int m, int n, int k, double alpha, Buffer a, int lda,
              Buffer b, int ldb, double beta, Buffer c, int ldc) {
        cublasHandle h = handle(site);
        int rc = t == DType.F64
                ? JCublas2.cublasDgemm(h, op(ta), op(tb), m, n, k, Pointer.to(new double[] {alpha}), site.pointer(a), lda,
                        site.pointer(b), ldb, Pointer.to(new double[] {beta}), site.pointer(c), ldc)
                : JCublas2.cublasSgemm(h, op(ta), op(tb), m, n, k, Pointer.to(new float[] {(float) alpha}), site.pointer(a),
                        lda, site.pointer(b), ldb, Pointer.to(new float[] {(float) beta}), site.pointer(c), ldc);
        check(rc, t == DType.F64 ? "cublasDgemm" : "cublasSgemm");
    }

    /** B := alpha op(A)^-1 B or alpha B op(A)^-1 with A triangular; B is m x n. */
    void trsm(CudaCallSite site, DType t, Side side, Uplo uplo, Trans ta, Diag diag, int m, int n, double alpha,
              Buffer a, int lda, Buffer b, int ldb) {
        cublasHandle h = handle(site);
        int sd = side == Side.LEFT ? cublasSideMode.CUBLAS_SIDE_LEFT : cublasSideMode.CUBLAS_SIDE_RIGHT;
        int dg = diag == Diag.UNIT ? cublasDiagType.CUBLAS_DIAG_UNIT : cublasDiagType.CUBLAS_DIAG_NON_UNIT;
        int rc = t == DType.F64
                ? JCublas2.cublasDtrsm(h, sd, fill(uplo), op(ta), dg, m, n, Pointer.to(new double[] {alpha}),
                        site.pointer(a), lda, site.pointer(b), ldb)
                : JCublas2.cublasStrsm(h, sd, fill(uplo), op(ta), dg, m, n, Pointer.to(new float[] {(float) alpha}),
                        site.pointer(a), lda, site.pointer(b), ldb);
        check(rc, t == DType.F64 ? "cublasDtrsm" : "cublasStrsm");
    }

    /** B := alpha op(A) B or alpha B op(A) in place (cuBLAS's out-of-place trmm with C = B), A triangular. */
    void trmm(CudaCallSite site, DType t, Side side, Uplo uplo, Trans ta, Diag diag, int m, int n, double alpha,
              Buffer a, int lda, Buffer b, int ldb) {
        cublasHandle h = handle(site);
        int sd = side == Side.LEFT ? cublasSideMode.CUBLAS_SIDE_LEFT : cublasSideMode.CUBLAS_SIDE_RIGHT;
        int dg = diag == Diag.UNIT ? cublasDiagType.CUBLAS_DIAG_UNIT : cublasDiagType.CUBLAS_DIAG_NON_UNIT;
        Pointer pb = site.pointer(b);
        int rc = t == DType.F64
                ? JCublas2.cublasDtrmm(h, sd, fill(uplo), op(ta), dg, m, n, Pointer.to(new double[] {alpha}),
                        site.pointer(a), lda, pb, ldb, pb, ldb)
                : JCublas2.cublasStrmm(h, sd, fill(uplo), op(ta), dg, m, n, Pointer.to(new float[] {(float) alpha}),
                        site.pointer(a), lda, pb, ldb, pb, ldb);
        check(rc, t == DType.F64 ? "cublasDtrmm" : "cublasStrmm");
    }

    /** C := alpha A + beta C on m x n blocks: geam with B = C, which cuBLAS runs in place. */
    void geam(CudaCallSite site, DType t, int m, int n, double alpha, Buffer a, int lda, double beta, Buffer c,
              int ldc) {
        cublasHandle h = handle(site);
        int no = cublasOperation.CUBLAS_OP_N;
        Pointer pc = site.pointer(c);
        int rc = t == DType.F64
                ? JCublas2.cublasDgeam(h, no, no, m, n, Pointer.to(new double[] {alpha}), site.pointer(a), lda,
                        Pointer.to(new double[] {beta}), pc, ldc, pc, ldc)
                : JCublas2.cublasSgeam(h, no, no, m, n, Pointer.to(new float[] {(float) alpha}), site.pointer(a), lda,
                        Pointer.to(new float[] {(float) beta}), pc, ldc, pc, ldc);
        check(rc, t == DType.F64 ? "cublasDgeam" : "cublasSgeam");
    }

    /** C := alpha op(A) op(A)^T + beta C on the {@code uplo} triangle of the n x n C; op(A) is n x k. */
    void syrk(CudaCallSite site, DType t, Uplo uplo, Trans ta, int n, int k, double alpha, Buffer a, int lda,
              double beta, Buffer c, int ldc) {
        cublasHandle h = handle(site);
        int rc = t == DType.F64
                ? JCublas2.cublasDsyrk(h, fill(uplo), op(ta), n, k, Pointer.to(new double[] {alpha}), site.pointer(a), lda,
                        Pointer.to(new double[] {beta}), site.pointer(c), ldc)
                : JCublas2.cublasSsyrk(h, fill(uplo), op(ta), n, k, Pointer.to(new float[] {(float) alpha}), site.pointer(a),
                        lda, Pointer.to(new float[] {(float) beta}), site.pointer(c), ldc);
        check(rc, t == DType.F64 ? "cublasDsyrk" : "cublasSsyrk");
    }

    private static int op(Trans t) {
        return t == Trans.N ? cublasOperation.CUBLAS_OP_N : cublasOperation.CUBLAS_OP_T;
    }

    private static int fill(Uplo u) {
        return u == Uplo.LOWER ? cublasFillMode.CUBLAS_FILL_MODE_LOWER : cublasFillMode.CUBLAS_FILL_MODE_UPPER;
    }

    private static void check(int rc, String call) {
        if (rc != cublasStatus.CUBLAS_STATUS_SUCCESS) {
            throw new IllegalStateException(call + " failed: " + cublasStatus.stringFor(rc) + " (" + rc + ")");
        }
    }

    /** Destroys the handles; call while the device is still open. */
    @Override
    public void close() {
        if (handles.isEmpty()) {
            return;
        }
        device.bind();
        IllegalStateException first = null;
        for (cublasHandle h : handles.values()) {
            int rc = JCublas2.cublasDestroy(h);
            if (rc != cublasStatus.CUBLAS_STATUS_SUCCESS && first == null) {
                first = new IllegalStateException("cublasDestroy failed: " + cublasStatus.stringFor(rc) + " (" + rc + ")");
            }
        }
        handles.clear();
        if (first != null) {
            throw first;
        }
    }
}
