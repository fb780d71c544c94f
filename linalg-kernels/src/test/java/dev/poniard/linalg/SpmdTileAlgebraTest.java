package dev.poniard.linalg;

import static dev.poniard.linalg.Dense.seed;
import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertInstanceOf;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertSame;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.poniard.linalg.dist.Distribution;
import dev.poniard.linalg.tile.TileKernels.Trans;
import dev.poniard.scheduler.comm.Communicator;
import dev.poniard.scheduler.comm.LocalCluster;
import java.util.List;
import java.util.concurrent.TimeUnit;
import java.util.function.Function;
import java.util.stream.Stream;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.Arguments;
import org.junit.jupiter.params.provider.MethodSource;
import org.nd4j.linalg.api.ndarray.INDArray;

/**
 * GEMM and Cholesky SPMD over two ranks of a {@link LocalCluster} (one JVM, Aeron IPC, one worker per rank),
 * on 2D block-cyclic 1x2 / 2x1 grids and 1D distributions, checked on rank 0 against ND4J / dense references.
 */
@Timeout(value = 120, unit = TimeUnit.SECONDS)
class SpmdTileAlgebraTest extends TwoRankFixture {


    /**
     * Two-rank distributions: 2D block-cyclic 1x2 and 2x1, 1D cyclic by columns, 1D block by rows, 1D block-cyclic by
     * columns, and 2x1 with reflected rows (5 tile rows, as the tests' matrices have).
     */
    static Stream<Distribution> distributions() {
        return Stream.of(Distribution.blockCyclic2d(1, 2, 1, 1, 1), Distribution.blockCyclic2d(2, 1, 1, 1, 1),
                Distribution.cyclic1d(Distribution.Axis.COLUMNS, 2, 1), Distribution.block1d(Distribution.Axis.ROWS, 5, 2, 1),
                Distribution.blockCyclic1d(Distribution.Axis.COLUMNS, 2, 2, 1), Distribution.reflectedCyclic2d(2, 1, 5, 1));
    }

    static Stream<Arguments> gemmCases() {
        return distributions().flatMap(d -> Stream.of(
                Arguments.of(d, TileAlgebra.Strategy.POINT_TO_POINT, Trans.N, Trans.N),
                Arguments.of(d, TileAlgebra.Strategy.COLLECTIVE, Trans.N, Trans.N),
                Arguments.of(d, TileAlgebra.Strategy.POINT_TO_POINT, Trans.T, Trans.N),
                Arguments.of(d, TileAlgebra.Strategy.COLLECTIVE, Trans.N, Trans.T),
                Arguments.of(d, TileAlgebra.Strategy.RMA, Trans.N, Trans.N),
                Arguments.of(d, TileAlgebra.Strategy.RMA, Trans.T, Trans.T)));
    }

    static Stream<Arguments> choleskyCases() {
        // RMA only changes GEMM (factorizations write what they exchange): one case checks the fallback.
        return Stream.concat(distributions().flatMap(d -> Stream.of(Arguments.of(d, TileAlgebra.Strategy.POINT_TO_POINT),
                Arguments.of(d, TileAlgebra.Strategy.COLLECTIVE))),
                Stream.of(Arguments.of(Distribution.blockCyclic2d(1, 2, 1, 1, 1), TileAlgebra.Strategy.RMA)));
    }

    private static <T> List<T> onEveryRank(TileAlgebra.Strategy strategy, java.util.function.BiFunction<Communicator, TileAlgebra, T> body) {
        return cluster.run(comm -> {
            try (TileAlgebra la = TileAlgebra.launch(new TileAlgebra.Context().workers(1).communicator(comm).strategy(strategy))) {
                return body.apply(comm, la);
            }
        });
    }

