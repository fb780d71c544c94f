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
import dev.poniard.scheduler.stream.cpu.CpuDevice;
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
 * The device tile algebra SPMD over two ranks of a {@link dev.poniard.scheduler.comm.LocalCluster}, each rank with its
 * own CPU-emulated device (one kernel at a time, so two busy threads in all).
 */
@Timeout(value = 120, unit = TimeUnit.SECONDS)
class SpmdDeviceTileAlgebraTest extends TwoRankFixture {

    private static <T> List<T> onEveryRank(BiFunction<Communicator, DeviceTileAlgebra, T> body) {
        TileKernels.setBlasThreads(1);
        return cluster.run(comm -> {
            try (CpuDevice device = CpuDevice.launch(new CpuDevice.Context().name("rank" + comm.rank() + "-device")
                    .computeStreams(2).computeCapacity(1).copyBytesPerSecond(50e9).memoryBytes(64L << 20)
                    .stagingBytes(64L << 20));
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
    void shouldRefuseSpreadMatricesWithoutACommunicatorAndReplicatedOnes() {
        try (CpuDevice device = CpuDevice.launch(new CpuDevice.Context().computeStreams(1).computeCapacity(1)
                .memoryBytes(1L << 20).stagingBytes(1L << 20));
             DeviceTileAlgebra la = DeviceTileAlgebra.launch(new DeviceTileAlgebra.Context().device(device));
             DistributedMatrix a = DistributedMatrix.spd(DType.F64, 100, 32, 1, GRID_1X2, 0)) {
            IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> la.cholesky(a));
            assertTrue(e.getMessage().contains("Context.communicator(...)"), e.getMessage());
            e = assertThrows(IllegalArgumentException.class, () -> la.lu(a));
            assertTrue(e.getMessage().contains("the device lu works on whole matrices"), e.getMessage());
        }
        List<String> messages = onEveryRank((comm, la) -> {
            Distribution layers = Distribution.replicated25d(1, 1, 2, 1);
            try (DistributedMatrix x = DistributedMatrix.random(DType.F64, 64, 64, 32, 1, layers, comm.rank());
                 DistributedMatrix y = DistributedMatrix.random(DType.F64, 64, 64, 32, 2, layers, comm.rank());
                 DistributedMatrix z = DistributedMatrix.zeros(DType.F64, 64, 64, 32, layers, comm.rank())) {
                return assertThrows(IllegalArgumentException.class, () -> la.gemm(1, x, y, 0, z)).getMessage();
            }
        });
        assertTrue(messages.get(0).contains("replicated on 2 layers"), messages.get(0));
    }
}
