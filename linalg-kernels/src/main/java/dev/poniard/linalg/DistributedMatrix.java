package dev.poniard.linalg;

import dev.poniard.linalg.dist.Distribution;
import dev.poniard.linalg.dist.TileOwner;
import dev.poniard.linalg.tile.Tile;
import java.nio.FloatBuffer;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;

/**
 * A dense rows x cols matrix stored as a grid of contiguous column-major {@link Tile}s of
 * {@code tileSize x tileSize} (the last tile row and column may be smaller), with a {@link Distribution}
 * saying which rank and device owns each tile. In a one-process run every tile is held here; the
 * descriptor is what multi-rank execution will consult to decide who computes what.
 *
 * <p>Generators are element-wise deterministic: entry (r, c) of {@link #random} depends only on the seed
 * and (r, c), never on the tile size or the distribution, so differently tiled copies of one matrix are
 * equal and each rank can generate its own tiles.
 */
public final class DistributedMatrix implements AutoCloseable {
    private final DType type;
    private final int rows;
    private final int cols;
    private final int nb;
    private final int mt;
    private final int nt;
    private final Distribution distribution;
    private final Tile[][] tiles;

    private DistributedMatrix(DType type, int rows, int cols, int nb, Distribution distribution) {
        if (rows < 1 || cols < 1) {
            throw new IllegalArgumentException("matrix must be at least 1x1, got " + rows + "x" + cols);
        }
        if (nb < 1) {
            throw new IllegalArgumentException("tile size must be >= 1, got " + nb);
        }
        this.type = type;
        this.rows = rows;
        this.cols = cols;
        this.nb = nb;
        this.mt = (rows + nb - 1) / nb;
        this.nt = (cols + nb - 1) / nb;
        this.distribution = distribution;
        this.tiles = new Tile[mt][nt];
        for (int i = 0; i < mt; i++) {
            for (int j = 0; j < nt; j++) {
                tiles[i][j] = Tile.allocate(type, tileRows(i), tileCols(j));
            }
        }
    }

    /** A zero matrix with square tiles of {@code tileSize}, all on rank 0. */
    public static DistributedMatrix zeros(DType type, int rows, int cols, int tileSize) {
        return zeros(type, rows, cols, tileSize, Distribution.single());
    }

    public static DistributedMatrix zeros(DType type, int rows, int cols, int tileSize, Distribution distribution) {
        return new DistributedMatrix(type, rows, cols, tileSize, distribution);
    }

    /** Tiles a 2-D INDArray (any order, views included); FLOAT arrays give F32, every other type F64. */
    public static DistributedMatrix fromINDArray(INDArray a, int tileSize) {
        return fromINDArray(a, tileSize, a.dataType() == DataType.FLOAT ? DType.F32 : DType.F64, Distribution.single());
    }

    public static DistributedMatrix fromINDArray(INDArray a, int tileSize, DType type, Distribution distribution) {
        if (a.rank() != 2) {
            throw new IllegalArgumentException("need a matrix (rank 2), got shape " + java.util.Arrays.toString(a.shape()));
        }
        DistributedMatrix m = new DistributedMatrix(type, (int) a.rows(), (int) a.columns(), tileSize, distribution);
        INDArray f = a.castTo(type == DType.F64 ? DataType.DOUBLE : DataType.FLOAT).dup('f');
        if (type == DType.F64) {
            m.fromColumnMajor(f.data().asDouble());
        } else {
            m.fromColumnMajorF(f.data().asFloat());
        }
        return m;
    }

    /** The whole matrix as an INDArray of DOUBLE (F64) or FLOAT (F32). */
    public INDArray toINDArray() {
        long[] shape = {rows, cols};
        if (type == DType.F64) {
            return Nd4j.create(toColumnMajor(), shape, 'f');
        }
        return Nd4j.create(toColumnMajorF(), shape, 'f');
    }

    /** Entries uniform in [-0.5, 0.5), determined by the seed and the entry's position. */
    public static DistributedMatrix random(DType type, int rows, int cols, int tileSize, long seed) {
        DistributedMatrix m = zeros(type, rows, cols, tileSize);
        m.fill((r, c) -> uniform(seed, r, c));
        return m;
    }

    /** Symmetric positive definite: a symmetric random matrix plus n on the diagonal (strictly diagonally dominant). */
    public static DistributedMatrix spd(DType type, int n, int tileSize, long seed) {
        DistributedMatrix m = zeros(type, n, n, tileSize);
        m.fill((r, c) -> uniform(seed, Math.min(r, c), Math.max(r, c)) + (r == c ? n : 0));
        return m;
    }

