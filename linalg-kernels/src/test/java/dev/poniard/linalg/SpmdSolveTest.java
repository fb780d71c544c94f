package dev.poniard.linalg;

import static dev.poniard.linalg.Dense.seed;
import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertInstanceOf;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
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
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.Arguments;
import org.junit.jupiter.params.provider.MethodSource;

/**
 * Triangular solves, {@code solve}, {@code solveSpd}, {@code leastSquares} and {@code applyQ} SPMD over
 * the ranks of a {@link LocalCluster} (one JVM, Aeron IPC, one worker per rank), checked on rank 0 against
 * the same operation in one process. Sizes are not multiples of the tile size, and A and B often have
 * different distributions (including ones whose tile columns span ranks, where the solves factor a copy
 * by columns).
 */
@Timeout(value = 120, unit = TimeUnit.SECONDS)
class SpmdSolveTest extends TwoRankFixture {
    private static final int NB = 32;



    static Stream<Arguments> triangularCases() {
        List<Arguments> out = new ArrayList<>();
        for (TileAlgebra.Strategy s : TileAlgebra.Strategy.values()) {
            out.add(Arguments.of(s, GRID_2X1, GRID_1X2, Uplo.LOWER, Trans.N));
            out.add(Arguments.of(s, GRID_1X2, CYCLIC_ROWS, Uplo.LOWER, Trans.T));
            out.add(Arguments.of(s, CYCLIC_COLUMNS, GRID_2X1, Uplo.UPPER, Trans.N));
            out.add(Arguments.of(s, CYCLIC_ROWS, CYCLIC_ROWS, Uplo.UPPER, Trans.T));
        }
        return out.stream();
    }

    static Stream<Arguments> solveCases() {
        List<Arguments> out = new ArrayList<>();
        for (TileAlgebra.Strategy s : TileAlgebra.Strategy.values()) {
            for (String method : List.of("lu", "spd", "qr")) {
                // A by columns (factored in place on its copy) and A on a 2x1 grid (redistributed first).
                out.add(Arguments.of(method, s, CYCLIC_COLUMNS, GRID_2X1));
                out.add(Arguments.of(method, s, GRID_2X1, GRID_1X2));
            }
        }
        return out.stream();
    }

    private static <T> List<T> onEveryRank(LocalCluster on, TileAlgebra.Strategy strategy,
                                           BiFunction<Communicator, TileAlgebra, T> body) {
        return on.run(comm -> {
            try (TileAlgebra la = TileAlgebra.launch(new TileAlgebra.Context().workers(1).communicator(comm).strategy(strategy))) {
                return body.apply(comm, la);
            }
        });
    }

    /** Max-norm difference relative to the reference's max norm: tile kernels in the same order agree to rounding. */
    private static void assertClose(double[] expected, double[] got, String what) {
        assertEquals(expected.length, got.length, what);
        double diff = 0;
        double scale = 0;
        for (int i = 0; i < expected.length; i++) {
            diff = Math.max(diff, Math.abs(expected[i] - got[i]));
            scale = Math.max(scale, Math.abs(expected[i]));
        }
        assertTrue(diff <= 1e-12 * scale, what + ": max |X - X_1proc| = " + diff + " for max |X_1proc| = " + scale);
    }

    @ParameterizedTest(name = "{0} A {1} B {2} {3} {4}")
    @MethodSource("triangularCases")
    void shouldSolveTriangularSystemsAcrossTwoRanksAsOneProcessDoes(TileAlgebra.Strategy strategy, Distribution da,
                                                                    Distribution db, Uplo uplo, Trans trans) {
        int n = 150; // 5 tiles of 32, the last 22
        int nrhs = 45; // 2 tile columns, the last 13
        long seed = seed("spmd trsm");
        List<double[]> got = onEveryRank(cluster, strategy, (comm, la) -> {
            try (DistributedMatrix a = DistributedMatrix.diagonallyDominant(DType.F64, n, NB, seed, da, comm.rank());
                 DistributedMatrix b = DistributedMatrix.random(DType.F64, n, nrhs, NB, seed + 1, db, comm.rank())) {
                la.triangularSolve(uplo, trans, Diag.NON_UNIT, 2.0, a, b);
                return gathered(b, comm);
            }
        });
        assertNull(got.get(1));
        try (TileAlgebra one = TileAlgebra.launch(new TileAlgebra.Context().workers(1));
             DistributedMatrix a = DistributedMatrix.diagonallyDominant(DType.F64, n, NB, seed);
             DistributedMatrix b = DistributedMatrix.random(DType.F64, n, nrhs, NB, seed + 1)) {
            one.triangularSolve(uplo, trans, Diag.NON_UNIT, 2.0, a, b);
            assertClose(b.toColumnMajor(), got.get(0), "trsm");
        }
    }

