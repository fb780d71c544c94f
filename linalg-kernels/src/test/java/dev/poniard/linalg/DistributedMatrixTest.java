package dev.poniard.linalg;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.poniard.linalg.dist.Distribution;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.EnumSource;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;

class DistributedMatrixTest {
    @ParameterizedTest
    @EnumSource(DType.class)
    void shouldRoundTripThroughINDArrayWithRaggedTiles(DType type) {
        long seed = System.nanoTime();
        System.out.println("round trip seed " + seed);
        Nd4j.getRandom().setSeed(seed);
        INDArray a = Nd4j.rand(type == DType.F64 ? DataType.DOUBLE : DataType.FLOAT, 37, 23);
        try (DistributedMatrix m = DistributedMatrix.fromINDArray(a, 8)) {
            assertEquals(type, m.type());
            assertEquals(5, m.mt());
            assertEquals(3, m.nt());
            assertEquals(5, m.tileRows(4));
            assertEquals(7, m.tileCols(2));
            assertEquals(a.getDouble(36, 22), m.get(36, 22), 0);
            assertEquals(a, m.toINDArray());
        }
    }

    @Test
    void shouldTileAViewAndAcceptCOrder() {
        INDArray big = Nd4j.linspace(1, 200, 200, DataType.DOUBLE).reshape('c', 10, 20);
        INDArray view = big.get(org.nd4j.linalg.indexing.NDArrayIndex.interval(2, 9),
                org.nd4j.linalg.indexing.NDArrayIndex.interval(3, 15));
        try (DistributedMatrix m = DistributedMatrix.fromINDArray(view, 4)) {
            assertEquals(view, m.toINDArray());
        }
    }

    @Test
    void shouldGenerateIndependentlyOfTileSize() {
        try (DistributedMatrix a = DistributedMatrix.random(DType.F64, 50, 30, 7, 99);
             DistributedMatrix b = DistributedMatrix.random(DType.F64, 50, 30, 16, 99);
             DistributedMatrix c = DistributedMatrix.random(DType.F64, 50, 30, 16, 100)) {
            assertArrayEquals(a.toColumnMajor(), b.toColumnMajor(), 0);
            assertTrue(a.normMax() <= 0.5);
            assertTrue(Math.abs(a.get(3, 4) - c.get(3, 4)) > 0);
        }
    }

    @Test
    void shouldGenerateSymmetricPositiveDefiniteAndDominantMatrices() {
        int n = 40;
        try (DistributedMatrix s = DistributedMatrix.spd(DType.F64, n, 16, 5);
             DistributedMatrix d = DistributedMatrix.diagonallyDominant(DType.F64, n, 16, 5)) {
            for (int i = 0; i < n; i++) {
                double off = 0;
                for (int j = 0; j < n; j++) {
                    assertEquals(s.get(i, j), s.get(j, i), 0);
                    if (i != j) {
                        off += Math.abs(d.get(i, j));
                    }
                }
                assertTrue(Math.abs(d.get(i, i)) > off, "row " + i + " not dominant");
            }
        }
    }

    @Test
    void shouldComputeNormsLikeNd4j() {
        try (DistributedMatrix m = DistributedMatrix.random(DType.F64, 33, 21, 8, 3)) {
            INDArray a = m.toINDArray();
            assertEquals(a.norm2Number().doubleValue(), m.normFrobenius(), 1e-12);
            assertEquals(a.normmaxNumber().doubleValue(), m.normMax(), 0);
            assertEquals(Nd4j.math().abs(a).sum(0).maxNumber().doubleValue(), m.norm1(), 1e-12);
            assertEquals(Nd4j.math().abs(a).sum(1).maxNumber().doubleValue(), m.normInf(), 1e-12);
        }
    }

    @ParameterizedTest
    @EnumSource(DType.class)
    void shouldTranspose(DType type) {
        try (DistributedMatrix m = DistributedMatrix.random(type, 19, 11, 4, 8); DistributedMatrix t = m.transpose()) {
            assertEquals(11, t.rows());
            assertEquals(19, t.cols());
            assertEquals(m.toINDArray().transpose(), t.toINDArray());
        }
    }

    @Test
    void shouldKeepTheDistributionDescriptor() {
        Distribution d = Distribution.blockCyclic2d(2, 2, 1, 1, 1);
        try (DistributedMatrix m = DistributedMatrix.zeros(DType.F32, 20, 20, 8, d)) {
            assertEquals(3, m.owner(1, 1).rank());
            assertEquals(d, m.copy().distribution());
        }
    }

    @Test
    void shouldRejectBadShapes() {
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> DistributedMatrix.zeros(DType.F64, 0, 3, 2));
        assertTrue(e.getMessage().contains("0x3"), e.getMessage());
        assertThrows(IllegalArgumentException.class, () -> DistributedMatrix.fromINDArray(Nd4j.zeros(2, 3, 4), 2));
        try (DistributedMatrix m = DistributedMatrix.zeros(DType.F64, 4, 4, 2)) {
            assertThrows(IndexOutOfBoundsException.class, () -> m.get(4, 0));
        }
    }
}