    @ParameterizedTest(name = "{0} {1} ta={2} tb={3}")
    @MethodSource("gemmCases")
    void shouldMultiplyAcrossTwoRanks(Distribution d, TileAlgebra.Strategy strategy, Trans ta, Trans tb) {
        int m = 300;
        int n = 250;
        int k = 190;
        int nb = 64; // 5 x 4 x 3 tiles, the last of each smaller
        long seed = seed("spmd gemm");
        List<INDArray> got = onEveryRank(strategy, (comm, la) -> {
            int r = comm.rank();
            try (DistributedMatrix a = ta == Trans.N ? DistributedMatrix.random(DType.F64, m, k, nb, seed, d, r)
                    : DistributedMatrix.random(DType.F64, k, m, nb, seed, d, r);
                 DistributedMatrix b = tb == Trans.N ? DistributedMatrix.random(DType.F64, k, n, nb, seed + 1, d, r)
                         : DistributedMatrix.random(DType.F64, n, k, nb, seed + 1, d, r);
                 DistributedMatrix c = DistributedMatrix.random(DType.F64, m, n, nb, seed + 2, d, r)) {
                la.gemm(ta, tb, 1.5, a, b, -0.5, c);
                try (DistributedMatrix whole = c.gather(comm, 0)) {
                    return whole == null ? null : whole.toINDArray();
                }
            }
        });
        assertNull(got.get(1));
        INDArray ea = (ta == Trans.N ? DistributedMatrix.random(DType.F64, m, k, nb, seed)
                : DistributedMatrix.random(DType.F64, k, m, nb, seed)).toINDArray();
        INDArray eb = (tb == Trans.N ? DistributedMatrix.random(DType.F64, k, n, nb, seed + 1)
                : DistributedMatrix.random(DType.F64, n, k, nb, seed + 1)).toINDArray();
        INDArray ec = DistributedMatrix.random(DType.F64, m, n, nb, seed + 2).toINDArray();
        INDArray expected = (ta == Trans.N ? ea : ea.transpose()).mmul(tb == Trans.N ? eb : eb.transpose()).muli(1.5)
                .addi(ec.muli(-0.5));
        double err = got.get(0).sub(expected).norm2Number().doubleValue();
        double scale = ea.norm2Number().doubleValue() * eb.norm2Number().doubleValue() * k * DType.F64.epsilon();
        assertTrue(err / scale < 10, "gemm error " + err + " scaled " + err / scale);
    }

    @ParameterizedTest(name = "{0} {1}")
    @MethodSource("choleskyCases")
    void shouldFactorCholeskyAcrossTwoRanks(Distribution d, TileAlgebra.Strategy strategy) {
        int n = 300; // 5 tiles of 64, the last 44 wide
        int nb = 64;
        long seed = seed("spmd cholesky");
        List<double[]> got = onEveryRank(strategy, (comm, la) -> {
            try (DistributedMatrix a = DistributedMatrix.spd(DType.F64, n, nb, seed, d, comm.rank())) {
                la.cholesky(a);
                try (DistributedMatrix whole = a.gather(comm, 0)) {
                    return whole == null ? null : whole.toColumnMajor();
                }
            }
        });
        double[] ad = DistributedMatrix.spd(DType.F64, n, nb, seed).toColumnMajor();
        double[] l = Dense.lower(got.get(0), n, n, false);
        double[] llt = Dense.mul(l, n, n, false, l, n, n, true);
        double res = Dense.frobDiff(ad, llt) / (Dense.frob(ad) * n * DType.F64.epsilon());
        assertTrue(res < 10, "scaled residual ||A - LL^T||/(||A|| n eps) = " + res);
    }

    @ParameterizedTest(name = "{0}")
    @org.junit.jupiter.params.provider.EnumSource(TileAlgebra.Strategy.class)
    void shouldSendEachTileVersionOnceWithTheChosenStrategy(TileAlgebra.Strategy strategy) {
        // 1x2 grid: C(i, j) and B(l, j) on rank j % 2, A(i, l) on rank l % 2 and read by both ranks. A is
        // 5 x 3 tiles: rank 0 owns tile columns 0 and 2 (10 tiles), rank 1 column 1 (5 tiles); each goes
        // to the other rank exactly once, however many C tiles read it.
        Distribution d = Distribution.blockCyclic2d(1, 2, 1, 1, 1);
        List<long[]> counts = cluster.run(comm -> {
            try (TileAlgebra la = TileAlgebra.launch(new TileAlgebra.Context().workers(1).communicator(comm)
                    .strategy(strategy).trace(true));
                 DistributedMatrix a = DistributedMatrix.random(DType.F64, 300, 190, 64, 1, d, comm.rank());
                 DistributedMatrix b = DistributedMatrix.random(DType.F64, 190, 250, 64, 2, d, comm.rank());
                 DistributedMatrix c = DistributedMatrix.zeros(DType.F64, 300, 250, 64, d, comm.rank())) {
                la.gemm(1.0, a, b, 0.0, c);
                long[] n = new long[5];
                for (var t : la.scheduler().trace().records()) {
                    String name = t.name();
                    n[name.startsWith("send") ? 0 : name.startsWith("recv") ? 1 : name.startsWith("bcast") ? 2
                            : name.startsWith("gemm") ? 3 : name.startsWith("rget") ? 4 : -1]++;
                }
                return n;
            }
        });
        boolean p2p = strategy == TileAlgebra.Strategy.POINT_TO_POINT;
        boolean bcast = strategy == TileAlgebra.Strategy.COLLECTIVE;
        boolean rma = strategy == TileAlgebra.Strategy.RMA;
        // 5 x 4 C tiles x 3 steps: rank 0 owns C columns 0 and 2 (30 updates), rank 1 columns 1 and 3 (30).
        assertEquals(30, counts.get(0)[3]);
        assertEquals(30, counts.get(1)[3]);
        assertEquals(p2p ? 10 : 0, counts.get(0)[0], "rank 0 sends");
        assertEquals(p2p ? 5 : 0, counts.get(0)[1], "rank 0 receives");
        assertEquals(p2p ? 5 : 0, counts.get(1)[0], "rank 1 sends");
        assertEquals(p2p ? 10 : 0, counts.get(1)[1], "rank 1 receives");
        assertEquals(bcast ? 15 : 0, counts.get(0)[2], "rank 0 broadcasts");
        assertEquals(bcast ? 15 : 0, counts.get(1)[2], "rank 1 broadcasts");
        assertEquals(rma ? 5 : 0, counts.get(0)[4], "rank 0 gets");
        assertEquals(rma ? 10 : 0, counts.get(1)[4], "rank 1 gets");
    }

