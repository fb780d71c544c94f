package dev.poniard.linalg;

import static dev.poniard.linalg.Dense.seed;
import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.poniard.linalg.dist.Distribution;
import dev.poniard.linalg.tile.Tile;
import dev.poniard.linalg.tile.TileKernels.Trans;
import dev.poniard.scheduler.comm.Communicator;
import dev.poniard.scheduler.comm.LocalCluster;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;
import java.util.stream.Stream;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.Arguments;
import org.junit.jupiter.params.provider.EnumSource;
import org.junit.jupiter.params.provider.MethodSource;
import org.junit.jupiter.params.provider.ValueSource;

/**
 * 2.5D GEMM (C on {@link Distribution#replicated25d} with c = 2) over 2 ranks (1x1x2) and 4 ranks (1x2x2,
 * 2x1x2) of {@link LocalCluster}s, one worker per rank and small tiles so that at most about two threads are
 * busy at a time. Results are checked on rank 0 against the same GEMM in one process, by LAPACK-style test
 * ratios (the layers sum k in a different order, so the bits differ from one process's), and against
 * themselves bit for bit across repeated runs and strategies.
 */
@Timeout(value = 120, unit = TimeUnit.SECONDS)
class Spmd25dGemmTest extends TwoRankFixture {
    private static final int NB = 32;
    private static final Distribution LAYERS_1X1X2 = Distribution.replicated25d(1, 1, 2, 1);
    private static final Distribution LAYERS_1X2X2 = Distribution.replicated25d(1, 2, 2, 1);
    private static final Distribution LAYERS_2X1X2 = Distribution.replicated25d(2, 1, 2, 1);
    private static final Distribution GRID_2X2 = Distribution.blockCyclic2d(2, 2, 1, 1, 1);

    private static LocalCluster four;

    @BeforeAll
    static void startFourRanks() {
        four = LocalCluster.launch(4);
    }

    @AfterAll
    static void stopFourRanks() {
        if (four != null) {
            four.close();
            four = null;
        }
    }

    /** One GEMM problem: C (on {@code dc}) := alpha op(A) op(B) + beta C, A and B on {@code dab}. */
    record Problem(DType type, int m, int n, int k, Trans ta, Trans tb, Distribution dab, Distribution dc, long seed) {
        static final double ALPHA = 1.5;
        static final double BETA = -0.5;

        DistributedMatrix a(Distribution d, int rank) {
            return ta == Trans.N ? DistributedMatrix.random(type, m, k, NB, seed, d, rank)
                    : DistributedMatrix.random(type, k, m, NB, seed, d, rank);
        }

        DistributedMatrix b(Distribution d, int rank) {
            return tb == Trans.N ? DistributedMatrix.random(type, k, n, NB, seed + 1, d, rank)
                    : DistributedMatrix.random(type, n, k, NB, seed + 1, d, rank);
        }

        DistributedMatrix c(Distribution d, int rank) {
            return DistributedMatrix.random(type, m, n, NB, seed + 2, d, rank);
        }

        /** Runs the GEMM on every rank of {@code cluster}; C gathered on rank 0 (column-major). */
        double[] run(LocalCluster cluster, TileAlgebra.Strategy strategy) {
            return cluster.run(comm -> {
                int r = comm.rank();
                try (TileAlgebra la = launch(comm, strategy);
                     DistributedMatrix a = a(dab, r); DistributedMatrix b = b(dab, r); DistributedMatrix c = c(dc, r)) {
                    la.gemm(ta, tb, ALPHA, a, b, BETA, c);
                    return gathered(c, comm);
                }
            }).get(0);
        }

        /** The same GEMM in one process; checks {@code got} against it by a test ratio below 10. */
        void check(double[] got) {
            try (TileAlgebra one = TileAlgebra.launch(new TileAlgebra.Context().workers(1));
                 DistributedMatrix a = a(Distribution.single(), 0); DistributedMatrix b = b(Distribution.single(), 0);
                 DistributedMatrix c = c(Distribution.single(), 0)) {
                double scale = Problem.ALPHA * a.normFrobenius() * b.normFrobenius() - Problem.BETA * c.normFrobenius();
                one.gemm(ta, tb, ALPHA, a, b, BETA, c);
                double ratio = Dense.frobDiff(c.toColumnMajor(), got) / (scale * k * type.epsilon());
                assertTrue(ratio < 10, this + ": ||C - C(one process)|| / (scale k eps) = " + ratio);
            }
        }
    }

