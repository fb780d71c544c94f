package dev.poniard.linalg;

import static dev.poniard.linalg.Dense.seed;
import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.poniard.linalg.dist.Distribution;
import dev.poniard.linalg.tile.TileKernels.Diag;
import dev.poniard.linalg.tile.TileKernels.Trans;
import dev.poniard.linalg.tile.TileKernels.Uplo;
import dev.poniard.scheduler.comm.Communicator;
import dev.poniard.scheduler.comm.LocalCluster;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;
import java.util.function.BiFunction;
import java.util.stream.Stream;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.Arguments;
import org.junit.jupiter.params.provider.MethodSource;

/**
 * GEMM, Cholesky, LU, QR and the solves SPMD in float32 over two ranks of a {@link LocalCluster} (one JVM,
 * Aeron IPC, one worker per rank), checked on rank 0 against the same F32 operation in one process and
 * against float64 arithmetic on the same (float) entries. The F64 tests cannot tell a transfer, broadcast,
 * window or pivot exchange that assumes 8-byte elements from a correct one; these can.
 *
 * <p>Checks are LAPACK-style test ratios, error / (scale * size * eps(F32)), that must stay below 10: tiles
 * see the same kernels in the same order on one rank or two, so against one process the ratio is normally 0,
 * and a ratio bound rather than bitwise equality keeps the checks about accuracy, not about bits.
 */
@Timeout(value = 120, unit = TimeUnit.SECONDS)
class SpmdFloat32Test extends TwoRankFixture {
    private static final int NB = 32;
    private static final double EPS = DType.F32.epsilon();
    private static final TileAlgebra.Strategy P2P = TileAlgebra.Strategy.POINT_TO_POINT;
    private static final TileAlgebra.Strategy COLLECTIVE = TileAlgebra.Strategy.COLLECTIVE;
    private static final TileAlgebra.Strategy RMA = TileAlgebra.Strategy.RMA;


    private static <T> List<T> onEveryRank(TileAlgebra.Strategy strategy, BiFunction<Communicator, TileAlgebra, T> body) {
        return cluster.run(comm -> {
            // Inner block 16 < tile size 32, so QR's inner blocking is exercised (ignored by the other operations).
            try (TileAlgebra la = TileAlgebra.launch(new TileAlgebra.Context().workers(1).communicator(comm)
                    .strategy(strategy).innerBlock(16))) {
                return body.apply(comm, la);
            }
        });
    }

    private static TileAlgebra oneProcess() {
        return TileAlgebra.launch(new TileAlgebra.Context().workers(1).innerBlock(16));
    }

    /** err / (scale * size * eps(F32)) < 10, as LAPACK's test ratios. */
    private static void assertRatio(double err, double scale, int size, String what) {
        double ratio = err / (scale * size * EPS);
        assertTrue(ratio < 10, what + ": error " + err + " is " + ratio + " x scale " + scale + " x " + size
                + " x eps(F32)");
    }

    private static double[] minus(double[] a, double[] b) {
        double[] d = new double[a.length];
        for (int i = 0; i < a.length; i++) {
            d[i] = a[i] - b[i];
        }
        return d;
    }

    // ------------------------------------------------------------------------------------------------

    static Stream<Arguments> gemmCases() {
        List<Arguments> out = new ArrayList<>();
        for (TileAlgebra.Strategy s : TileAlgebra.Strategy.values()) {
            out.add(Arguments.of(s, GRID_1X2, Trans.N, Trans.N));
            out.add(Arguments.of(s, GRID_2X1, Trans.T, Trans.T));
        }
        out.add(Arguments.of(P2P, CYCLIC_ROWS, Trans.N, Trans.T));
        return out.stream();
    }

    /** A random F32 operand whose op() is rows x cols. */
    private static DistributedMatrix operand(Trans t, int rows, int cols, long seed, Distribution d, int rank) {
        return t == Trans.N ? DistributedMatrix.random(DType.F32, rows, cols, NB, seed, d, rank)
                : DistributedMatrix.random(DType.F32, cols, rows, NB, seed, d, rank);
    }