    /** Distributions that keep each tile column on one rank, as distributed LU needs. */
    static Stream<Arguments> luCases() {
        return Stream.of(Arguments.of(Distribution.blockCyclic2d(1, 2, 1, 1, 1), 300, 300),
                Arguments.of(Distribution.cyclic1d(Distribution.Axis.COLUMNS, 2, 1), 330, 250),
                Arguments.of(Distribution.blockCyclic1d(Distribution.Axis.COLUMNS, 2, 2, 1), 200, 290));
    }

    @ParameterizedTest(name = "{0} {1}x{2}")
    @MethodSource("luCases")
    void shouldFactorLuWithPartialPivotingAcrossTwoRanks(Distribution d, int m, int n) {
        int nb = 64;
        long seed = seed("spmd lu");
        List<Object[]> got = onEveryRank(TileAlgebra.Strategy.POINT_TO_POINT, (comm, la) -> {
            try (DistributedMatrix a = DistributedMatrix.random(DType.F64, m, n, nb, seed, d, comm.rank())) {
                LuFactorization lu = la.lu(a);
                try (DistributedMatrix whole = a.gather(comm, 0)) {
                    return new Object[] {whole == null ? null : whole.toColumnMajor(), lu.pivots()};
                }
            }
        });
        // Every rank ends with the same pivots, and they are LAPACK's for the same matrix in one process.
        assertArrayEquals((int[]) got.get(0)[1], (int[]) got.get(1)[1]);
        try (TileAlgebra one = TileAlgebra.launch(new TileAlgebra.Context().workers(1));
             DistributedMatrix ref = DistributedMatrix.random(DType.F64, m, n, nb, seed)) {
            double[] ad = ref.toColumnMajor();
            LuFactorization single = one.lu(ref);
            assertArrayEquals(single.pivots(), (int[]) got.get(0)[1]);
            double[] fd = (double[]) got.get(0)[0];
            double res = Dense.luResidual(ad, fd, m, n, single.permutation())
                    / (Dense.frob(ad) * Math.max(m, n) * DType.F64.epsilon());
            assertTrue(res < 10, "scaled residual ||PA - LU||/(||A|| n eps) = " + res);
        }
    }

    @ParameterizedTest(name = "{0} {1}x{2}")
    @MethodSource("luCases")
    void shouldFactorQrAcrossTwoRanksExactlyAsOneProcessDoes(Distribution d, int m, int n) {
        int nb = 64;
        long seed = seed("spmd qr");
        List<double[]> got = cluster.run(comm -> {
            try (TileAlgebra la = TileAlgebra.launch(new TileAlgebra.Context().workers(1).communicator(comm).innerBlock(16));
                 DistributedMatrix a = DistributedMatrix.random(DType.F64, m, n, nb, seed, d, comm.rank());
                 QrFactorization qr = la.qr(a);
                 DistributedMatrix whole = a.gather(comm, 0)) {
                // T and V of a tile column are held by its owner only.
                assertEquals(d.owner(0, 0).rank() == comm.rank(), qr.v(0) != null);
                return whole == null ? null : whole.toColumnMajor();
            }
        });
        // Every tile sees the same kernels in the same order as in one process: the same bits.
        try (TileAlgebra one = TileAlgebra.launch(new TileAlgebra.Context().workers(1).innerBlock(16));
             DistributedMatrix ref = DistributedMatrix.random(DType.F64, m, n, nb, seed);
             QrFactorization qr = one.qr(ref)) {
            assertArrayEquals(ref.toColumnMajor(), got.get(0));
        }
    }