    /** A of {@code method}'s kind: random (lu, qr: pivoting happens) or SPD, n x n or, for qr, taller. */
    static DistributedMatrix matrixFor(DType type, String method, int m, int n, long seed, Distribution d, int rank) {
        return method.equals("spd") ? DistributedMatrix.spd(type, n, NB, seed, d, rank)
                : DistributedMatrix.random(type, m, n, NB, seed, d, rank);
    }

    static DistributedMatrix solveWith(TileAlgebra la, String method, DistributedMatrix a, DistributedMatrix b) {
        return switch (method) {
            case "lu" -> la.solve(a, b);
            case "spd" -> la.solveSpd(a, b);
            default -> la.leastSquares(a, b);
        };
    }

    @ParameterizedTest(name = "{0} {1} A {2} B {3}")
    @MethodSource("solveCases")
    void shouldSolveLinearSystemsAcrossTwoRanksAsOneProcessDoes(String method, TileAlgebra.Strategy strategy,
                                                                Distribution da, Distribution db) {
        int n = 140; // 5 tiles of 32, the last 12
        int m = method.equals("qr") ? 190 : n; // least squares on a tall A: 6 tile rows, the last 30
        int nrhs = 40;
        long seed = seed("spmd " + method);
        List<double[]> got = onEveryRank(cluster, strategy, (comm, la) -> {
            try (DistributedMatrix a = matrixFor(DType.F64, method, m, n, seed, da, comm.rank());
                 DistributedMatrix b = DistributedMatrix.random(DType.F64, m, nrhs, NB, seed + 1, db, comm.rank());
                 DistributedMatrix x = solveWith(la, method, a, b)) {
                assertEquals(db, x.distribution(), "X is distributed as B");
                // A and B are unchanged.
                try (DistributedMatrix a0 = matrixFor(DType.F64, method, m, n, seed, da, comm.rank())) {
                    for (int i = 0; i < a.mt(); i++) {
                        for (int j = 0; j < a.nt(); j++) {
                            if (a.isLocal(i, j)) {
                                assertEquals(a0.tile(i, j).f64Buffer(), a.tile(i, j).f64Buffer(), "A tile " + i + "," + j);
                            }
                        }
                    }
                }
                return gathered(x, comm);
            }
        });
        try (TileAlgebra one = TileAlgebra.launch(new TileAlgebra.Context().workers(1));
             DistributedMatrix a = matrixFor(DType.F64, method, m, n, seed, Distribution.single(), 0);
             DistributedMatrix b = DistributedMatrix.random(DType.F64, m, nrhs, NB, seed + 1);
             DistributedMatrix x = solveWith(one, method, a, b)) {
            assertClose(x.toColumnMajor(), got.get(0), method);
            if (m == n) {
                double[] ax = Dense.mul(a.toColumnMajor(), n, n, false, got.get(0), n, nrhs, false);
                double res = Dense.frobDiff(ax, b.toColumnMajor())
                        / (Dense.frob(a.toColumnMajor()) * Dense.frob(got.get(0)) * n * DType.F64.epsilon());
                assertTrue(res < 10, method + " scaled residual " + res);
            }
        }
    }