    @ParameterizedTest(name = "{0} {1} ta={2} tb={3}")
    @MethodSource("gemmCases")
    void shouldMultiplyInFloat32AcrossTwoRanksAsOneProcessDoes(TileAlgebra.Strategy strategy, Distribution d,
                                                               Trans ta, Trans tb) {
        int m = 150; // 5 tile rows, the last 22
        int n = 110; // 4 tile columns, the last 14
        int k = 90; // 3 steps, the last 26 deep
        long seed = seed("spmd f32 gemm");
        List<double[]> got = onEveryRank(strategy, (comm, la) -> {
            try (DistributedMatrix a = operand(ta, m, k, seed, d, comm.rank());
                 DistributedMatrix b = operand(tb, k, n, seed + 1, d, comm.rank());
                 DistributedMatrix c = DistributedMatrix.random(DType.F32, m, n, NB, seed + 2, d, comm.rank())) {
                la.gemm(ta, tb, 1.5, a, b, -0.5, c);
                return gathered(c, comm);
            }
        });
        assertNull(got.get(1));
        Distribution one = Distribution.single();
        try (TileAlgebra la = oneProcess();
             DistributedMatrix a = operand(ta, m, k, seed, one, 0);
             DistributedMatrix b = operand(tb, k, n, seed + 1, one, 0);
             DistributedMatrix c = DistributedMatrix.random(DType.F32, m, n, NB, seed + 2)) {
            double[] ad = a.toColumnMajor();
            double[] bd = b.toColumnMajor();
            double[] cd = c.toColumnMajor();
            la.gemm(ta, tb, 1.5, a, b, -0.5, c);
            // The float entries multiplied in double: exact up to F64 rounding, far below F32's.
            double[] exact = Dense.mul(ad, a.rows(), a.cols(), ta == Trans.T, bd, b.rows(), b.cols(), tb == Trans.T);
            for (int i = 0; i < exact.length; i++) {
                exact[i] = 1.5 * exact[i] - 0.5 * cd[i];
            }
            double scale = 1.5 * Dense.frob(ad) * Dense.frob(bd) + 0.5 * Dense.frob(cd);
            assertRatio(Dense.frobDiff(c.toColumnMajor(), got.get(0)), scale, k, "C against one process");
            assertRatio(Dense.frobDiff(exact, got.get(0)), scale, k, "C against float64");
        }
    }

    // ------------------------------------------------------------------------------------------------

    /**
     * Both grids with point to point and collectives, and RMA once: factorizations move what they write
     * point to point under RMA too (RMA only changes how read-only operands move, as applyQ's).
     */
    static Stream<Arguments> choleskyCases() {
        return Stream.of(Arguments.of(P2P, GRID_1X2), Arguments.of(P2P, GRID_2X1), Arguments.of(COLLECTIVE, GRID_1X2),
                Arguments.of(COLLECTIVE, GRID_2X1), Arguments.of(RMA, CYCLIC_ROWS));
    }

    @ParameterizedTest(name = "{0} {1}")
    @MethodSource("choleskyCases")
    void shouldFactorCholeskyInFloat32AcrossTwoRanksAsOneProcessDoes(TileAlgebra.Strategy strategy, Distribution d) {
        int n = 150; // 5 tiles of 32, the last 22
        long seed = seed("spmd f32 cholesky");
        List<double[]> got = onEveryRank(strategy, (comm, la) -> {
            try (DistributedMatrix a = DistributedMatrix.spd(DType.F32, n, NB, seed, d, comm.rank())) {
                la.cholesky(a);
                return gathered(a, comm);
            }
        });
        try (TileAlgebra la = oneProcess(); DistributedMatrix a = DistributedMatrix.spd(DType.F32, n, NB, seed)) {
            double[] ad = a.toColumnMajor();
            la.cholesky(a);
            double[] one = Dense.lower(a.toColumnMajor(), n, n, false);
            double[] l = Dense.lower(got.get(0), n, n, false);
            // A is strictly diagonally dominant (cond(A) < 3), so L's forward error is of the order of its backward error.
            assertRatio(Dense.frobDiff(one, l), Dense.frob(one), n, "L against one process");
            double[] llt = Dense.mul(l, n, n, false, l, n, n, true);
            assertRatio(Dense.frobDiff(ad, llt), Dense.frob(ad), n, "||A - L L^T|| / ||A||");
        }
    }