    private static final Distribution BLOCK_CYCLIC_ROWS = Distribution.blockCyclic1d(Distribution.Axis.ROWS, 2, 2, 1);

    /**
     * Distributions whose tile columns span both ranks (LU and QR factor a copy by columns and copy it
     * back) and a 1x2 grid (in place), square, tall and wide, 32-tiles with a partial last one.
     */
    static Stream<Arguments> everyDistributionCases() {
        return Stream.of(Arguments.of(GRID_2X1, TileAlgebra.Strategy.POINT_TO_POINT, 150, 150),
                Arguments.of(GRID_2X1, TileAlgebra.Strategy.COLLECTIVE, 170, 100),
                Arguments.of(CYCLIC_ROWS, TileAlgebra.Strategy.COLLECTIVE, 150, 150),
                Arguments.of(CYCLIC_ROWS, TileAlgebra.Strategy.POINT_TO_POINT, 100, 170),
                Arguments.of(BLOCK_CYCLIC_ROWS, TileAlgebra.Strategy.RMA, 170, 100),
                Arguments.of(GRID_1X2, TileAlgebra.Strategy.COLLECTIVE, 150, 150));
    }

    /** Max-norm difference relative to the reference's max norm. */
    private static void assertClose(double[] expected, double[] got, double tol, String what) {
        assertEquals(expected.length, got.length, what);
        double diff = 0;
        double scale = 0;
        for (int i = 0; i < expected.length; i++) {
            diff = Math.max(diff, Math.abs(expected[i] - got[i]));
            scale = Math.max(scale, Math.abs(expected[i]));
        }
        assertTrue(diff <= tol * scale, what + ": max |got - expected| = " + diff + " for max |expected| = " + scale);
    }

    @ParameterizedTest(name = "{0} {1} {2}x{3}")
    @MethodSource("everyDistributionCases")
    void shouldFactorLuInPlaceOnEveryDistributionAsOneProcessAndLapackDo(Distribution d, TileAlgebra.Strategy strategy,
                                                                         int m, int n) {
        int nb = 32;
        int nrhs = 7;
        long seed = seed("spmd lu in place");
        List<Object[]> got = onEveryRank(strategy, (comm, la) -> {
            try (DistributedMatrix a = DistributedMatrix.random(DType.F64, m, n, nb, seed, d, comm.rank());
                 DistributedMatrix b = m == n ? DistributedMatrix.random(DType.F64, n, nrhs, nb, seed + 1, d, comm.rank()) : null) {
                LuFactorization lu = la.lu(a);
                assertSame(a, lu.factors());
                double[] x = null;
                if (b != null) {
                    try (DistributedMatrix xs = la.luSolve(lu, b); DistributedMatrix gx = xs.gather(comm, 0)) {
                        x = gx == null ? null : gx.toColumnMajor();
                    }
                }
                try (DistributedMatrix whole = a.gather(comm, 0)) {
                    return new Object[] {whole == null ? null : whole.toColumnMajor(), lu.pivots(), x};
                }
            }
        });
        assertArrayEquals((int[]) got.get(0)[1], (int[]) got.get(1)[1], "every rank has every pivot");
        double[] fd = (double[]) got.get(0)[0];
        try (TileAlgebra one = TileAlgebra.launch(new TileAlgebra.Context().workers(1));
             DistributedMatrix ref = DistributedMatrix.random(DType.F64, m, n, nb, seed);
             DistributedMatrix lapack = DistributedMatrix.random(DType.F64, m, n, Math.max(m, n), seed)) {
            double[] ad = ref.toColumnMajor();
            LuFactorization single = one.lu(ref);
            assertArrayEquals(single.pivots(), (int[]) got.get(0)[1]);
            assertClose(ref.toColumnMajor(), fd, 1e-12, "L\\U against one process");
            // One tile: the whole factorization is a single OpenBLAS getrf, the reference.
            LuFactorization whole = one.lu(lapack);
            assertArrayEquals(whole.pivots(), (int[]) got.get(0)[1], "pivots against OpenBLAS getrf");
            assertClose(lapack.toColumnMajor(), fd, 1e-10, "L\\U against OpenBLAS getrf");
            double res = Dense.luResidual(ad, fd, m, n, single.permutation())
                    / (Dense.frob(ad) * Math.max(m, n) * DType.F64.epsilon());
            assertTrue(res < 10, "scaled residual ||PA - LU||/(||A|| n eps) = " + res);
            if (m == n) {
                try (DistributedMatrix b = DistributedMatrix.random(DType.F64, n, nrhs, nb, seed + 1);
                     DistributedMatrix x = one.luSolve(single, b)) {
                    double[] gx = (double[]) got.get(0)[2];
                    assertClose(x.toColumnMajor(), gx, 1e-12, "luSolve against one process");
                    double[] ax = Dense.mul(ad, n, n, false, gx, n, nrhs, false);
                    double sr = Dense.frobDiff(ax, b.toColumnMajor()) / (Dense.frob(ad) * Dense.frob(gx) * n * DType.F64.epsilon());
                    assertTrue(sr < 10, "luSolve scaled residual " + sr);
                }
            }
        }
    }