    @ParameterizedTest(name = "{0}")
    @org.junit.jupiter.params.provider.EnumSource(Trans.class)
    void shouldApplyQAcrossTwoRanksToAnyDistributionOfB(Trans trans) {
        int m = 170;
        int n = 100;
        long seed = seed("spmd applyQ");
        // B on a 2x1 grid: each kernel updates two tiles of one tile column that live on different ranks.
        List<double[]> got = onEveryRank(cluster, TileAlgebra.Strategy.POINT_TO_POINT, (comm, la) -> {
            try (DistributedMatrix a = DistributedMatrix.random(DType.F64, m, n, NB, seed, CYCLIC_COLUMNS, comm.rank());
                 QrFactorization qr = la.qr(a);
                 DistributedMatrix b = DistributedMatrix.random(DType.F64, m, 50, NB, seed + 1, GRID_2X1, comm.rank())) {
                la.applyQ(qr, trans, b);
                return gathered(b, comm);
            }
        });
        try (TileAlgebra one = TileAlgebra.launch(new TileAlgebra.Context().workers(1));
             DistributedMatrix a = DistributedMatrix.random(DType.F64, m, n, NB, seed);
             QrFactorization qr = one.qr(a);
             DistributedMatrix b = DistributedMatrix.random(DType.F64, m, 50, NB, seed + 1)) {
            one.applyQ(qr, trans, b);
            assertClose(b.toColumnMajor(), got.get(0), "applyQ " + trans);
        }
    }

    @Test
    void shouldSolveAndFitLeastSquaresAcrossThreeRanksAsOneProcessDoes() {
        int n = 100; // 4 tiles of 32, the last 4: uneven shares on 3 ranks
        int m = 130;
        long seed = seed("spmd 3 ranks");
        Distribution grid3x1 = Distribution.blockCyclic2d(3, 1, 1, 1, 1);
        Distribution grid1x3 = Distribution.blockCyclic2d(1, 3, 1, 1, 1);
        try (LocalCluster three = LocalCluster.launch(3)) {
            for (TileAlgebra.Strategy strategy : List.of(TileAlgebra.Strategy.POINT_TO_POINT, TileAlgebra.Strategy.COLLECTIVE)) {
                List<double[][]> got = onEveryRank(three, strategy, (comm, la) -> {
                    try (DistributedMatrix a = DistributedMatrix.random(DType.F64, n, n, NB, seed, grid3x1, comm.rank());
                         DistributedMatrix b = DistributedMatrix.random(DType.F64, n, 7, NB, seed + 1, grid1x3, comm.rank());
                         DistributedMatrix t = DistributedMatrix.random(DType.F64, m, n, NB, seed + 2, grid1x3, comm.rank());
                         DistributedMatrix c = DistributedMatrix.random(DType.F64, m, 7, NB, seed + 3, grid3x1, comm.rank());
                         DistributedMatrix x = la.solve(a, b);
                         DistributedMatrix y = la.leastSquares(t, c)) {
                        double[] gx = gathered(x, comm);
                        double[] gy = gathered(y, comm);
                        return gx == null ? null : new double[][] {gx, gy};
                    }
                });
                try (TileAlgebra one = TileAlgebra.launch(new TileAlgebra.Context().workers(1));
                     DistributedMatrix a = DistributedMatrix.random(DType.F64, n, n, NB, seed);
                     DistributedMatrix b = DistributedMatrix.random(DType.F64, n, 7, NB, seed + 1);
                     DistributedMatrix t = DistributedMatrix.random(DType.F64, m, n, NB, seed + 2);
                     DistributedMatrix c = DistributedMatrix.random(DType.F64, m, 7, NB, seed + 3);
                     DistributedMatrix x = one.solve(a, b);
                     DistributedMatrix y = one.leastSquares(t, c)) {
                    assertClose(x.toColumnMajor(), got.get(0)[0], strategy + " solve");
                    assertClose(y.toColumnMajor(), got.get(0)[1], strategy + " leastSquares");
                }
            }
        }
    }

