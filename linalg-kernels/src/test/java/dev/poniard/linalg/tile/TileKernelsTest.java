package dev.poniard.linalg.tile;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.poniard.linalg.DType;
import dev.poniard.linalg.tile.TileKernels.Diag;
import dev.poniard.linalg.tile.TileKernels.Side;
import dev.poniard.linalg.tile.TileKernels.Trans;
import dev.poniard.linalg.tile.TileKernels.Uplo;
import java.util.Random;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.EnumSource;

/** Each kernel against a straightforward loop computation on the same data. */
class TileKernelsTest {
    private static Tile random(DType type, int m, int n, Random rnd) {
        Tile t = Tile.allocate(type, m, n);
        for (int j = 0; j < n; j++) {
            for (int i = 0; i < m; i++) {
                t.set(i, j, rnd.nextDouble() - 0.5);
            }
        }
        return t;
    }

    private static Random rnd(String test) {
        long seed = System.nanoTime();
        System.out.println(test + " seed " + seed);
        return new Random(seed);
    }

    private static double tol(DType type, int n) {
        return 20 * n * type.epsilon();
    }

    /** op(x)(i, j). */
    private static double op(Tile x, Trans t, int i, int j) {
        return t == Trans.N ? x.get(i, j) : x.get(j, i);
    }