    // ------------------------------------------------------------------------------------------------

    /** As {@link #choleskyCases}, square, tall and wide, 2x1 and by-rows distributions factoring a copy by columns. */
    static Stream<Arguments> luQrCases() {
        return Stream.of(Arguments.of(P2P, GRID_1X2, 150, 150), Arguments.of(P2P, GRID_2X1, 170, 110),
                Arguments.of(COLLECTIVE, GRID_1X2, 110, 170), Arguments.of(COLLECTIVE, GRID_2X1, 150, 150),
                Arguments.of(RMA, CYCLIC_ROWS, 170, 110));
    }

    @ParameterizedTest(name = "{0} {1} {2}x{3}")
    @MethodSource("luQrCases")
    void shouldFactorLuInFloat32AcrossTwoRanksWithTheSamePivotsAsOneProcess(TileAlgebra.Strategy strategy, Distribution d,
                                                                      int m, int n) {
        long seed = seed("spmd f32 lu");
        List<Object[]> got = onEveryRank(strategy, (comm, la) -> {
            try (DistributedMatrix a = DistributedMatrix.random(DType.F32, m, n, NB, seed, d, comm.rank())) {
                LuFactorization lu = la.lu(a);
                return new Object[] {gathered(a, comm), lu.pivots()};
            }
        });
        assertArrayEquals((int[]) got.get(0)[1], (int[]) got.get(1)[1], "every rank has every pivot");
        int size = Math.max(m, n);
        try (TileAlgebra la = oneProcess(); DistributedMatrix a = DistributedMatrix.random(DType.F32, m, n, NB, seed)) {
            double[] ad = a.toColumnMajor();
            LuFactorization single = la.lu(a);
            // Pivots are chosen by comparing float magnitudes: they must be exactly the same rows.
            assertArrayEquals(single.pivots(), (int[]) got.get(0)[1], "pivots against one process");
            double[] fd = (double[]) got.get(0)[0];
            assertRatio(Dense.frobDiff(a.toColumnMajor(), fd), Dense.frob(a.toColumnMajor()), size, "L\\U against one process");
            assertRatio(Dense.luResidual(ad, fd, m, n, single.permutation()), Dense.frob(ad), size,
                    "||PA - LU|| / ||A||");
        }
    }

    /** Row i of the first min(m, n) rows of the upper triangle, times the sign that makes R(i, i) >= 0. */
    private static double[] rWithNonNegativeDiagonal(double[] f, int m, int n) {
        double[] r = Dense.upper(f, m, n);
        int k = Math.min(m, n);
        for (int i = 0; i < k; i++) {
            if (r[i * k + i] < 0) {
                for (int j = i; j < n; j++) {
                    r[j * k + i] = -r[j * k + i];
                }
            }
        }
        return r;
    }

