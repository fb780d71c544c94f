package dev.poniard.linalg;

import static dev.poniard.linalg.Dense.seed;
import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.poniard.linalg.device.DeviceTileAlgebra;
import dev.poniard.linalg.dist.Distribution;
import dev.poniard.linalg.tile.TileKernels;
import dev.poniard.linalg.tile.TileKernels.Trans;
import dev.poniard.scheduler.comm.Communicator;
import dev.poniard.scheduler.comm.LocalCluster;
import dev.poniard.scheduler.stream.Device;
import java.util.List;
import java.util.concurrent.TimeUnit;
import java.util.function.BiFunction;
import java.util.function.Function;
import java.util.stream.Stream;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.Arguments;
import org.junit.jupiter.params.provider.MethodSource;

/**
 * The device tile algebra SPMD over two ranks of a {@link LocalCluster}, each rank with its own device, device-neutral:
 * CPU-emulated devices everywhere ({@code SpmdDeviceTileAlgebraCpuTest}), two contexts on a CUDA GPU where one is
 * present ({@code SpmdDeviceTileAlgebraCudaTest}, tag {@code gpu}).
 */
@Timeout(value = 120, unit = TimeUnit.SECONDS)
abstract class SpmdDeviceTileAlgebraTest extends TwoRankFixture {

    /** Rank {@code rank}'s device with {@code memoryBytes} of device memory; may abort the test with an assumption. */
    protected abstract Device device(int rank, long memoryBytes);

    protected <T> List<T> onEveryRank(BiFunction<Communicator, DeviceTileAlgebra, T> body) {
        TileKernels.setBlasThreads(1);
        return cluster.run(comm -> {
            try (Device device = device(comm.rank(), 64L << 20);
                 DeviceTileAlgebra la = DeviceTileAlgebra.launch(new DeviceTileAlgebra.Context().device(device)
                         .communicator(comm))) {
                T result = body.apply(comm, la);
                assertEquals(0, device.memory().inUseBytes(), "device buffers still held");
                assertEquals(0, device.staging().inUseBytes(), "staging buffers still held");
                return result;
            }
        });
    }

    static Stream<Arguments> gemmCases() {
        return Stream.of(Arguments.of(GRID_1X2, Trans.N, Trans.N), Arguments.of(GRID_2X1, Trans.N, Trans.N),
                Arguments.of(GRID_2X1, Trans.T, Trans.N), Arguments.of(CYCLIC_COLUMNS, Trans.N, Trans.T),
                Arguments.of(CYCLIC_ROWS, Trans.T, Trans.T),
                Arguments.of(Distribution.block1d(Distribution.Axis.ROWS, 5, 2, 1), Trans.N, Trans.N));
    }

    @ParameterizedTest(name = "{0} ta={1} tb={2}")
    @MethodSource("gemmCases")
    void shouldMultiplyAcrossTwoRanksEachOnItsDevice(Distribution d, Trans ta, Trans tb) {
        int m = 300;
        int n = 250;
        int k = 190;
        int nb = 64; // 5 x 4 x 3 tiles, the last of each smaller
        long seed = seed("spmd device gemm");
        List<double[]> got = onEveryRank((comm, la) -> {
            int r = comm.rank();
            try (DistributedMatrix a = ta == Trans.N ? DistributedMatrix.random(DType.F64, m, k, nb, seed, d, r)
                    : DistributedMatrix.random(DType.F64, k, m, nb, seed, d, r);
                 DistributedMatrix b = tb == Trans.N ? DistributedMatrix.random(DType.F64, k, n, nb, seed + 1, d, r)
                         : DistributedMatrix.random(DType.F64, n, k, nb, seed + 1, d, r);
                 DistributedMatrix c = DistributedMatrix.random(DType.F64, m, n, nb, seed + 2, d, r)) {
                la.gemm(ta, tb, 1.5, a, b, -0.5, c);
                return gathered(c, comm);
            }
        });
        assertNull(got.get(1));
        try (DistributedMatrix a = ta == Trans.N ? DistributedMatrix.random(DType.F64, m, k, nb, seed)
                : DistributedMatrix.random(DType.F64, k, m, nb, seed);
             DistributedMatrix b = tb == Trans.N ? DistributedMatrix.random(DType.F64, k, n, nb, seed + 1)
                     : DistributedMatrix.random(DType.F64, n, k, nb, seed + 1);
             DistributedMatrix c = DistributedMatrix.random(DType.F64, m, n, nb, seed + 2)) {
            double[] expected = Dense.mul(a.toColumnMajor(), a.rows(), a.cols(), ta == Trans.T, b.toColumnMajor(),
                    b.rows(), b.cols(), tb == Trans.T);
            double[] cd = c.toColumnMajor();
            for (int i = 0; i < expected.length; i++) {
                expected[i] = 1.5 * expected[i] - 0.5 * cd[i];
            }
            double err = Dense.frobDiff(got.get(0), expected);
            double scale = a.normFrobenius() * b.normFrobenius() * k * DType.F64.epsilon();
            assertTrue(err / scale < 10, "gemm error " + err + " scaled " + err / scale);
        }
    }