    @ParameterizedTest(name = "{0} {1} {2}x{3}")
    @MethodSource("everyDistributionCases")
    void shouldFactorQrInPlaceOnEveryDistributionExactlyAsOneProcessAndApplyQ(Distribution d,
                                                                             TileAlgebra.Strategy strategy, int m, int n) {
        int nb = 32;
        long seed = seed("spmd qr in place");
        List<Object[]> got = cluster.run(comm -> {
            try (TileAlgebra la = TileAlgebra.launch(new TileAlgebra.Context().workers(1).communicator(comm)
                    .strategy(strategy).innerBlock(16));
                 DistributedMatrix a = DistributedMatrix.random(DType.F64, m, n, nb, seed, d, comm.rank());
                 QrFactorization qr = la.qr(a);
                 DistributedMatrix r = DistributedMatrix.zeros(DType.F64, m, n, nb, d, comm.rank());
                 DistributedMatrix b = DistributedMatrix.random(DType.F64, m, 5, nb, seed + 1, d, comm.rank())) {
                assertSame(a, qr.factors());
                // Q [R; 0] = A: applyQ reads reflectors from a (on d) and T / V from the copy's layout. R and a
                // share d, so each rank fills its tiles of R from its own tiles of a.
                r.fill((i, j) -> i <= j ? a.tile(i / nb, j / nb).get(i % nb, j % nb) : 0.0);
                la.applyQ(qr, Trans.N, r);
                la.applyQ(qr, Trans.T, b);
                try (DistributedMatrix whole = a.gather(comm, 0); DistributedMatrix qrr = r.gather(comm, 0);
                     DistributedMatrix qtb = b.gather(comm, 0)) {
                    return new Object[] {qr.v(0) != null, whole == null ? null : whole.toColumnMajor(),
                            qrr == null ? null : qrr.toColumnMajor(), qtb == null ? null : qtb.toColumnMajor()};
                }
            }
        });
        assertTrue((Boolean) got.get(0)[0] ^ (Boolean) got.get(1)[0], "one rank holds the reflectors of panel 0");
        try (TileAlgebra one = TileAlgebra.launch(new TileAlgebra.Context().workers(1).innerBlock(16));
             DistributedMatrix ref = DistributedMatrix.random(DType.F64, m, n, nb, seed);
             QrFactorization qr = one.qr(ref);
             DistributedMatrix b = DistributedMatrix.random(DType.F64, m, 5, nb, seed + 1)) {
            // Every tile sees the same kernels in the same order as in one process: the same bits.
            assertArrayEquals(ref.toColumnMajor(), (double[]) got.get(0)[1]);
            one.applyQ(qr, Trans.T, b);
            assertClose(b.toColumnMajor(), (double[]) got.get(0)[3], 1e-12, "Q^T B against one process");
            double[] ad = DistributedMatrix.random(DType.F64, m, n, nb, seed).toColumnMajor();
            double res = Dense.frobDiff(ad, (double[]) got.get(0)[2]) / (Dense.frob(ad) * Math.max(m, n) * DType.F64.epsilon());
            assertTrue(res < 10, "scaled residual ||A - Q [R; 0]||/(||A|| n eps) = " + res);
        }
    }