    @ParameterizedTest(name = "{0} {1} {2}x{3}")
    @MethodSource("luQrCases")
    void shouldFactorQrInFloat32AcrossTwoRanksAsOneProcessDoesAndApplyQ(TileAlgebra.Strategy strategy, Distribution d,
                                                                        int m, int n) {
        long seed = seed("spmd f32 qr");
        List<double[][]> got = onEveryRank(strategy, (comm, la) -> {
            try (DistributedMatrix a = DistributedMatrix.random(DType.F32, m, n, NB, seed, d, comm.rank());
                 QrFactorization qr = la.qr(a);
                 DistributedMatrix r = DistributedMatrix.zeros(DType.F32, m, n, NB, d, comm.rank());
                 DistributedMatrix b = DistributedMatrix.random(DType.F32, m, 5, NB, seed + 1, d, comm.rank())) {
                // Q [R; 0] should give A back: each rank fills its tiles of R from its own tiles of a (same d).
                r.fill((i, j) -> i <= j ? a.tile(i / NB, j / NB).get(i % NB, j % NB) : 0.0);
                la.applyQ(qr, Trans.N, r);
                la.applyQ(qr, Trans.T, b);
                double[] f = gathered(a, comm);
                double[] qrr = gathered(r, comm);
                double[] qtb = gathered(b, comm);
                return f == null ? null : new double[][] {f, qrr, qtb};
            }
        });
        int size = Math.max(m, n);
        try (TileAlgebra la = oneProcess();
             DistributedMatrix a = DistributedMatrix.random(DType.F32, m, n, NB, seed);
             QrFactorization qr = la.qr(a);
             DistributedMatrix b = DistributedMatrix.random(DType.F32, m, 5, NB, seed + 1)) {
            double[] ad = DistributedMatrix.random(DType.F32, m, n, NB, seed).toColumnMajor();
            // R is unique up to the signs of its rows (Householder's convention), so compare it with those fixed.
            assertRatio(Dense.frobDiff(rWithNonNegativeDiagonal(a.toColumnMajor(), m, n), rWithNonNegativeDiagonal(
                    got.get(0)[0], m, n)), Dense.frob(ad), size, "R against one process");
            assertRatio(Dense.frobDiff(ad, got.get(0)[1]), Dense.frob(ad), size, "||A - Q [R; 0]|| / ||A||");
            double[] bd = b.toColumnMajor();
            la.applyQ(qr, Trans.T, b);
            assertRatio(Dense.frobDiff(b.toColumnMajor(), got.get(0)[2]), Dense.frob(bd), size, "Q^T B against one process");
        }
    }

    // ------------------------------------------------------------------------------------------------

    /**
     * Each solve with A by columns (factored in place), on a 2x1 grid (redistributed first) and on a 1x2
     * grid, B on another distribution each time, and every strategy (RMA exposes the triangles the
     * substitutions read).
     */
    static Stream<Arguments> solveCases() {
        List<Arguments> out = new ArrayList<>();
        for (String method : List.of("lu", "spd", "qr")) {
            out.add(Arguments.of(method, P2P, CYCLIC_COLUMNS, GRID_2X1));
            out.add(Arguments.of(method, COLLECTIVE, GRID_2X1, GRID_1X2));
            out.add(Arguments.of(method, RMA, GRID_1X2, CYCLIC_ROWS));
        }
        return out.stream();
    }

    @ParameterizedTest(name = "{0} {1} A {2} B {3}")
    @MethodSource("solveCases")
    void shouldSolveInFloat32AcrossTwoRanksAsOneProcessDoes(String method, TileAlgebra.Strategy strategy,
                                                            Distribution da, Distribution db) {
        int n = 140; // 5 tiles of 32, the last 12
        int m = method.equals("qr") ? 190 : n; // least squares on a tall A: 6 tile rows, the last 30
        int nrhs = 20;
        long seed = seed("spmd f32 " + method);
        List<double[]> got = onEveryRank(strategy, (comm, la) -> {
            try (DistributedMatrix a = SpmdSolveTest.matrixFor(DType.F32, method, m, n, seed, da, comm.rank());
                 DistributedMatrix b = DistributedMatrix.random(DType.F32, m, nrhs, NB, seed + 1, db, comm.rank());
                 DistributedMatrix x = SpmdSolveTest.solveWith(la, method, a, b)) {
                assertEquals(DType.F32, x.type());
                assertEquals(db, x.distribution(), "X is distributed as B");
                return gathered(x, comm);
            }
        });
        try (TileAlgebra la = oneProcess();
             DistributedMatrix a = SpmdSolveTest.matrixFor(DType.F32, method, m, n, seed, Distribution.single(), 0);
             DistributedMatrix b = DistributedMatrix.random(DType.F32, m, nrhs, NB, seed + 1);
             DistributedMatrix x = SpmdSolveTest.solveWith(la, method, a, b)) {
            double[] ad = a.toColumnMajor();
            double[] bd = b.toColumnMajor();
            double[] gx = got.get(0);
            double[] x1 = x.toColumnMajor();
            // A X and A X_1proc both match B (or its projection) to rounding, whatever cond(A): so must A (X - X_1proc).
            double scale = Dense.frob(ad) * Dense.frob(x1) + Dense.frob(bd);
            assertRatio(Dense.frob(Dense.mul(ad, m, n, false, minus(gx, x1), n, nrhs, false)), scale, m,
                    method + ": ||A (X - X_1proc)||");
            double[] r = minus(Dense.mul(ad, m, n, false, gx, n, nrhs, false), bd);
            if (m == n) {
                assertRatio(Dense.frob(r), Dense.frob(ad) * Dense.frob(gx), n, method + ": ||A X - B|| / (||A|| ||X||)");
            } else {
                // Least squares: the normal equations A^T (A X - B) = 0 hold to rounding.
                assertRatio(Dense.frob(Dense.mul(ad, m, n, true, r, m, nrhs, false)), Dense.frob(ad) * scale, m,
                        "qr: ||A^T (A X - B)|| / (||A|| (||A|| ||X|| + ||B||))");
            }
        }
    }