    static Stream<Distribution> choleskyCases() {
        return Stream.of(GRID_1X2, GRID_2X1, CYCLIC_COLUMNS, CYCLIC_ROWS, Distribution.reflectedCyclic2d(2, 1, 5, 1),
                Distribution.block1d(Distribution.Axis.COLUMNS, 5, 2, 1));
    }

    @ParameterizedTest(name = "{0}")
    @MethodSource("choleskyCases")
    void shouldFactorCholeskyAcrossTwoRanksEachOnItsDevice(Distribution d) {
        int n = 300; // 5 tiles of 64, the last 44 wide
        int nb = 64;
        long seed = seed("spmd device cholesky");
        List<double[]> got = onEveryRank((comm, la) -> {
            try (DistributedMatrix a = DistributedMatrix.spd(DType.F64, n, nb, seed, d, comm.rank())) {
                la.cholesky(a);
                return gathered(a, comm);
            }
        });
        try (DistributedMatrix a = DistributedMatrix.spd(DType.F64, n, nb, seed)) {
            double[] ad = a.toColumnMajor();
            double[] l = Dense.lower(got.get(0), n, n, false);
            double[] llt = Dense.mul(l, n, n, false, l, n, n, true);
            double res = Dense.frobDiff(ad, llt) / (Dense.frob(ad) * n * DType.F64.epsilon());
            assertTrue(res < 10, "scaled residual ||A - LL^T||/(||A|| n eps) = " + res);
        }
    }

    static Stream<Arguments> factorCases() {
        return Stream.of(Arguments.of(GRID_1X2, 300, 300), Arguments.of(CYCLIC_COLUMNS, 330, 250),
                Arguments.of(Distribution.blockCyclic1d(Distribution.Axis.COLUMNS, 2, 2, 1), 200, 290),
                Arguments.of(Distribution.block1d(Distribution.Axis.COLUMNS, 5, 2, 1), 300, 300));
    }

    /** A one-rank device algebra on this thread: the reference the two ranks must reproduce. */
    private <T> T onOneDevice(Function<DeviceTileAlgebra, T> body) {
        try (Device device = device(0, 64L << 20);
             DeviceTileAlgebra la = DeviceTileAlgebra.launch(new DeviceTileAlgebra.Context().device(device))) {
            return body.apply(la);
        }
    }

    @ParameterizedTest(name = "{0} {1}x{2}")
    @MethodSource("factorCases")
    void shouldFactorLuAcrossTwoRanksAsOneDeviceDoes(Distribution d, int m, int n) {
        int nb = 64;
        long seed = seed("spmd device lu");
        List<Object[]> got = onEveryRank((comm, la) -> {
            try (DistributedMatrix a = DistributedMatrix.random(DType.F64, m, n, nb, seed, d, comm.rank())) {
                int[] piv = la.lu(a).pivots();
                return new Object[] {gathered(a, comm), piv};
            }
        });
        try (DistributedMatrix a = DistributedMatrix.random(DType.F64, m, n, nb, seed);
             DistributedMatrix f = a.copy()) {
            int[] piv = onOneDevice(la -> la.lu(f).pivots());
            // the same kernels on every tile in the same order: the same pivots on both ranks, the same factors
            assertArrayEquals(piv, (int[]) got.get(0)[1]);
            assertArrayEquals(piv, (int[]) got.get(1)[1]);
            assertArrayEquals(f.toColumnMajor(), (double[]) got.get(0)[0], 1e-12 * a.normFrobenius());
            double res = Dense.luResidual(a.toColumnMajor(), (double[]) got.get(0)[0], m, n,
                    new LuFactorization(f, piv).permutation())
                    / (a.normFrobenius() * Math.max(m, n) * DType.F64.epsilon());
            assertTrue(res < 10, "scaled residual ||PA - LU||/(||A|| n eps) = " + res);
        }
    }