    private static TileAlgebra launch(Communicator comm, TileAlgebra.Strategy strategy) {
        return TileAlgebra.launch(new TileAlgebra.Context().workers(1).communicator(comm).strategy(strategy));
    }

    static Stream<Arguments> twoRankCases() {
        List<Arguments> out = new ArrayList<>();
        for (TileAlgebra.Strategy s : TileAlgebra.Strategy.values()) {
            out.add(Arguments.of(DType.F64, s, Trans.N, Trans.N, LAYERS_1X1X2));
            out.add(Arguments.of(DType.F32, s, Trans.T, Trans.N, LAYERS_1X1X2));
            // A and B on one layer's worth of ranks: every tile the other layer reads moves.
            out.add(Arguments.of(DType.F64, s, Trans.N, Trans.T, GRID_1X2));
            out.add(Arguments.of(DType.F32, s, Trans.T, Trans.T, CYCLIC_ROWS));
        }
        return out.stream();
    }

    @ParameterizedTest(name = "{0} {1} ta={2} tb={3} A,B on {4}")
    @MethodSource("twoRankCases")
    void shouldMatchOneProcessGemmOnTwoLayersOfOneRank(DType type, TileAlgebra.Strategy strategy, Trans ta, Trans tb,
                                                       Distribution dab) {
        // 150 x 130 x 170 in 32-tiles: 5 x 5 x 6 tiles, the last of each partial; each layer gets 3 of k.
        Problem p = new Problem(type, 150, 130, 170, ta, tb, dab, LAYERS_1X1X2, seed("2.5d gemm 1x1x2"));
        p.check(p.run(cluster, strategy));
    }

    static Stream<Arguments> fourRankCases() {
        return Stream.of(
                Arguments.of(DType.F64, TileAlgebra.Strategy.POINT_TO_POINT, Trans.N, Trans.N, LAYERS_1X2X2, LAYERS_1X2X2),
                Arguments.of(DType.F32, TileAlgebra.Strategy.COLLECTIVE, Trans.T, Trans.N, LAYERS_1X2X2, LAYERS_1X2X2),
                Arguments.of(DType.F64, TileAlgebra.Strategy.RMA, Trans.N, Trans.T, LAYERS_2X1X2, LAYERS_2X1X2),
                Arguments.of(DType.F32, TileAlgebra.Strategy.POINT_TO_POINT, Trans.T, Trans.T, LAYERS_2X1X2, LAYERS_2X1X2),
                Arguments.of(DType.F64, TileAlgebra.Strategy.COLLECTIVE, Trans.N, Trans.N, GRID_2X2, LAYERS_2X1X2),
                Arguments.of(DType.F64, TileAlgebra.Strategy.RMA, Trans.T, Trans.N, GRID_2X2, LAYERS_1X2X2),
                Arguments.of(DType.F32, TileAlgebra.Strategy.RMA, Trans.N, Trans.N, LAYERS_1X2X2, LAYERS_2X1X2));
    }

    @ParameterizedTest(name = "{0} {1} ta={2} tb={3} A,B on {4}, C on {5}")
    @MethodSource("fourRankCases")
    void shouldMatchOneProcessGemmOnTwoLayersOfTwoRanks(DType type, TileAlgebra.Strategy strategy, Trans ta, Trans tb,
                                                        Distribution dab, Distribution dc) {
        Problem p = new Problem(type, 150, 130, 170, ta, tb, dab, dc, seed("2.5d gemm 4 ranks"));
        p.check(p.run(four, strategy));
    }

    @ParameterizedTest(name = "{0} ranks")
    @ValueSource(ints = {2, 4})
    void shouldGiveTheSameBitsOnEveryRunAndWithEveryStrategy(int ranks) {
        LocalCluster on = ranks == 2 ? cluster : four;
        Distribution d = Distribution.replicated25d(ranks, 2);
        Problem p = new Problem(DType.F64, 150, 130, 170, Trans.N, Trans.T, d, d, seed("2.5d gemm bits"));
        double[] first = p.run(on, TileAlgebra.Strategy.POINT_TO_POINT);
        p.check(first);
        assertArrayEquals(first, p.run(on, TileAlgebra.Strategy.POINT_TO_POINT), "a second point-to-point run");
        assertArrayEquals(first, p.run(on, TileAlgebra.Strategy.COLLECTIVE), "collective");
        assertArrayEquals(first, p.run(on, TileAlgebra.Strategy.RMA), "RMA");
    }