    /**
     * Three-rank grids: 1x3 keeps each tile column on one rank (tile columns 0..4 on ranks 0, 1, 2, 0, 1), so
     * lu and qr factor in place; 3x1 splits every tile column over the ranks, so they factor a copy cyclic by
     * columns and copy it back.
     */
    static Stream<Distribution> threeRankGrids() {
        return Stream.of(Distribution.blockCyclic2d(1, 3, 1, 1, 1), Distribution.blockCyclic2d(3, 1, 1, 1, 1));
    }

    @ParameterizedTest(name = "{0}")
    @MethodSource("threeRankGrids")
    void shouldFactorLuAndQrAcrossThreeRanksAsOneProcessDoes(Distribution d) {
        int nb = 32;
        int m = 170; // 6 tile rows, the last 10: uneven shares of tile rows on 3 ranks
        int n = 150; // LU of a tall 170x150: 5 tile columns, the last 22
        int qn = 110; // QR of a tall 170x110: 4 tile columns, the last 14
        long seed = seed("spmd lu qr 3 ranks");
        try (LocalCluster three = LocalCluster.launch(3)) { // closed even when a rank or an assertion fails
            for (TileAlgebra.Strategy strategy : List.of(TileAlgebra.Strategy.POINT_TO_POINT, TileAlgebra.Strategy.COLLECTIVE)) {
                List<Object[]> got = three.run(comm -> {
                    try (TileAlgebra la = TileAlgebra.launch(new TileAlgebra.Context().workers(1).communicator(comm)
                            .strategy(strategy).innerBlock(16));
                         DistributedMatrix a = DistributedMatrix.random(DType.F64, m, n, nb, seed, d, comm.rank());
                         DistributedMatrix t = DistributedMatrix.random(DType.F64, m, qn, nb, seed + 1, d, comm.rank());
                         QrFactorization qr = la.qr(t);
                         DistributedMatrix r = DistributedMatrix.zeros(DType.F64, m, qn, nb, d, comm.rank())) {
                        LuFactorization lu = la.lu(a);
                        assertSame(a, lu.factors());
                        assertSame(t, qr.factors());
                        // Q [R; 0] = A, with T and V wherever the factorization left them (on the copy's layout for 3x1).
                        r.fill((i, j) -> i <= j ? t.tile(i / nb, j / nb).get(i % nb, j % nb) : 0.0);
                        la.applyQ(qr, Trans.N, r);
                        return new Object[] {lu.pivots(), gathered(a, comm), gathered(t, comm), gathered(r, comm)};
                    }
                });
                for (int rank = 1; rank < 3; rank++) {
                    assertArrayEquals((int[]) got.get(0)[0], (int[]) got.get(rank)[0], strategy + ": rank " + rank + "'s pivots");
                }
                try (TileAlgebra one = TileAlgebra.launch(new TileAlgebra.Context().workers(1).innerBlock(16));
                     DistributedMatrix a = DistributedMatrix.random(DType.F64, m, n, nb, seed);
                     DistributedMatrix t = DistributedMatrix.random(DType.F64, m, qn, nb, seed + 1);
                     QrFactorization qr = one.qr(t)) {
                    double[] ad = a.toColumnMajor();
                    LuFactorization single = one.lu(a);
                    assertArrayEquals(single.pivots(), (int[]) got.get(0)[0], strategy + ": pivots against one process");
                    double[] fd = (double[]) got.get(0)[1];
                    assertClose(a.toColumnMajor(), fd, 1e-12, strategy + ": L\\U against one process");
                    double res = Dense.luResidual(ad, fd, m, n, single.permutation()) / (Dense.frob(ad) * m * DType.F64.epsilon());
                    assertTrue(res < 10, strategy + ": scaled residual ||PA - LU||/(||A|| m eps) = " + res);
                    // Every tile sees the same kernels in the same order as in one process: R and the reflectors
                    // are the same bits (so R has the same signs too).
                    assertArrayEquals(t.toColumnMajor(), (double[]) got.get(0)[2], strategy + ": QR factors against one process");
                    double[] td = DistributedMatrix.random(DType.F64, m, qn, nb, seed + 1).toColumnMajor();
                    double qres = Dense.frobDiff(td, (double[]) got.get(0)[3]) / (Dense.frob(td) * m * DType.F64.epsilon());
                    assertTrue(qres < 10, strategy + ": scaled residual ||A - Q [R; 0]||/(||A|| m eps) = " + qres);
                }
            }
        }
    }