    @ParameterizedTest(name = "{0} {1}x{2}")
    @MethodSource("factorCases")
    void shouldFactorQrAcrossTwoRanksAsOneDeviceDoes(Distribution d, int m, int n) {
        int nb = 64;
        long seed = seed("spmd device qr");
        List<Object[]> got = onEveryRank((comm, la) -> {
            try (DistributedMatrix a = DistributedMatrix.random(DType.F64, m, n, nb, seed, d, comm.rank());
                 QrFactorization qr = la.qr(a)) {
                // T of step k and its reflector copy are on the rank that factored tile column k
                double[][] t = new double[Math.min(a.mt(), a.nt())][];
                for (int k = 0; k < t.length; k++) {
                    assertEquals(a.isLocal(0, k), qr.t(k, k) != null, "T(" + k + ", " + k + ") on rank " + comm.rank());
                    if (qr.t(a.mt() - 1, k) != null) {
                        t[k] = Dense.values(qr.t(a.mt() - 1, k));
                    }
                }
                return new Object[] {gathered(a, comm), t};
            }
        });
        try (DistributedMatrix a = DistributedMatrix.random(DType.F64, m, n, nb, seed);
             DistributedMatrix f = a.copy()) {
            double[][] t = onOneDevice(la -> {
                try (QrFactorization qr = la.qr(f)) {
                    double[][] out = new double[Math.min(a.mt(), a.nt())][];
                    for (int k = 0; k < out.length; k++) {
                        out[k] = Dense.values(qr.t(a.mt() - 1, k));
                    }
                    return out;
                }
            });
            assertArrayEquals(f.toColumnMajor(), (double[]) got.get(0)[0], 1e-12 * a.normFrobenius());
            for (int k = 0; k < t.length; k++) {
                double[] onRank0 = ((double[][]) got.get(0)[1])[k];
                double[] onRanks = onRank0 != null ? onRank0 : ((double[][]) got.get(1)[1])[k];
                assertArrayEquals(t[k], onRanks, 1e-12, "T(" + (a.mt() - 1) + ", " + k + ")");
            }
        }
    }

    @Test
    void shouldNameTheSingularColumnOnEveryRankAndLeaveEveryRanksTilesAsTheyWere() {
        int n = 300;
        List<Object[]> got = onEveryRank((comm, la) -> {
            try (DistributedMatrix a = DistributedMatrix.random(DType.F64, n, n, 64, 3, GRID_1X2, comm.rank())) {
                // a zero column stays zero under elimination: the first zero pivot is at column 150 (tile 2, rank 0)
                if (a.isLocal(0, 2)) {
                    for (int i = 0; i < a.mt(); i++) {
                        for (int r = 0; r < a.tileRows(i); r++) {
                            a.tile(i, 2).set(r, 150 - 128, 0);
                        }
                    }
                }
                double[] before = gathered(a, comm);
                SingularMatrixException e = assertThrows(SingularMatrixException.class, () -> la.lu(a));
                double[] after = gathered(a, comm);
                if (comm.rank() == 0) {
                    assertArrayEquals(before, after);
                }
                return new Object[] {e.tile(), e.column()};
            }
        });
        for (Object[] e : got) {
            assertEquals(2, e[0]);
            assertEquals(150, e[1]);
        }
    }

    @Test
    void shouldNameTheFailingColumnOnEveryRankAndLeaveEveryRanksTilesAsTheyWere() {
        int n = 300;
        int nb = 64;
        List<Object[]> got = onEveryRank((comm, la) -> {
            try (DistributedMatrix a = DistributedMatrix.spd(DType.F64, n, nb, 11, GRID_2X1, comm.rank())) {
                if (a.isLocal(3, 3)) {
                    a.tile(3, 3).set(10, 10, -1e6); // global column 3 * 64 + 10 = 202
                }
                double[] before = gathered(a, comm);
                NotPositiveDefiniteException e = assertThrows(NotPositiveDefiniteException.class, () -> la.cholesky(a));
                double[] after = gathered(a, comm);
                if (comm.rank() == 0) {
                    assertArrayEquals(before, after);
                }
                // and the algebra still works
                try (DistributedMatrix ok = DistributedMatrix.spd(DType.F64, 100, 32, 12, GRID_2X1, comm.rank())) {
                    la.cholesky(ok);
                }
                return new Object[] {e.tile(), e.column()};
            }
        });
        for (Object[] e : got) {
            assertEquals(3, e[0]);
            assertEquals(202, e[1]);
        }
    }

    @Test
    void shouldFailEveryRankWhenOneRanksDeviceCannotHoldItsTiles() {
        // rank 1's device is too small: it fails mid-operation, and rank 0, waiting for its tiles, must fail too
        try (LocalCluster own = LocalCluster.launch(2)) { // its communicators are aborted: not the shared cluster's
            List<String> got = own.run(comm -> {
                try (Device device = device(comm.rank(), comm.rank() == 1 ? 256L << 10 : 64L << 20);
                     DeviceTileAlgebra la = DeviceTileAlgebra.launch(new DeviceTileAlgebra.Context().device(device)
                             .communicator(comm));
                     DistributedMatrix a = DistributedMatrix.spd(DType.F64, 300, 64, 5, GRID_2X1, comm.rank())) {
                    RuntimeException e = assertThrows(RuntimeException.class, () -> la.cholesky(a));
                    assertEquals(0, device.memory().inUseBytes(), "device buffers still held");
                    return e.toString();
                }
            });
            assertTrue(got.get(1).contains("cannot provide"), got.get(1));
            assertTrue(got.get(0).contains("rank 1 failed in the device algebra's cholesky"), got.get(0));
        }
    }
}