    @Test
    void shouldLeaveALayerIdleWhenKHasFewerTilesThanLayers() {
        // k = 20 is one tile: layer 0 takes it, layer 1 has nothing to add, and beta C is still applied once.
        Problem p = new Problem(DType.F64, 70, 90, 20, Trans.N, Trans.N, LAYERS_1X1X2, LAYERS_1X1X2, seed("2.5d gemm k<c"));
        p.check(p.run(cluster, TileAlgebra.Strategy.POINT_TO_POINT));
    }

    @ParameterizedTest(name = "{0}")
    @EnumSource(TileAlgebra.Strategy.class)
    void shouldLeaveEveryReplicaOfCEqualToItsPrimary(TileAlgebra.Strategy strategy) {
        long seed = seed("2.5d gemm replicas");
        Problem p = new Problem(DType.F64, 150, 130, 170, Trans.N, Trans.N, GRID_2X2, LAYERS_1X2X2, seed);
        List<double[]> held = four.run(comm -> {
            int r = comm.rank();
            try (TileAlgebra la = launch(comm, strategy);
                 DistributedMatrix a = p.a(GRID_2X2, r); DistributedMatrix b = p.b(GRID_2X2, r);
                 DistributedMatrix c = p.c(LAYERS_1X2X2, r)) {
                la.gemm(Problem.ALPHA, a, b, Problem.BETA, c);
                double[] whole = gathered(c, comm);
                return whole != null ? whole : heldCopies(c);
            }
        });
        double[] primaries = held.get(0);
        p.check(primaries);
        for (int r = 2; r < 4; r++) {
            double[] copies = held.get(r);
            int seen = 0;
            for (int e = 0; e < copies.length; e++) {
                if (!Double.isNaN(copies[e])) {
                    assertEquals(primaries[e], copies[e], 0.0, "rank " + r + "'s replica, entry " + e);
                    seen++;
                }
            }
            assertTrue(seen > 0, "rank " + r + " (layer 1) holds replicas");
        }
    }

    /** The tiles this rank holds but does not own, column-major over the whole matrix, NaN elsewhere. */
    private static double[] heldCopies(DistributedMatrix c) {
        double[] out = new double[c.rows() * c.cols()];
        java.util.Arrays.fill(out, Double.NaN);
        for (int j = 0; j < c.nt(); j++) {
            for (int i = 0; i < c.mt(); i++) {
                if (c.holds(i, j) && !c.isLocal(i, j)) {
                    Tile t = c.tile(i, j);
                    for (int cc = 0; cc < t.cols(); cc++) {
                        for (int rr = 0; rr < t.rows(); rr++) {
                            out[(j * NB + cc) * c.rows() + i * NB + rr] = t.get(rr, cc);
                        }
                    }
                }
            }
        }
        return out;
    }

    @Test
    void shouldMoveOnlyPartialSumsAndResultsWhenOperandsAreReplicated() {
        // 1x1x2: both ranks hold all of A and B. 5 x 5 C tiles, k in 6 tiles: 3 steps per layer. Rank 1 sends its
        // 25 partial sums to rank 0, which adds them and sends the 25 results back; A and B never move.
        Problem p = new Problem(DType.F64, 150, 130, 170, Trans.N, Trans.N, LAYERS_1X1X2, LAYERS_1X1X2, 1);
        List<long[]> counts = cluster.run(comm -> {
            int r = comm.rank();
            try (TileAlgebra la = TileAlgebra.launch(new TileAlgebra.Context().workers(1).communicator(comm)
                    .strategy(TileAlgebra.Strategy.POINT_TO_POINT).trace(true));
                 DistributedMatrix a = p.a(LAYERS_1X1X2, r); DistributedMatrix b = p.b(LAYERS_1X1X2, r);
                 DistributedMatrix c = p.c(LAYERS_1X1X2, r)) {
                la.gemm(Problem.ALPHA, a, b, Problem.BETA, c);
                long[] n = new long[5];
                for (var t : la.scheduler().trace().records()) {
                    String name = t.name();
                    int kind = name.startsWith("send") ? 0 : name.startsWith("recv") ? 1 : name.startsWith("gemm") ? 2
                            : name.startsWith("add") ? 3 : name.startsWith("copy") ? 4 : -1;
                    if (kind >= 0) {
                        n[kind]++;
                    }
                }
                return n;
            }
        });
        assertArrayEquals(new long[] {25, 25, 75, 25, 0}, counts.get(0), "rank 0: sends, receives, gemms, adds, copies");
        assertArrayEquals(new long[] {25, 25, 75, 0, 25}, counts.get(1), "rank 1: sends, receives, gemms, adds, copies");
    }

