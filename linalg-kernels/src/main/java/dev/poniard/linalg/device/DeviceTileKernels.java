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
import static org.bytedeco.openblas.global.openblas.LAPACKE_dpotrf;
import static org.bytedeco.openblas.global.openblas.LAPACKE_spotrf;
import static org.bytedeco.openblas.global.openblas.cblas_dgemm;
import static org.bytedeco.openblas.global.openblas.cblas_dsyrk;
import static org.bytedeco.openblas.global.openblas.cblas_dtrsm;
import static org.bytedeco.openblas.global.openblas.cblas_sgemm;
import static org.bytedeco.openblas.global.openblas.cblas_ssyrk;
import static org.bytedeco.openblas.global.openblas.cblas_strsm;

import dev.poniard.linalg.DType;
import dev.poniard.linalg.tile.TileKernels.Diag;
import dev.poniard.linalg.tile.TileKernels.Side;
import dev.poniard.linalg.tile.TileKernels.Trans;
import dev.poniard.linalg.tile.TileKernels.Uplo;
import dev.poniard.scheduler.stream.Buffer;
import dev.poniard.scheduler.stream.DeviceCall;
import dev.poniard.scheduler.stream.StreamScheduler.Access;
import java.util.List;
import org.bytedeco.javacpp.DoublePointer;
import org.bytedeco.javacpp.FloatPointer;
import org.bytedeco.javacpp.Pointer;

/**
 * Tile kernels as {@link DeviceCall}s on column-major tiles in device buffers: OpenBLAS on the buffers'
 * memory on the CPU emulation, cuBLAS on the stream on a GPU ({@link Cublas}; null for a CPU device, whose
 * streams never ask for the CUDA implementation). Shapes are checked by the caller
 * ({@link DeviceTileAlgebra}), which builds every call from a matrix's tile shapes.
 */
final class DeviceTileKernels {
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

    private static Cublas cuda(Cublas cublas, String call) {
        if (cublas == null) {
            throw new IllegalStateException(call + " was built for a CPU device and cannot run on a CUDA stream");
        }
        return cublas;
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
