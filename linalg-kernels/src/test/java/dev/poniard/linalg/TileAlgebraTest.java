package dev.poniard.linalg;

import static dev.poniard.linalg.Dense.seed;
import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.poniard.linalg.tile.TileKernels.Diag;
import dev.poniard.linalg.tile.TileKernels.Trans;
import dev.poniard.linalg.tile.TileKernels.Uplo;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;
import org.nd4j.linalg.api.ndarray.INDArray;

@Timeout(value = 60, unit = TimeUnit.SECONDS)
class TileAlgebraTest {
    private static TileAlgebra la;

    @BeforeAll
    static void start() {
        la = TileAlgebra.launch(new TileAlgebra.Context().workers(2).innerBlock(8));
    }

    @AfterAll
    static void stop() {
        la.close();
    }

    private static double eps(DType t) {
        return t.epsilon();
    }

    @ParameterizedTest(name = "{0}x{1}x{2} tile {3} {4} ta={5} tb={6}")
    @CsvSource({"64,64,64,16,F64,N,N", "100,70,45,32,F64,N,N", "100,70,45,32,F64,T,N", "57,81,33,16,F64,N,T",
            "90,60,75,32,F64,T,T", "100,70,45,32,F32,N,N", "200,150,130,64,F32,T,N"})
    void shouldMultiplyLikeNd4j(int m, int n, int k, int nb, DType type, Trans ta, Trans tb) {
        long seed = seed("gemm");
        try (DistributedMatrix a = ta == Trans.N ? DistributedMatrix.random(type, m, k, nb, seed)
                : DistributedMatrix.random(type, k, m, nb, seed);
             DistributedMatrix b = tb == Trans.N ? DistributedMatrix.random(type, k, n, nb, seed + 1)
                     : DistributedMatrix.random(type, n, k, nb, seed + 1);
             DistributedMatrix c = DistributedMatrix.random(type, m, n, nb, seed + 2)) {
            INDArray ea = a.toINDArray();
            INDArray eb = b.toINDArray();
            INDArray ec = c.toINDArray();
            INDArray opA = ta == Trans.N ? ea : ea.transpose();
            INDArray opB = tb == Trans.N ? eb : eb.transpose();
            INDArray expected = opA.mmul(opB).muli(1.5).addi(ec.muli(-0.5));
            la.gemm(ta, tb, 1.5, a, b, -0.5, c);
            INDArray got = c.toINDArray();
            double err = got.sub(expected).norm2Number().doubleValue();
            double scale = ea.norm2Number().doubleValue() * eb.norm2Number().doubleValue() * k * eps(type);
            assertTrue(err / scale < 10, "gemm error " + err + " scaled " + err / scale);
        }
    }

    @ParameterizedTest(name = "n={0} tile {1} {2}")
    @CsvSource({"64,16,F64", "100,32,F64", "257,64,F64", "33,64,F64", "150,32,F32", "1,4,F64"})
    void shouldFactorCholeskyWithSmallResidual(int n, int nb, DType type) {
        long seed = seed("cholesky");
        try (DistributedMatrix a = DistributedMatrix.spd(type, n, nb, seed); DistributedMatrix f = a.copy()) {
            la.cholesky(f);
            double[] ad = a.toColumnMajor();
            double[] l = Dense.lower(f.toColumnMajor(), n, n, false);
            double[] llt = Dense.mul(l, n, n, false, l, n, n, true);
            double res = Dense.frobDiff(ad, llt) / (Dense.frob(ad) * n * eps(type));
            assertTrue(res < 10, "scaled residual ||A - LL^T||/(||A|| n eps) = " + res);
        }
    }

    @Test
    void shouldNameTheColumnWhereCholeskyFails() {
        int n = 100;
        int nb = 32;
        try (DistributedMatrix a = DistributedMatrix.spd(DType.F64, n, nb, 7)) {
            a.set(70, 70, -1e6);
            NotPositiveDefiniteException e = assertThrows(NotPositiveDefiniteException.class, () -> la.cholesky(a));
            assertEquals(70, e.column());
            assertEquals(2, e.tile());
            assertTrue(e.getMessage().contains("column 70"), e.getMessage());
        }
        assertSchedulerIdleAndUsable();
    }