    /** Non-symmetric, strictly diagonally dominant by rows: random plus n on the diagonal. */
    public static DistributedMatrix diagonallyDominant(DType type, int n, int tileSize, long seed) {
        DistributedMatrix m = zeros(type, n, n, tileSize);
        m.fill((r, c) -> uniform(seed, r, c) + (r == c ? n : 0));
        return m;
    }

    /** Element generator for {@link #fill}. */
    @FunctionalInterface
    public interface ElementFunction {
        double at(int row, int col);
    }

    /** Sets every entry from {@code f}, tile by tile. */
    public void fill(ElementFunction f) {
        for (int i = 0; i < mt; i++) {
            for (int j = 0; j < nt; j++) {
                Tile t = tiles[i][j];
                int r0 = i * nb;
                int c0 = j * nb;
                for (int c = 0; c < t.cols(); c++) {
                    for (int r = 0; r < t.rows(); r++) {
                        t.setFlat(c * t.ld() + r, f.at(r0 + r, c0 + c));
                    }
                }
            }
        }
    }

    /** A hash of (seed, r, c) mapped to [-0.5, 0.5): SplitMix64's finalizer over a mixed key. */
    static double uniform(long seed, long r, long c) {
        long z = seed + 0x9E3779B97F4A7C15L * (r + 1) + 0xC2B2AE3D27D4EB4FL * (c + 1);
        z = (z ^ (z >>> 30)) * 0xBF58476D1CE4E5B9L;
        z = (z ^ (z >>> 27)) * 0x94D049BB133111EBL;
        z = z ^ (z >>> 31);
        return (z >>> 11) * 0x1.0p-53 - 0.5;
    }

    public DType type() {
        return type;
    }

    public int rows() {
        return rows;
    }

    public int cols() {
        return cols;
    }

    /** The nominal (interior) tile size. */
    public int tileSize() {
        return nb;
    }

    /** Number of tile rows. */
    public int mt() {
        return mt;
    }

    /** Number of tile columns. */
    public int nt() {
        return nt;
    }

    public int tileRows(int i) {
        return Math.min(nb, rows - i * nb);
    }

    public int tileCols(int j) {
        return Math.min(nb, cols - j * nb);
    }

    public Tile tile(int i, int j) {
        return tiles[i][j];
    }

    public Distribution distribution() {
        return distribution;
    }

    public TileOwner owner(int i, int j) {
        return distribution.owner(i, j);
    }

    public double get(int r, int c) {
        checkIndex(r, c);
        return tiles[r / nb][c / nb].get(r % nb, c % nb);
    }

    public void set(int r, int c, double v) {
        checkIndex(r, c);
        tiles[r / nb][c / nb].set(r % nb, c % nb, v);
    }

    private void checkIndex(int r, int c) {
        if (r < 0 || r >= rows || c < 0 || c >= cols) {
            throw new IndexOutOfBoundsException("(" + r + ", " + c + ") is outside a " + rows + "x" + cols + " matrix");
        }
    }

    /** The matrix as one column-major double array (leading dimension = rows). */
    public double[] toColumnMajor() {
        double[] out = new double[Math.multiplyExact(rows, cols)];
        for (int i = 0; i < mt; i++) {
            for (int j = 0; j < nt; j++) {
                Tile t = tiles[i][j];
                for (int c = 0; c < t.cols(); c++) {
                    int dst = (j * nb + c) * rows + i * nb;
                    if (type == DType.F64) {
                        t.f64Buffer().get(c * t.ld(), out, dst, t.rows());
                    } else {
                        FloatBuffer fb = t.f32Buffer();
                        for (int r = 0; r < t.rows(); r++) {
                            out[dst + r] = fb.get(c * t.ld() + r);
                        }
                    }
                }
            }
        }
        return out;
    }

    private float[] toColumnMajorF() {
        float[] out = new float[Math.multiplyExact(rows, cols)];
        for (int i = 0; i < mt; i++) {
            for (int j = 0; j < nt; j++) {
                Tile t = tiles[i][j];
                for (int c = 0; c < t.cols(); c++) {
                    t.f32Buffer().get(c * t.ld(), out, (j * nb + c) * rows + i * nb, t.rows());
                }
            }
        }
        return out;
    }