    @Test
    void shouldRefuseLuAndQrOfAMatrixSpreadOverOtherRanksNamingTheOperation() {
        // Three ranks' 3x1 grid on a communicator of two: the check comes before any copy by columns.
        Distribution d = Distribution.blockCyclic2d(3, 1, 1, 1, 1);
        List<String[]> messages = onEveryRank(TileAlgebra.Strategy.POINT_TO_POINT, (comm, la) -> {
            try (DistributedMatrix a = DistributedMatrix.random(DType.F64, 100, 100, 32, 1, d, comm.rank())) {
                return new String[] {assertThrows(IllegalArgumentException.class, () -> la.lu(a)).getMessage(),
                        assertThrows(IllegalArgumentException.class, () -> la.qr(a)).getMessage()};
            }
        });
        for (String[] m : messages) {
            assertTrue(m[0].startsWith("lu: ") && m[0].contains("of 3 ranks") && m[0].contains("communicator of 2"), m[0]);
            assertTrue(m[1].startsWith("qr: ") && m[1].contains("of 3 ranks"), m[1]);
        }
    }

    @Test
    void shouldFailEveryRankNamingTheColumnOfASingularMatrix() {
        Distribution d = Distribution.cyclic1d(Distribution.Axis.COLUMNS, 2, 1);
        int n = 200;
        int bad = 150; // column 150 is a copy of column 10 (4 e_10): exactly singular there
        try (LocalCluster own = LocalCluster.launch(2)) {
            List<RuntimeException> failures = own.run(comm -> {
                try (TileAlgebra la = TileAlgebra.launch(new TileAlgebra.Context().workers(1).communicator(comm));
                     DistributedMatrix a = DistributedMatrix.zeros(DType.F64, n, n, 64, d, comm.rank())) {
                    a.fill((r, c) -> r == c && c != bad ? 4.0 : (c == bad ? (r == 10 ? 4.0 : 0.0) : 0.0));
                    la.lu(a);
                    return null;
                } catch (RuntimeException e) {
                    return e;
                }
            });
            for (int r = 0; r < 2; r++) {
                SingularMatrixException e = assertInstanceOf(SingularMatrixException.class, failures.get(r),
                        "rank " + r + ": " + failures.get(r));
                assertEquals(bad, e.column(), e.getMessage());
            }
        }
    }

    @ParameterizedTest(name = "{0}")
    @org.junit.jupiter.params.provider.EnumSource(TileAlgebra.Strategy.class)
    @org.junit.jupiter.api.Tag("slow")
    void shouldMultiplyAndFactorLargerMatricesOnBothGrids(TileAlgebra.Strategy strategy) {
        // 12 x 12 tiles: many more transfers in flight than the collective window and the small cases.
        int n = 1100;
        int nb = 96;
        long seed = seed("spmd larger");
        for (Distribution d : List.of(Distribution.blockCyclic2d(1, 2, 1, 1, 1), Distribution.blockCyclic2d(2, 1, 1, 1, 1))) {
            List<double[][]> got = onEveryRank(strategy, (comm, la) -> {
                try (DistributedMatrix a = DistributedMatrix.random(DType.F64, n, n, nb, seed, d, comm.rank());
                     DistributedMatrix c = DistributedMatrix.zeros(DType.F64, n, n, nb, d, comm.rank());
                     DistributedMatrix s = DistributedMatrix.spd(DType.F64, n, nb, seed, d, comm.rank())) {
                    la.gemm(Trans.N, Trans.T, 1.0, a, a, 0.0, c);
                    la.cholesky(s);
                    try (DistributedMatrix gc = c.gather(comm, 0); DistributedMatrix gs = s.gather(comm, 0)) {
                        return gc == null ? null : new double[][] {gc.toColumnMajor(), gs.toColumnMajor()};
                    }
                }
            });
            INDArray ea = DistributedMatrix.random(DType.F64, n, n, nb, seed).toINDArray();
            INDArray expected = ea.mmul(ea.transpose());
            INDArray c = org.nd4j.linalg.factory.Nd4j.create(got.get(0)[0], new long[] {n, n}, 'f');
            double err = c.sub(expected).norm2Number().doubleValue();
            double scale = Math.pow(ea.norm2Number().doubleValue(), 2) * n * DType.F64.epsilon();
            assertTrue(err / scale < 10, d + " gemm scaled error " + err / scale);
            INDArray l = org.nd4j.linalg.factory.Nd4j.create(Dense.lower(got.get(0)[1], n, n, false), new long[] {n, n}, 'f');
            INDArray as = DistributedMatrix.spd(DType.F64, n, nb, seed).toINDArray();
            double res = as.sub(l.mmul(l.transpose())).norm2Number().doubleValue()
                    / (as.norm2Number().doubleValue() * n * DType.F64.epsilon());
            assertTrue(res < 10, d + " cholesky scaled residual " + res);
        }
    }

