package dev.poniard.linalg;

import static dev.poniard.linalg.Dense.seed;
import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.poniard.linalg.device.DeviceTileAlgebra;
import dev.poniard.linalg.tile.Tile;
import dev.poniard.linalg.tile.TileKernels;
import dev.poniard.linalg.tile.TileKernels.Trans;
import dev.poniard.linalg.tile.TileKernels.Uplo;
import dev.poniard.scheduler.stream.Device;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.TestInstance;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;

/**
 * The device tile algebra against OpenBLAS on whole matrices (one tile holding everything), device-neutral:
 * the CPU emulation runs it everywhere ({@code DeviceTileAlgebraCpuTest}), a CUDA GPU with cuBLAS where one
 * is present ({@code DeviceTileAlgebraCudaTest}, tag {@code gpu}).
 */
@TestInstance(TestInstance.Lifecycle.PER_CLASS)
@Timeout(value = 60, unit = TimeUnit.SECONDS)
abstract class DeviceTileAlgebraTest {
    private Device device;
    private DeviceTileAlgebra la;

    /** A fresh device with at least 3 compute streams; may abort the class with an assumption. */
    protected abstract Device open();

    /** Whether the device's BLAS gives the same bits for the same call on any stream (OpenBLAS on one thread does). */
    protected abstract boolean sameBitsOnEveryStream();

    @BeforeAll
    void start() {
        device = open();
        la = DeviceTileAlgebra.launch(new DeviceTileAlgebra.Context().device(device));
    }

    @AfterAll
    void stop() {
        if (la != null) {
            la.close();
        }
        if (device != null) {
            device.close();
        }
    }

    /** The same entries in one tile: the reference operand for a single OpenBLAS call. */
    private static DistributedMatrix whole(DistributedMatrix m) {
        DistributedMatrix w = DistributedMatrix.zeros(m.type(), m.rows(), m.cols(), Math.max(m.rows(), m.cols()));
        w.fromColumnMajor(m.toColumnMajor());
        return w;
    }

    @ParameterizedTest(name = "{0}x{1}x{2} tile {3} {4} ta={5} tb={6} beta={7}")
    @CsvSource({"64,64,64,16,F64,N,N,-0.5", "100,70,45,32,F64,N,N,-0.5", "100,70,45,32,F64,T,N,1.0",
            "57,81,33,16,F64,N,T,-0.5", "90,60,75,32,F64,T,T,2.0", "100,70,45,32,F32,N,N,-0.5",
            "130,90,70,32,F32,T,T,-0.5", "5,3,7,4,F64,N,N,0.0", "1,1,1,8,F64,N,N,1.0"})
    void shouldMultiplyLikeOpenBlas(int m, int n, int k, int nb, DType type, Trans ta, Trans tb, double beta) {
        long seed = seed("gemm");
        try (DistributedMatrix a = ta == Trans.N ? DistributedMatrix.random(type, m, k, nb, seed)
                : DistributedMatrix.random(type, k, m, nb, seed);
             DistributedMatrix b = tb == Trans.N ? DistributedMatrix.random(type, k, n, nb, seed + 1)
                     : DistributedMatrix.random(type, n, k, nb, seed + 1);
             DistributedMatrix c = DistributedMatrix.random(type, m, n, nb, seed + 2);
             DistributedMatrix ra = whole(a); DistributedMatrix rb = whole(b); DistributedMatrix rc = whole(c)) {
            TileKernels.gemm(ta, tb, 1.5, ra.tile(0, 0), rb.tile(0, 0), beta, rc.tile(0, 0));
            la.gemm(ta, tb, 1.5, a, b, beta, c);
            double err = Dense.frobDiff(c.toColumnMajor(), rc.toColumnMajor());
            double scale = a.normFrobenius() * b.normFrobenius() * k * type.epsilon();
            assertTrue(err / scale < 10, "gemm error " + err + " scaled " + err / scale);
        }
        assertEquals(0, device.memory().inUseBytes(), "device buffers still held");
        assertEquals(0, device.staging().inUseBytes(), "staging buffers still held");
    }

    @Test
    void shouldNotReadCWhenBetaIsZero() {
        try (DistributedMatrix a = DistributedMatrix.random(DType.F64, 40, 30, 16, 1);
             DistributedMatrix b = DistributedMatrix.random(DType.F64, 30, 20, 16, 2);
             DistributedMatrix c = DistributedMatrix.zeros(DType.F64, 40, 20, 16)) {
            c.fill((r, q) -> Double.NaN);
            la.gemm(1.0, a, b, 0.0, c);
            double[] expected = Dense.mul(a.toColumnMajor(), 40, 30, false, b.toColumnMajor(), 30, 20, false);
            assertArrayEquals(expected, c.toColumnMajor(), 1e-12);
        }
    }