    static Stream<Arguments> triangularCases() {
        return Stream.of(Arguments.of(P2P, GRID_2X1, GRID_1X2, Uplo.LOWER, Trans.N),
                Arguments.of(COLLECTIVE, GRID_1X2, CYCLIC_ROWS, Uplo.UPPER, Trans.T),
                Arguments.of(RMA, CYCLIC_COLUMNS, GRID_2X1, Uplo.LOWER, Trans.T));
    }

    @ParameterizedTest(name = "{0} A {1} B {2} {3} {4}")
    @MethodSource("triangularCases")
    void shouldSolveTriangularSystemsInFloat32AcrossTwoRanksAsOneProcessDoes(TileAlgebra.Strategy strategy,
                                                                            Distribution da, Distribution db,
                                                                            Uplo uplo, Trans trans) {
        int n = 150; // 5 tiles of 32, the last 22
        int nrhs = 45; // 2 tile columns, the last 13
        long seed = seed("spmd f32 trsm");
        List<double[]> got = onEveryRank(strategy, (comm, la) -> {
            try (DistributedMatrix a = DistributedMatrix.diagonallyDominant(DType.F32, n, NB, seed, da, comm.rank());
                 DistributedMatrix b = DistributedMatrix.random(DType.F32, n, nrhs, NB, seed + 1, db, comm.rank())) {
                la.triangularSolve(uplo, trans, Diag.NON_UNIT, 2.0, a, b);
                return gathered(b, comm);
            }
        });
        try (TileAlgebra la = oneProcess();
             DistributedMatrix a = DistributedMatrix.diagonallyDominant(DType.F32, n, NB, seed);
             DistributedMatrix b = DistributedMatrix.random(DType.F32, n, nrhs, NB, seed + 1)) {
            double[] ad = a.toColumnMajor();
            double[] t = uplo == Uplo.LOWER ? Dense.lower(ad, n, n, false) : Dense.upper(ad, n, n);
            double[] b2 = b.toColumnMajor();
            for (int i = 0; i < b2.length; i++) {
                b2[i] *= 2;
            }
            la.triangularSolve(uplo, trans, Diag.NON_UNIT, 2.0, a, b);
            double[] gx = got.get(0);
            double[] x1 = b.toColumnMajor();
            boolean tt = trans == Trans.T;
            assertRatio(Dense.frob(Dense.mul(t, n, n, tt, minus(gx, x1), n, nrhs, false)), Dense.frob(t) * Dense.frob(x1),
                    n, "||op(T) (X - X_1proc)||");
            assertRatio(Dense.frobDiff(Dense.mul(t, n, n, tt, gx, n, nrhs, false), b2), Dense.frob(t) * Dense.frob(gx), n,
                    "||op(T) X - 2 B|| / (||T|| ||X||)");
        }
    }
}