    @Test
    void shouldGenerateTheSameEntriesOnAnyDistribution() {
        Distribution d = Distribution.blockCyclic2d(2, 1, 1, 1, 1);
        long seed = seed("spmd generators");
        List<double[]> got = cluster.run(comm -> {
            try (DistributedMatrix a = DistributedMatrix.spd(DType.F64, 130, 32, seed, d, comm.rank());
                 DistributedMatrix whole = a.gather(comm, 0)) {
                if (comm.rank() == 1) {
                    assertTrue(a.isLocal(1, 0));
                    assertTrue(!a.isLocal(0, 0));
                    IllegalStateException e = assertThrows(IllegalStateException.class, () -> a.tile(0, 0));
                    assertTrue(e.getMessage().contains("lives on rank 0"), e.getMessage());
                    assertThrows(IllegalStateException.class, a::normFrobenius);
                }
                return whole == null ? null : whole.toColumnMajor();
            }
        });
        try (DistributedMatrix ref = DistributedMatrix.spd(DType.F64, 130, 32, seed)) {
            assertEquals(ref.toINDArray(), DistributedMatrix.fromINDArray(org.nd4j.linalg.factory.Nd4j.create(got.get(0),
                    new long[] {130, 130}, 'f'), 32).toINDArray());
        }
    }

    @Test
    void shouldRefuseDistributedOperandsWithoutAMatchingCommunicator() {
        Distribution d = Distribution.blockCyclic2d(1, 2, 1, 1, 1);
        try (TileAlgebra la = TileAlgebra.launch(new TileAlgebra.Context().workers(1));
             DistributedMatrix a = DistributedMatrix.spd(DType.F64, 100, 32, 1, d, 0)) {
            IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> la.cholesky(a));
            assertTrue(e.getMessage().contains("communicator"), e.getMessage());
            IllegalArgumentException t = assertThrows(IllegalArgumentException.class,
                    () -> la.triangularSolve(dev.poniard.linalg.tile.TileKernels.Uplo.LOWER, Trans.N,
                            dev.poniard.linalg.tile.TileKernels.Diag.NON_UNIT, 1.0, a, a));
            assertTrue(t.getMessage().contains("triangularSolve") && t.getMessage().contains("communicator"), t.getMessage());
        }
    }

    /** A symmetric matrix whose leading minor of order {@code bad + 1} is not positive. */
    private static DistributedMatrix notPositiveDefinite(int n, int nb, int bad, Distribution d, int rank) {
        DistributedMatrix a = DistributedMatrix.spd(DType.F64, n, nb, 7, d, rank);
        a.fill((r, c) -> r == c ? (r == bad ? -1.0 : n) : DistributedMatrix.uniform(7, Math.min(r, c), Math.max(r, c)));
        return a;
    }

    @ParameterizedTest(name = "{0}")
    @MethodSource("choleskyCases")
    void shouldFailEveryRankNamingTheColumnWhenNotPositiveDefinite(Distribution d, TileAlgebra.Strategy strategy) {
        int n = 300;
        int nb = 64;
        int bad = 200; // diagonal tile 3; on the 1x2 grid rank 1 owns it, on 2x1 rank 1, cyclic columns rank 1
        try (LocalCluster own = LocalCluster.launch(2)) { // an abort ends a communicator: a cluster of its own
            Function<Communicator, RuntimeException> body = comm -> {
                try (TileAlgebra la = TileAlgebra.launch(new TileAlgebra.Context().workers(1).communicator(comm)
                        .strategy(strategy));
                     DistributedMatrix a = notPositiveDefinite(n, nb, bad, d, comm.rank())) {
                    la.cholesky(a);
                    return null;
                } catch (RuntimeException e) {
                    return e;
                }
            };
            List<RuntimeException> failures = own.run(body);
            for (int r = 0; r < 2; r++) {
                RuntimeException e = failures.get(r);
                assertNotNull(e, "rank " + r + " finished without an error");
                NotPositiveDefiniteException npd = assertInstanceOf(NotPositiveDefiniteException.class, e,
                        "rank " + r + ": " + e);
                assertEquals(bad, npd.column(), npd.getMessage());
                assertEquals(bad / nb, npd.tile(), npd.getMessage());
            }
        }
    }
}