    @Test
    void shouldKeepReplicasCurrentAfterAnOperationOtherThanGemm() {
        // Cholesky runs on the primaries (all on rank 0 here); rank 1's copies must follow.
        int n = 100;
        long seed = seed("2.5d cholesky replicas");
        List<double[]> got = cluster.run(comm -> {
            try (TileAlgebra la = launch(comm, TileAlgebra.Strategy.COLLECTIVE);
                 DistributedMatrix a = DistributedMatrix.spd(DType.F64, n, NB, seed, LAYERS_1X1X2, comm.rank())) {
                la.cholesky(a);
                double[] whole = gathered(a, comm);
                return whole != null ? whole : heldCopies(a);
            }
        });
        assertArrayEquals(got.get(0), got.get(1));
    }

    @Test
    void shouldRejectAReplicationFactorThatDoesNotDivideTheRanks() {
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> Distribution.replicated25d(4, 3));
        assertTrue(e.getMessage().contains("c = 3") && e.getMessage().contains("4 ranks"), e.getMessage());
        assertEquals("replicated25d(1x2x2)", Distribution.replicated25d(4, 2).toString());
        assertEquals("replicated25d(2x2x2)", Distribution.replicated25d(8, 2).toString());
    }

    @Test
    void shouldRejectMismatchedShapesOnEveryRank() {
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> cluster.run(comm -> {
            int r = comm.rank();
            try (TileAlgebra la = launch(comm, TileAlgebra.Strategy.POINT_TO_POINT);
                 DistributedMatrix a = DistributedMatrix.random(DType.F64, 64, 96, NB, 1, LAYERS_1X1X2, r);
                 DistributedMatrix b = DistributedMatrix.random(DType.F64, 64, 64, NB, 2, LAYERS_1X1X2, r);
                 DistributedMatrix c = DistributedMatrix.zeros(DType.F64, 64, 64, NB, LAYERS_1X1X2, r)) {
                la.gemm(1.0, a, b, 0.0, c);
                return null;
            }
        }));
        assertTrue(e.getMessage().contains("op(A) is 64x96, op(B) is 64x64"), e.getMessage());
    }

    @Test
    void shouldRejectOperandsOnOtherRanksThanTheCommunicator() {
        // A on one rank while C's two layers span both ranks of the communicator.
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> cluster.run(comm -> {
            try (TileAlgebra la = launch(comm, TileAlgebra.Strategy.POINT_TO_POINT);
                 DistributedMatrix a = DistributedMatrix.random(DType.F64, 64, 64, NB, 1, Distribution.single(), 0);
                 DistributedMatrix b = DistributedMatrix.random(DType.F64, 64, 64, NB, 2, LAYERS_1X1X2, comm.rank());
                 DistributedMatrix c = DistributedMatrix.zeros(DType.F64, 64, 64, NB, LAYERS_1X1X2, comm.rank())) {
                la.gemm(1.0, a, b, 0.0, c);
                return null;
            }
        }));
        assertTrue(e.getMessage().contains("part of 1 ranks") && e.getMessage().contains("communicator of 2"),
                e.getMessage());
    }

    @Test
    void shouldRejectCAsAnOperandOnAReplicatedDistribution() {
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> cluster.run(comm -> {
            try (TileAlgebra la = launch(comm, TileAlgebra.Strategy.POINT_TO_POINT);
                 DistributedMatrix b = DistributedMatrix.random(DType.F64, 64, 64, NB, 2, LAYERS_1X1X2, comm.rank());
                 DistributedMatrix c = DistributedMatrix.random(DType.F64, 64, 64, NB, 3, LAYERS_1X1X2, comm.rank())) {
                la.gemm(1.0, c, b, 1.0, c);
                return null;
            }
        }));
        assertTrue(e.getMessage().contains("is also A"), e.getMessage());
    }

    @Test
    void shouldHoldEveryLayersCopyOnItsRank() {
        // 1x2x2: rank r holds tile column j (primary on rank j % 2, replica on rank 2 + j % 2).
        try (DistributedMatrix m = DistributedMatrix.zeros(DType.F64, 64, 128, NB, LAYERS_1X2X2, 3)) {
            for (int j = 0; j < m.nt(); j++) {
                assertEquals(j % 2 == 1, m.holds(0, j), "column " + j);
                assertFalse(m.isLocal(0, j), "rank 3 owns no primary");
            }
        }
    }
}