    @ParameterizedTest(name = "{0}x{1} tile {2} {3}")
    @CsvSource({"64,64,16,F64", "100,100,32,F64", "130,90,32,F64", "70,110,32,F64", "257,257,64,F64",
            "150,150,32,F32", "45,45,64,F64"})
    void shouldFactorLuWithPartialPivoting(int m, int n, int nb, DType type) {
        long seed = seed("lu");
        try (DistributedMatrix a = DistributedMatrix.random(type, m, n, nb, seed); DistributedMatrix f = a.copy()) {
            LuFactorization lu = la.lu(f);
            double[] fd = f.toColumnMajor();
            double[] l = Dense.lower(fd, m, n, true);
            double[] ad = a.toColumnMajor();
            double res = Dense.luResidual(ad, fd, m, n, lu.permutation()) / (Dense.frob(ad) * Math.max(m, n) * eps(type));
            assertTrue(res < 10, "scaled residual ||PA - LU||/(||A|| n eps) = " + res);
            // Partial pivoting keeps every multiplier at most 1 in magnitude.
            for (double v : l) {
                assertTrue(Math.abs(v) <= 1 + 1e-12, "multiplier " + v + " exceeds 1");
            }
        }
    }

    @Test
    void shouldMatchLapackPivotsOnOnePanel() {
        // With a single tile column the panel is one getrf call: pivots equal ND4J/LAPACK's.
        long seed = seed("pivots");
        try (DistributedMatrix a = DistributedMatrix.random(DType.F64, 40, 8, 8, seed);
             DistributedMatrix whole = DistributedMatrix.random(DType.F64, 40, 8, 64, seed)) {
            LuFactorization tiled = la.lu(a);
            LuFactorization single = la.lu(whole);
            assertArrayEquals(single.pivots(), tiled.pivots());
            assertArrayEquals(whole.toColumnMajor(), a.toColumnMajor(), 1e-14);
        }
    }

    @Test
    void shouldReportSingularColumn() {
        int n = 96;
        try (DistributedMatrix a = DistributedMatrix.random(DType.F64, n, n, 32, 3)) {
            // A zero column stays exactly zero under elimination: the first zero pivot is at column 50.
            for (int r = 0; r < n; r++) {
                a.set(r, 50, 0);
            }
            SingularMatrixException e = assertThrows(SingularMatrixException.class, () -> la.lu(a));
            assertEquals(1, e.tile());
            assertEquals(50, e.column(), e.getMessage());
        }
        assertSchedulerIdleAndUsable();
    }

    @ParameterizedTest(name = "{0}x{1} tile {2} {3}")
    @CsvSource({"64,64,16,F64", "100,70,32,F64", "130,130,32,F64", "70,100,32,F64", "200,50,64,F64",
            "120,90,32,F32", "33,20,64,F64"})
    void shouldFactorQrWithOrthogonalQ(int m, int n, int nb, DType type) {
        long seed = seed("qr");
        try (DistributedMatrix a = DistributedMatrix.random(type, m, n, nb, seed);
             DistributedMatrix f = a.copy();
             QrFactorization qr = la.qr(f);
             DistributedMatrix q = DistributedMatrix.zeros(type, m, m, nb)) {
            for (int i = 0; i < m; i++) {
                q.set(i, i, 1);
            }
            la.applyQ(qr, Trans.N, q);
            double[] qd = q.toColumnMajor();
            double[] r = Dense.upper(f.toColumnMajor(), m, n);
            int k = Math.min(m, n);
            // Q's first k columns times R reproduce A.
            double[] qk = java.util.Arrays.copyOf(qd, m * k);
            double[] qr2 = Dense.mul(qk, m, k, false, r, k, n, false);
            double[] ad = a.toColumnMajor();
            double res = Dense.frobDiff(ad, qr2) / (Dense.frob(ad) * Math.max(m, n) * eps(type));
            assertTrue(res < 10, "scaled residual ||A - QR||/(||A|| n eps) = " + res);
            double orth = Dense.frobDiff(Dense.mul(qd, m, m, true, qd, m, m, false), Dense.identity(m)) / (m * eps(type));
            assertTrue(orth < 10, "scaled orthogonality ||Q^T Q - I||/(m eps) = " + orth);
        }
    }