    @ParameterizedTest(name = "n={0} tile {1} {2}")
    @CsvSource({"64,16,F64", "100,32,F64", "257,64,F64", "33,64,F64", "150,32,F32", "1,4,F64"})
    void shouldFactorCholeskyLikeOpenBlas(int n, int nb, DType type) {
        long seed = seed("cholesky");
        try (DistributedMatrix a = DistributedMatrix.spd(type, n, nb, seed); DistributedMatrix f = a.copy();
             DistributedMatrix ref = whole(a)) {
            if (n > 1) {
                f.set(0, n - 1, 12345); // in the strict upper triangle: must survive
            }
            assertEquals(0, TileKernels.potrf(Uplo.LOWER, ref.tile(0, 0)));
            la.cholesky(f);
            double[] ad = a.toColumnMajor();
            double[] l = Dense.lower(f.toColumnMajor(), n, n, false);
            double[] llt = Dense.mul(l, n, n, false, l, n, n, true);
            double res = Dense.frobDiff(ad, llt) / (Dense.frob(ad) * n * type.epsilon());
            assertTrue(res < 10, "scaled residual ||A - LL^T||/(||A|| n eps) = " + res);
            double[] lref = Dense.lower(ref.toColumnMajor(), n, n, false);
            double diff = Dense.frobDiff(l, lref) / (Dense.frob(lref) * n * type.epsilon());
            assertTrue(diff < 100, "||L - L_openblas||/(||L|| n eps) = " + diff);
            if (n > 1) {
                assertEquals(12345, f.get(0, n - 1));
            }
        }
        assertEquals(0, device.memory().inUseBytes(), "device buffers still held");
    }

    @Test
    void shouldNameTheColumnWhereCholeskyFailsAndLeaveTheMatrixAsItWas() {
        int n = 100;
        int nb = 32;
        try (DistributedMatrix a = DistributedMatrix.spd(DType.F64, n, nb, 7)) {
            a.set(70, 70, -1e6);
            double[] before = a.toColumnMajor();
            NotPositiveDefiniteException e = assertThrows(NotPositiveDefiniteException.class, () -> la.cholesky(a));
            assertEquals(70, e.column());
            assertEquals(2, e.tile());
            assertTrue(e.getMessage().contains("column 70"), e.getMessage());
            assertArrayEquals(before, a.toColumnMajor());
        }
        // nothing left enqueued or held: every stream is idle and the algebra still works
        for (var s : device.computeStreams()) {
            assertEquals(0, s.pendingNs(), s.name());
        }
        assertEquals(0, device.memory().inUseBytes());
        try (DistributedMatrix a = DistributedMatrix.spd(DType.F64, 50, 16, 8)) {
            la.cholesky(a);
        }
    }

    @Test
    void shouldNameTheFirstColumnWhenTheFirstTileFails() {
        try (DistributedMatrix a = DistributedMatrix.spd(DType.F64, 40, 16, 9)) {
            a.set(3, 3, -1);
            NotPositiveDefiniteException e = assertThrows(NotPositiveDefiniteException.class, () -> la.cholesky(a));
            assertEquals(3, e.column());
            assertEquals(0, e.tile());
        }
    }

    @ParameterizedTest(name = "{0}x{1} tile {2} {3}")
    @CsvSource({"64,64,16,F64", "100,100,32,F64", "130,90,32,F64", "70,110,32,F64", "257,257,64,F64",
            "150,150,32,F32", "45,45,64,F64", "1,1,4,F64"})
    void shouldFactorLuWithPartialPivotingLikeTheHostAlgebra(int m, int n, int nb, DType type) {
        long seed = seed("device lu");
        try (DistributedMatrix a = DistributedMatrix.random(type, m, n, nb, seed); DistributedMatrix f = a.copy()) {
            LuFactorization lu = la.lu(f);
            assertEquals(Math.min(m, n), lu.pivots().length);
            double[] fd = f.toColumnMajor();
            double[] ad = a.toColumnMajor();
            double res = Dense.luResidual(ad, fd, m, n, lu.permutation()) / (Dense.frob(ad) * Math.max(m, n)
                    * type.epsilon());
            assertTrue(res < 10, "scaled residual ||PA - LU||/(||A|| n eps) = " + res);
            // Partial pivoting keeps every multiplier at most 1 in magnitude.
            for (double v : Dense.lower(fd, m, n, true)) {
                assertTrue(Math.abs(v) <= 1 + 1e-6, "multiplier " + v + " exceeds 1");
            }
        }
        assertEquals(0, device.memory().inUseBytes(), "device buffers still held");
        assertEquals(0, device.staging().inUseBytes(), "staging buffers still held");
    }