    @ParameterizedTest
    @EnumSource(DType.class)
    void shouldAddTilesExactlyAsElementwiseAdditionAndRejectOtherShapes(DType type) {
        Random rnd = rnd("add");
        try (Tile x = random(type, 7, 5, rnd); Tile y = random(type, 7, 5, rnd); Tile y0 = y.copy();
             Tile other = random(type, 5, 7, rnd)) {
            TileKernels.add(x, y);
            for (int j = 0; j < 5; j++) {
                for (int i = 0; i < 7; i++) {
                    // The sum rounded once in the tile's type: what 2.5D GEMM's reproducible reduction relies on.
                    double sum = type == DType.F64 ? y0.get(i, j) + x.get(i, j) : (float) y0.get(i, j) + (float) x.get(i, j);
                    assertEquals(sum, y.get(i, j), 0.0, "(" + i + ", " + j + ")");
                }
            }
            IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> TileKernels.add(other, y));
            assertTrue(e.getMessage().contains("X is 5x7, Y is 7x5"), e.getMessage());
        }
    }

    @ParameterizedTest
    @EnumSource(DType.class)
    void shouldComputeGemmWithTransposes(DType type) {
        Random rnd = rnd("gemm");
        for (Trans ta : Trans.values()) {
            for (Trans tb : Trans.values()) {
                int m = 7;
                int n = 5;
                int k = 9;
                try (Tile a = ta == Trans.N ? random(type, m, k, rnd) : random(type, k, m, rnd);
                     Tile b = tb == Trans.N ? random(type, k, n, rnd) : random(type, n, k, rnd);
                     Tile c = random(type, m, n, rnd); Tile c0 = c.copy()) {
                    TileKernels.gemm(ta, tb, 2.0, a, b, 0.5, c);
                    for (int i = 0; i < m; i++) {
                        for (int j = 0; j < n; j++) {
                            double s = 0;
                            for (int l = 0; l < k; l++) {
                                s += op(a, ta, i, l) * op(b, tb, l, j);
                            }
                            assertEquals(2 * s + 0.5 * c0.get(i, j), c.get(i, j), tol(type, k), ta + "" + tb + " at " + i + "," + j);
                        }
                    }
                }
            }
        }
    }

    @ParameterizedTest
    @EnumSource(DType.class)
    void shouldSolveTriangularTilesFromBothSides(DType type) {
        Random rnd = rnd("trsm");
        int n = 6;
        for (Side side : Side.values()) {
            for (Uplo uplo : Uplo.values()) {
                for (Trans t : Trans.values()) {
                    try (Tile a = random(type, n, n, rnd); Tile b = side == Side.LEFT ? random(type, n, 4, rnd) : random(type, 4, n, rnd);
                         Tile x = b.copy()) {
                        for (int i = 0; i < n; i++) {
                            a.set(i, i, 4 + i);
                        }
                        TileKernels.trsm(side, uplo, t, Diag.NON_UNIT, 1.0, a, x);
                        // Multiply back with the triangle only and compare with B.
                        for (int r = 0; r < b.rows(); r++) {
                            for (int c = 0; c < b.cols(); c++) {
                                double s = 0;
                                for (int l = 0; l < n; l++) {
                                    int ai = side == Side.LEFT ? r : l;
                                    int aj = side == Side.LEFT ? l : c;
                                    double av = op(a, t, ai, aj);
                                    int ri = t == Trans.N ? ai : aj;
                                    int rj = t == Trans.N ? aj : ai;
                                    boolean inTriangle = uplo == Uplo.LOWER ? ri >= rj : ri <= rj;
                                    if (!inTriangle) {
                                        continue;
                                    }
                                    s += side == Side.LEFT ? av * x.get(l, c) : x.get(r, l) * av;
                                }
                                assertEquals(b.get(r, c), s, tol(type, n), side + " " + uplo + " " + t);
                            }
                        }
                    }
                }
            }
        }
    }

    @ParameterizedTest
    @EnumSource(DType.class)
    void shouldUpdateLowerTriangleWithSyrk(DType type) {
        Random rnd = rnd("syrk");
        try (Tile a = random(type, 5, 3, rnd); Tile c = random(type, 5, 5, rnd); Tile c0 = c.copy()) {
            TileKernels.syrk(Uplo.LOWER, Trans.N, -1.0, a, 1.0, c);
            for (int i = 0; i < 5; i++) {
                for (int j = 0; j < 5; j++) {
                    double s = 0;
                    for (int l = 0; l < 3; l++) {
                        s += a.get(i, l) * a.get(j, l);
                    }
                    double expected = i >= j ? c0.get(i, j) - s : c0.get(i, j);
                    assertEquals(expected, c.get(i, j), tol(type, 3));
                }
            }
        }
    }

    @Test
    void shouldFactorSpdTileAndReportTheFailingMinor() {
        int n = 8;
        try (Tile a = Tile.allocate(DType.F64, n, n); Tile l = Tile.allocate(DType.F64, n, n)) {
            for (int i = 0; i < n; i++) {
                for (int j = 0; j < n; j++) {
                    a.set(i, j, i == j ? n : 1.0 / (1 + i + j));
                }
            }
            l.copyFrom(a);
            assertEquals(0, TileKernels.potrf(Uplo.LOWER, l));
            for (int i = 0; i < n; i++) {
                for (int j = 0; j <= i; j++) {
                    double s = 0;
                    for (int k = 0; k <= j; k++) {
                        s += l.get(i, k) * l.get(j, k);
                    }
                    assertEquals(a.get(i, j), s, 1e-12);
                }
            }
            a.set(3, 3, -1);
            assertEquals(4, TileKernels.potrf(Uplo.LOWER, a), "LAPACK info names the 1-based minor");
        }
    }

    @Test
    void shouldFactorPanelWithPartialPivoting() {
        Random rnd = rnd("getrf");
        int m = 12;
        int n = 5;
        try (Tile a = random(DType.F64, m, n, rnd); Tile f = a.copy()) {
            int[] ipiv = new int[n];
            assertEquals(0, TileKernels.getrf(f, ipiv));
            double[][] pa = new double[m][n];
            for (int i = 0; i < m; i++) {
                for (int j = 0; j < n; j++) {
                    pa[i][j] = a.get(i, j);
                }
            }
            for (int r = 0; r < n; r++) {
                double[] t = pa[r];
                pa[r] = pa[ipiv[r] - 1];
                pa[ipiv[r] - 1] = t;
            }
            for (int i = 0; i < m; i++) {
                for (int j = 0; j < n; j++) {
                    double s = 0;
                    for (int k = 0; k <= Math.min(i, j); k++) {
                        s += (i == k ? 1 : f.get(i, k)) * f.get(k, j);
                    }
                    assertEquals(pa[i][j], s, 1e-13);
                }
            }
        }
    }

    @ParameterizedTest
    @EnumSource(DType.class)
    void shouldReproduceStackedTilesFromTileQrKernels(DType type) {
        // [A1; A2] = Q [R; 0] via geqrt on A1 then tpqrt on (R, A2); applying Q^T with gemqrt/tpmqrt to
        // a copy of [A1; A2] must give [R; 0].
        Random rnd = rnd("qr kernels");
        int nb = 6;
        int ib = 4;
        try (Tile a1 = random(type, nb, nb, rnd); Tile a2 = random(type, 5, nb, rnd);
             Tile c1 = a1.copy(); Tile c2 = a2.copy();
             Tile t1 = Tile.allocate(type, ib, nb); Tile t2 = Tile.allocate(type, ib, nb); Tile v1 = Tile.allocate(type, nb, nb)) {
            TileKernels.geqrt(ib, a1, t1);
            v1.copyFrom(a1);
            TileKernels.tpqrt(ib, a1, a2, t2);
            TileKernels.gemqrt(Trans.T, ib, v1, t1, c1);
            TileKernels.tpmqrt(Trans.T, ib, a2, t2, c1, c2);
            for (int i = 0; i < nb; i++) {
                for (int j = 0; j < nb; j++) {
                    double r = i <= j ? a1.get(i, j) : 0;
                    assertEquals(r, c1.get(i, j), tol(type, nb), "R at " + i + "," + j);
                }
            }
            for (int i = 0; i < c2.rows(); i++) {
                for (int j = 0; j < nb; j++) {
                    assertEquals(0, c2.get(i, j), tol(type, nb), "annihilated block at " + i + "," + j);
                }
            }
            // And Q undoes it.
            TileKernels.tpmqrt(Trans.N, ib, a2, t2, c1, c2);
            TileKernels.gemqrt(Trans.N, ib, v1, t1, c1);
            try (Tile orig = Tile.allocate(type, nb, nb)) {
                orig.copyFrom(c1);
                assertTrue(Math.abs(orig.get(2, 3)) > 0);
            }
        }
    }

    @Test
    void shouldNameMismatchedShapes() {
        try (Tile a = Tile.allocate(DType.F64, 3, 4); Tile b = Tile.allocate(DType.F64, 5, 2); Tile c = Tile.allocate(DType.F64, 3, 2);
             Tile f = Tile.allocate(DType.F32, 4, 2)) {
            IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                    () -> TileKernels.gemm(Trans.N, Trans.N, 1, a, b, 0, c));
            assertTrue(e.getMessage().contains("op(A) is 3x4") && e.getMessage().contains("op(B) is 5x2"), e.getMessage());
            e = assertThrows(IllegalArgumentException.class, () -> TileKernels.gemm(Trans.N, Trans.N, 1, a, f, 0, c));
            assertTrue(e.getMessage().contains("mix F64 and F32"), e.getMessage());
            assertThrows(IllegalArgumentException.class, () -> TileKernels.potrf(Uplo.LOWER, a));
        }
    }
}