    @Test
    void shouldFailEveryRankNamingTheColumnOfARankDeficientLeastSquaresProblem() {
        int m = 150;
        int n = 100;
        int zero = 70; // a zero column: R(70, 70) is exactly zero
        List<RuntimeException> failures = onEveryRank(cluster, TileAlgebra.Strategy.POINT_TO_POINT, (comm, la) -> {
            try (DistributedMatrix a = DistributedMatrix.random(DType.F64, m, n, NB, 5, GRID_2X1, comm.rank());
                 DistributedMatrix b = DistributedMatrix.random(DType.F64, m, 3, NB, 6, GRID_1X2, comm.rank())) {
                a.fill((r, c) -> c == zero ? 0.0 : DistributedMatrix.uniform(5, r, c));
                la.leastSquares(a, b).close();
                return null;
            } catch (RuntimeException e) {
                // The check is an all-reduce, not an abort: the communicator still works.
                assertNull(comm.failure(), "communicator failed");
                comm.barrier();
                return e;
            }
        });
        for (int r = 0; r < 2; r++) {
            SingularMatrixException e = assertInstanceOf(SingularMatrixException.class, failures.get(r), "rank " + r);
            assertEquals(zero, e.column(), e.getMessage());
        }
    }

    @Test
    void shouldRedistributeAcrossTwoRanksKeepingEveryEntry() {
        long seed = seed("spmd redistribute");
        List<double[]> got = onEveryRank(cluster, TileAlgebra.Strategy.COLLECTIVE, (comm, la) -> {
            try (DistributedMatrix a = DistributedMatrix.random(DType.F64, 100, 70, NB, seed, GRID_2X1, comm.rank());
                 DistributedMatrix c = la.redistribute(a, CYCLIC_COLUMNS)) {
                assertEquals(CYCLIC_COLUMNS, c.distribution());
                assertEquals(comm.rank() == 1, c.isLocal(0, 1));
                return gathered(c, comm);
            }
        });
        try (DistributedMatrix ref = DistributedMatrix.random(DType.F64, 100, 70, NB, seed)) {
            assertArrayEquals(ref.toColumnMajor(), got.get(0));
        }
    }

    @Test
    void shouldRejectMismatchedOperandsAcrossRanksWithTheirShapes() {
        List<String[]> messages = onEveryRank(cluster, TileAlgebra.Strategy.POINT_TO_POINT, (comm, la) -> {
            try (DistributedMatrix a = DistributedMatrix.random(DType.F64, 100, 100, NB, 1, GRID_1X2, comm.rank());
                 DistributedMatrix wrongRows = DistributedMatrix.random(DType.F64, 90, 3, NB, 2, GRID_1X2, comm.rank());
                 DistributedMatrix wrongTiles = DistributedMatrix.random(DType.F64, 100, 3, 16, 2, GRID_1X2, comm.rank());
                 DistributedMatrix b = DistributedMatrix.random(DType.F64, 100, 3, NB, 2, GRID_1X2, comm.rank());
                 DistributedMatrix threeRanks = DistributedMatrix.zeros(DType.F64, 100, 100, NB,
                         Distribution.blockCyclic2d(1, 3, 1, 1, 1), comm.rank())) {
                return new String[] {
                        assertThrows(IllegalArgumentException.class, () -> la.solve(a, wrongRows)).getMessage(),
                        assertThrows(IllegalArgumentException.class, () -> la.leastSquares(a, wrongTiles)).getMessage(),
                        assertThrows(IllegalArgumentException.class, () -> la.triangularSolve(Uplo.LOWER, Trans.N,
                                Diag.NON_UNIT, 1.0, threeRanks, b)).getMessage(),
                        assertThrows(IllegalArgumentException.class, () -> la.redistribute(a,
                                Distribution.cyclic1d(Distribution.Axis.COLUMNS, 3, 1))).getMessage()};
            }
        });
        String[] m = messages.get(0);
        assertTrue(m[0].contains("B has 90 rows but A is 100x100"), m[0]);
        assertTrue(m[1].contains("tile size") && m[1].contains("16x16 tiles"), m[1]);
        assertTrue(m[2].contains("of 3 ranks") && m[2].contains("communicator of 2"), m[2]);
        assertTrue(m[3].contains("same ranks"), m[3]);
    }
}