    @Test
    void shouldMatchLapackOnOnePanelAcrossTileRows() {
        // One tile column of five tile rows: the panel is one getrf call on the gathered column, so the pivots (which
        // cross tiles) and the factors equal LAPACK's on the whole matrix bit for bit.
        long seed = seed("device lu panel");
        try (DistributedMatrix a = DistributedMatrix.random(DType.F64, 75, 16, 16, seed);
             DistributedMatrix ref = whole(a)) {
            int[] ipiv = new int[16];
            assertEquals(0, TileKernels.getrf(ref.tile(0, 0), ipiv));
            LuFactorization lu = la.lu(a);
            int[] expected = new int[16];
            for (int r = 0; r < 16; r++) {
                expected[r] = ipiv[r] - 1;
            }
            assertArrayEquals(expected, lu.pivots());
            assertArrayEquals(ref.toColumnMajor(), a.toColumnMajor());
        }
    }

    @Test
    void shouldNameTheSingularColumnAndLeaveTheMatrixAsItWas() {
        int n = 96;
        try (DistributedMatrix a = DistributedMatrix.random(DType.F64, n, n, 32, 3)) {
            // A zero column stays exactly zero under elimination: the first zero pivot is at column 50.
            for (int r = 0; r < n; r++) {
                a.set(r, 50, 0);
            }
            double[] before = a.toColumnMajor();
            SingularMatrixException e = assertThrows(SingularMatrixException.class, () -> la.lu(a));
            assertEquals(1, e.tile());
            assertEquals(50, e.column(), e.getMessage());
            assertArrayEquals(before, a.toColumnMajor());
        }
        for (var s : device.computeStreams()) {
            assertEquals(0, s.pendingNs(), s.name());
        }
        assertEquals(0, device.memory().inUseBytes());
        assertEquals(0, device.staging().inUseBytes());
        try (DistributedMatrix a = DistributedMatrix.random(DType.F64, 50, 50, 16, 8)) {
            la.lu(a);
        }
    }

    @ParameterizedTest(name = "{0}x{1} tile {2} {3}")
    @CsvSource({"64,64,16,F64", "100,100,32,F64", "130,90,32,F64", "70,110,32,F64", "200,50,64,F64", "33,20,64,F64",
            "120,90,32,F32", "1,1,4,F64"})
    void shouldFactorQrAsTheHostAlgebraDoesWithOneReflectorBlockPerTile(int m, int n, int nb, DType type) {
        long seed = seed("device qr");
        try (TileAlgebra host = TileAlgebra.launch(new TileAlgebra.Context().workers(1).innerBlock(nb));
             DistributedMatrix a = DistributedMatrix.random(type, m, n, nb, seed); DistributedMatrix f = a.copy();
             DistributedMatrix hf = a.copy(); QrFactorization qr = la.qr(f); QrFactorization hqr = host.qr(hf);
             DistributedMatrix q = DistributedMatrix.zeros(type, m, m, nb)) {
            assertEquals(nb, qr.innerBlock());
            // Q from the device's reflectors and T, applied by the host algebra
            for (int i = 0; i < m; i++) {
                q.set(i, i, 1);
            }
            host.applyQ(qr, Trans.N, q);
            double[] qd = q.toColumnMajor();
            double[] r = Dense.upper(f.toColumnMajor(), m, n);
            int k = Math.min(m, n);
            double[] qr2 = Dense.mul(java.util.Arrays.copyOf(qd, m * k), m, k, false, r, k, n, false);
            double[] ad = a.toColumnMajor();
            double eps = type.epsilon();
            double res = Dense.frobDiff(ad, qr2) / (Dense.frob(ad) * Math.max(m, n) * eps);
            assertTrue(res < 10, "scaled residual ||A - QR||/(||A|| n eps) = " + res);
            double orth = Dense.frobDiff(Dense.mul(qd, m, m, true, qd, m, m, false), Dense.identity(m)) / (m * eps);
            assertTrue(orth < 10, "scaled orthogonality ||Q^T Q - I||/(m eps) = " + orth);
            // the same Householder steps as LAPACK's kernels on the host: R, reflectors and T agree to rounding
            double diff = Dense.frobDiff(f.toColumnMajor(), hf.toColumnMajor())
                    / (Dense.frob(ad) * Math.max(m, n) * eps);
            assertTrue(diff < 100, "||F - F_host||/(||A|| n eps) = " + diff);
            for (int kk = 0; kk < Math.min(f.mt(), f.nt()); kk++) {
                for (int i = kk; i < f.mt(); i++) {
                    double[] td = Dense.values(qr.t(i, kk));
                    double[] th = Dense.values(hqr.t(i, kk));
                    assertTrue(Dense.frobDiff(td, th) <= 100 * Math.max(1, Dense.frob(th)) * nb * eps,
                            "T(" + i + ", " + kk + ") differs from the host algebra's");
                }
                Tile d = f.tile(kk, kk);
                assertArrayEquals(Dense.lower(Dense.values(d), d.rows(), d.cols(), true),
                        Dense.lower(Dense.values(qr.v(kk)), d.rows(), d.cols(), true), "reflectors of tile " + kk);
            }
        }
        assertEquals(0, device.memory().inUseBytes(), "device buffers still held");
        assertEquals(0, device.staging().inUseBytes(), "staging buffers still held");
    }