    @ParameterizedTest(name = "{0} n={1} nrhs={2} tile {3}")
    @CsvSource({"LOWER,N,100,30,32", "LOWER,T,100,30,32", "UPPER,N,77,40,16", "UPPER,T,77,5,16"})
    void shouldSolveTriangularSystems(Uplo uplo, Trans trans, int n, int nrhs, int nb) {
        long seed = seed("trsm");
        try (DistributedMatrix a = DistributedMatrix.diagonallyDominant(DType.F64, n, nb, seed);
             DistributedMatrix b = DistributedMatrix.random(DType.F64, n, nrhs, nb, seed + 1);
             DistributedMatrix x = b.copy()) {
            la.triangularSolve(uplo, trans, Diag.NON_UNIT, 2.0, a, x);
            double[] ad = a.toColumnMajor();
            double[] t = uplo == Uplo.LOWER ? Dense.lower(ad, n, n, false) : Dense.upper(ad, n, n);
            double[] ax = Dense.mul(t, n, n, trans == Trans.T, x.toColumnMajor(), n, nrhs, false);
            double[] b2 = b.toColumnMajor();
            for (int i = 0; i < b2.length; i++) {
                b2[i] *= 2;
            }
            double res = Dense.frobDiff(ax, b2) / (Dense.frob(ad) * Dense.frob(x.toColumnMajor()) * n * DType.F64.epsilon());
            assertTrue(res < 10, "scaled residual " + res);
        }
    }

    @ParameterizedTest(name = "{0} n={1} nrhs={2} tile {3} {4}")
    @CsvSource({"lu,100,3,32,F64", "lu,129,40,32,F64", "spd,100,3,32,F64", "spd,129,40,32,F64", "qr,100,3,32,F64",
            "lu,90,7,32,F32", "spd,90,7,32,F32"})
    void shouldSolveLinearSystems(String method, int n, int nrhs, int nb, DType type) {
        long seed = seed("solve");
        try (DistributedMatrix a = method.equals("spd") ? DistributedMatrix.spd(type, n, nb, seed)
                : DistributedMatrix.random(type, n, n, nb, seed);
             DistributedMatrix b = DistributedMatrix.random(type, n, nrhs, nb, seed + 1);
             DistributedMatrix x = switch (method) {
                 case "lu" -> la.solve(a, b);
                 case "spd" -> la.solveSpd(a, b);
                 default -> la.leastSquares(a, b);
             }) {
            double[] ax = Dense.mul(a.toColumnMajor(), n, n, false, x.toColumnMajor(), n, nrhs, false);
            double res = Dense.frobDiff(ax, b.toColumnMajor())
                    / (Dense.frob(a.toColumnMajor()) * Dense.frob(x.toColumnMajor()) * n * eps(type));
            assertTrue(res < 10, method + " scaled residual ||AX - B||/(||A|| ||X|| n eps) = " + res);
        }
    }

    @Test
    void shouldSolveOverdeterminedLeastSquares() {
        long seed = seed("lstsq");
        int m = 150;
        int n = 70;
        try (DistributedMatrix a = DistributedMatrix.random(DType.F64, m, n, 32, seed);
             DistributedMatrix b = DistributedMatrix.random(DType.F64, m, 2, 32, seed + 1);
             DistributedMatrix x = la.leastSquares(a, b)) {
            assertEquals(n, x.rows());
            // Normal equations: A^T (A x - b) = 0 at the minimizer.
            double[] ad = a.toColumnMajor();
            double[] r = Dense.mul(ad, m, n, false, x.toColumnMajor(), n, 2, false);
            double[] bd = b.toColumnMajor();
            for (int i = 0; i < r.length; i++) {
                r[i] -= bd[i];
            }
            double[] g = Dense.mul(ad, m, n, true, r, m, 2, false);
            double rel = Dense.frob(g) / (Dense.frob(ad) * Dense.frob(ad) * Dense.frob(x.toColumnMajor()) * m * DType.F64.epsilon());
            assertTrue(rel < 10, "normal-equation residual " + rel);
        }
    }

    @Test
    void shouldRejectMismatchedShapes() {
        try (DistributedMatrix a = DistributedMatrix.random(DType.F64, 10, 20, 8, 1);
             DistributedMatrix b = DistributedMatrix.random(DType.F64, 10, 5, 8, 2);
             DistributedMatrix c = DistributedMatrix.zeros(DType.F64, 10, 5, 8);
             DistributedMatrix d = DistributedMatrix.zeros(DType.F64, 10, 10, 4)) {
            IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> la.gemm(1, a, b, 0, c));
            assertTrue(e.getMessage().contains("op(A) is 10x20"), e.getMessage());
            assertThrows(IllegalArgumentException.class, () -> la.cholesky(a));
            assertThrows(IllegalArgumentException.class, () -> la.solve(d, b));
            assertThrows(IllegalArgumentException.class, () -> la.leastSquares(a, b));
        }
    }

    private static void assertSchedulerIdleAndUsable() {
        assertTrue(la.scheduler().awaitQuiescence(java.time.Duration.ofSeconds(10)), "tasks left running");
        try (DistributedMatrix a = DistributedMatrix.spd(DType.F64, 40, 16, 5)) {
            la.cholesky(a);
        }
    }
}