    /** Overwrites the matrix from a column-major array with leading dimension rows. */
    public void fromColumnMajor(double[] a) {
        if (a.length != (long) rows * cols) {
            throw new IllegalArgumentException("expected " + (long) rows * cols + " elements for " + rows + "x" + cols + ", got " + a.length);
        }
        for (int i = 0; i < mt; i++) {
            for (int j = 0; j < nt; j++) {
                Tile t = tiles[i][j];
                for (int c = 0; c < t.cols(); c++) {
                    int src = (j * nb + c) * rows + i * nb;
                    if (type == DType.F64) {
                        t.f64Buffer().put(c * t.ld(), a, src, t.rows());
                    } else {
                        FloatBuffer fb = t.f32Buffer();
                        for (int r = 0; r < t.rows(); r++) {
                            fb.put(c * t.ld() + r, (float) a[src + r]);
                        }
                    }
                }
            }
        }
    }

    private void fromColumnMajorF(float[] a) {
        for (int i = 0; i < mt; i++) {
            for (int j = 0; j < nt; j++) {
                Tile t = tiles[i][j];
                for (int c = 0; c < t.cols(); c++) {
                    t.f32Buffer().put(c * t.ld(), a, (j * nb + c) * rows + i * nb, t.rows());
                }
            }
        }
    }

    /** An independent copy with the same tiling and distribution. */
    public DistributedMatrix copy() {
        DistributedMatrix m = new DistributedMatrix(type, rows, cols, nb, distribution);
        for (int i = 0; i < mt; i++) {
            for (int j = 0; j < nt; j++) {
                m.tiles[i][j].copyFrom(tiles[i][j]);
            }
        }
        return m;
    }

    /** A new cols x rows matrix holding the transpose, same tile size, all on this matrix's distribution kind. */
    public DistributedMatrix transpose() {
        DistributedMatrix m = new DistributedMatrix(type, cols, rows, nb, distribution);
        for (int i = 0; i < mt; i++) {
            for (int j = 0; j < nt; j++) {
                Tile s = tiles[i][j];
                Tile d = m.tiles[j][i];
                for (int c = 0; c < s.cols(); c++) {
                    for (int r = 0; r < s.rows(); r++) {
                        d.setFlat(r * d.ld() + c, s.getFlat(c * s.ld() + r));
                    }
                }
            }
        }
        return m;
    }

    /** Frobenius norm, summed per tile. */
    public double normFrobenius() {
        double sum = 0;
        for (Tile[] row : tiles) {
            for (Tile t : row) {
                double s = 0;
                for (int k = 0; k < t.size(); k++) {
                    double v = t.getFlat(k);
                    s += v * v;
                }
                sum += s;
            }
        }
        return Math.sqrt(sum);
    }

    /** Largest absolute entry. */
    public double normMax() {
        double m = 0;
        for (Tile[] row : tiles) {
            for (Tile t : row) {
                for (int k = 0; k < t.size(); k++) {
                    m = Math.max(m, Math.abs(t.getFlat(k)));
                }
            }
        }
        return m;
    }

    /** Largest column sum of absolute values. */
    public double norm1() {
        double[] colSums = new double[cols];
        for (int i = 0; i < mt; i++) {
            for (int j = 0; j < nt; j++) {
                Tile t = tiles[i][j];
                for (int c = 0; c < t.cols(); c++) {
                    for (int r = 0; r < t.rows(); r++) {
                        colSums[j * nb + c] += Math.abs(t.getFlat(c * t.ld() + r));
                    }
                }
            }
        }
        return java.util.Arrays.stream(colSums).max().orElse(0);
    }

    /** Largest row sum of absolute values. */
    public double normInf() {
        double[] rowSums = new double[rows];
        for (int i = 0; i < mt; i++) {
            for (int j = 0; j < nt; j++) {
                Tile t = tiles[i][j];
                for (int c = 0; c < t.cols(); c++) {
                    for (int r = 0; r < t.rows(); r++) {
                        rowSums[i * nb + r] += Math.abs(t.getFlat(c * t.ld() + r));
                    }
                }
            }
        }
        return java.util.Arrays.stream(rowSums).max().orElse(0);
    }

    /** Shape, tiling and type for messages: {@code 1000x700 F64 in 256x256 tiles}. */
    public String describe() {
        return rows + "x" + cols + " " + type + " in " + nb + "x" + nb + " tiles";
    }

    /** Frees every tile's native memory. */
    @Override
    public void close() {
        for (Tile[] row : tiles) {
            for (Tile t : row) {
                t.close();
            }
        }
    }

    @Override
    public String toString() {
        return "DistributedMatrix[" + describe() + ", " + distribution + "]";
    }

}