    @Test
    void shouldRejectBadShapes() {
        try (DistributedMatrix a = DistributedMatrix.random(DType.F64, 40, 30, 16, 1);
             DistributedMatrix b = DistributedMatrix.random(DType.F64, 20, 20, 16, 2);
             DistributedMatrix c = DistributedMatrix.zeros(DType.F64, 40, 20, 16);
             DistributedMatrix b8 = DistributedMatrix.random(DType.F64, 30, 20, 8, 3);
             DistributedMatrix bf = DistributedMatrix.random(DType.F32, 30, 20, 16, 3);
             DistributedMatrix sq = DistributedMatrix.random(DType.F64, 30, 30, 16, 4)) {
            IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> la.gemm(1, a, b, 0, c));
            assertTrue(e.getMessage().contains("op(A) is 40x30, op(B) is 20x20"), e.getMessage());
            e = assertThrows(IllegalArgumentException.class, () -> la.gemm(1, a, b8, 0, c));
            assertTrue(e.getMessage().contains("tile size and type"), e.getMessage());
            e = assertThrows(IllegalArgumentException.class, () -> la.gemm(1, a, bf, 0, c));
            assertTrue(e.getMessage().contains("tile size and type"), e.getMessage());
            e = assertThrows(IllegalArgumentException.class, () -> la.gemm(1, sq, sq, 0, sq));
            assertTrue(e.getMessage().contains("pass a copy"), e.getMessage());
            e = assertThrows(IllegalArgumentException.class, () -> la.cholesky(a));
            assertTrue(e.getMessage().contains("square") && e.getMessage().contains("40x30"), e.getMessage());
        }
        assertEquals(0, device.memory().inUseBytes());
    }

    @Test
    void shouldReuseThePoolsBuffersOnTheNextRun() {
        try (DistributedMatrix a = DistributedMatrix.spd(DType.F64, 96, 32, 5)) {
            la.cholesky(a.copy());
            long dev = device.memory().allocatedBytes();
            long pinned = device.staging().allocatedBytes();
            la.cholesky(a.copy());
            assertEquals(dev, device.memory().allocatedBytes());
            assertEquals(pinned, device.staging().allocatedBytes());
        }
    }

    @Test
    void shouldComputeWhatOneStreamComputes() {
        long seed = seed("one stream");
        try (DeviceTileAlgebra one = DeviceTileAlgebra.launch(new DeviceTileAlgebra.Context().device(device)
                .singleStream(true));
             DistributedMatrix a = DistributedMatrix.spd(DType.F64, 150, 32, seed); DistributedMatrix f1 = a.copy();
             DistributedMatrix f2 = a.copy(); DistributedMatrix c1 = DistributedMatrix.random(DType.F64, 150, 150, 32, seed);
             DistributedMatrix c2 = c1.copy()) {
            la.cholesky(f1);
            one.cholesky(f2);
            la.gemm(Trans.N, Trans.T, 1.0, f1, a, 0.5, c1);
            one.gemm(Trans.N, Trans.T, 1.0, f2, a, 0.5, c2);
            // the events keep every tile's updates in one order, so only the BLAS itself could differ
            double tol = sameBitsOnEveryStream() ? 0 : 1e-13 * 150 * 150;
            assertArrayEquals(f2.toColumnMajor(), f1.toColumnMajor(), tol);
            assertArrayEquals(c2.toColumnMajor(), c1.toColumnMajor(), tol);
        }
    }
}
