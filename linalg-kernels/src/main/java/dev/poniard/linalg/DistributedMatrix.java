package dev.poniard.linalg;

import dev.poniard.linalg.dist.Distribution;
import dev.poniard.linalg.dist.TileOwner;
import dev.poniard.linalg.tile.Tile;
import dev.poniard.scheduler.comm.Communicator;
import java.nio.FloatBuffer;
import java.util.concurrent.CompletableFuture;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;

/**
 * A dense rows x cols matrix stored as a grid of contiguous column-major {@link Tile}s of
 * {@code tileSize x tileSize} (the last tile row and column may be smaller), with a {@link Distribution}
 * saying which rank and device owns each tile. In a one-process run every tile is held here. In an SPMD
 * run over several ranks each rank builds the same matrix object with its own {@code localRank}, and only
 * the tiles that rank owns are allocated: {@link #tile} of another rank's tile is an error, whole-matrix
 * views ({@link #toINDArray}, norms) need {@link #gather} first, and {@link TileAlgebra} moves tiles
 * between ranks as its kernels need them.
 *
 * <p>On a replicating distribution ({@link Distribution#replicated25d}) a rank also holds the copies of the
 * tiles its layer replicates: {@link #tile} returns whichever copy is held here, {@link #isLocal} says
 * whether it is the primary. The primary is authoritative; every {@link TileAlgebra} operation that writes
 * the matrix leaves every copy equal to it, and {@link TileAlgebra#gemm} computes on all layers at once (2.5D).
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
    private final int localRank;
    /** Null where this rank holds no copy of the tile. */
    private final Tile[][] tiles;
    /** Per layer of the distribution, the tiles as kernels name them there ({@link #layer}). */
    private final TileTasks.Tiles[] layers;

    private DistributedMatrix(DType type, int rows, int cols, int nb, Distribution distribution) {
        this(type, rows, cols, nb, distribution, 0);
    }

    private DistributedMatrix(DType type, int rows, int cols, int nb, Distribution distribution, int localRank) {
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
        if (localRank < 0 || localRank >= distribution.ranks()) {
            throw new IllegalArgumentException("local rank " + localRank + " is not a rank of " + distribution
                    + " (ranks 0.." + (distribution.ranks() - 1) + ")");
        }
        this.distribution = distribution;
        this.localRank = localRank;
        this.tiles = new Tile[mt][nt];
        for (int i = 0; i < mt; i++) {
            for (int j = 0; j < nt; j++) {
                for (int l = 0; l < distribution.layers() && tiles[i][j] == null; l++) {
                    if (distribution.replica(i, j, l).rank() == localRank) {
                        tiles[i][j] = Tile.allocate(type, tileRows(i), tileCols(j));
                    }
                }
            }
        }
        this.layers = new TileTasks.Tiles[distribution.layers()];
        layers[0] = view;
        for (int l = 1; l < layers.length; l++) {
            layers[l] = new LayerView(l);
        }
    }

    /** A zero matrix with square tiles of {@code tileSize}, all on rank 0. */
    public static DistributedMatrix zeros(DType type, int rows, int cols, int tileSize) {
        return zeros(type, rows, cols, tileSize, Distribution.single());
    }

    public static DistributedMatrix zeros(DType type, int rows, int cols, int tileSize, Distribution distribution) {
        return new DistributedMatrix(type, rows, cols, tileSize, distribution);
    }

    /**
     * The part of a zero matrix that rank {@code localRank} of {@code distribution} owns: the constructor
     * of SPMD programs, where every rank calls it with the same arguments but its own rank.
     */
    public static DistributedMatrix zeros(DType type, int rows, int cols, int tileSize, Distribution distribution,
                                          int localRank) {
        return new DistributedMatrix(type, rows, cols, tileSize, distribution, localRank);
    }

    /** Tiles a 2-D INDArray (any order, views included); FLOAT arrays give F32, every other type F64. */
    public static DistributedMatrix fromINDArray(INDArray a, int tileSize) {
        return fromINDArray(a, tileSize, a.dataType() == DataType.FLOAT ? DType.F32 : DType.F64, Distribution.single());
    }

    public static DistributedMatrix fromINDArray(INDArray a, int tileSize, DType type, Distribution distribution) {
        return fromINDArray(a, tileSize, type, distribution, 0);
    }

    /** Rank {@code localRank}'s tiles of the whole matrix {@code a} (which every rank holds). */
    public static DistributedMatrix fromINDArray(INDArray a, int tileSize, DType type, Distribution distribution,
                                                 int localRank) {
        if (a.rank() != 2) {
            throw new IllegalArgumentException("need a matrix (rank 2), got shape " + java.util.Arrays.toString(a.shape()));
        }
        DistributedMatrix m = new DistributedMatrix(type, (int) a.rows(), (int) a.columns(), tileSize, distribution,
                localRank);
        INDArray f = a.castTo(type == DType.F64 ? DataType.DOUBLE : DataType.FLOAT).dup('f');
        if (type == DType.F64) {
            m.loadColumnMajor(f.data().asDouble());
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
        return random(type, rows, cols, tileSize, seed, Distribution.single(), 0);
    }

    /** Rank {@code localRank}'s tiles of {@link #random(DType, int, int, int, long)}: the same entries on any distribution. */
    public static DistributedMatrix random(DType type, int rows, int cols, int tileSize, long seed,
                                           Distribution distribution, int localRank) {
        DistributedMatrix m = zeros(type, rows, cols, tileSize, distribution, localRank);
        m.fill((r, c) -> uniform(seed, r, c));
        return m;
    }

    /** Symmetric positive definite: a symmetric random matrix plus n on the diagonal (strictly diagonally dominant). */
    public static DistributedMatrix spd(DType type, int n, int tileSize, long seed) {
        return spd(type, n, tileSize, seed, Distribution.single(), 0);
    }

    /** Rank {@code localRank}'s tiles of {@link #spd(DType, int, int, long)}: the same entries on any distribution. */
    public static DistributedMatrix spd(DType type, int n, int tileSize, long seed, Distribution distribution,
                                        int localRank) {
        DistributedMatrix m = zeros(type, n, n, tileSize, distribution, localRank);
        m.fill((r, c) -> uniform(seed, Math.min(r, c), Math.max(r, c)) + (r == c ? n : 0));
        return m;
    }

    /** Non-symmetric, strictly diagonally dominant by rows: random plus n on the diagonal. */
    public static DistributedMatrix diagonallyDominant(DType type, int n, int tileSize, long seed) {
        return diagonallyDominant(type, n, tileSize, seed, Distribution.single(), 0);
    }

    /** Rank {@code localRank}'s tiles of {@link #diagonallyDominant(DType, int, int, long)}. */
    public static DistributedMatrix diagonallyDominant(DType type, int n, int tileSize, long seed,
                                                       Distribution distribution, int localRank) {
        DistributedMatrix m = zeros(type, n, n, tileSize, distribution, localRank);
        m.fill((r, c) -> uniform(seed, r, c) + (r == c ? n : 0));
        return m;
    }

    /** Element generator for {@link #fill}. */
    @FunctionalInterface
    public interface ElementFunction {
        double at(int row, int col);
    }

    /** Sets every entry this rank holds from {@code f}, tile by tile. */
    public void fill(ElementFunction f) {
        for (int i = 0; i < mt; i++) {
            for (int j = 0; j < nt; j++) {
                Tile t = tiles[i][j];
                if (t == null) {
                    continue;
                }
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

    /** Tile (i, j); it must be one this rank holds ({@link #holds}): the primary or a replica. */
    public Tile tile(int i, int j) {
        Tile t = tiles[i][j];
        if (t == null) {
            throw new IllegalStateException("tile (" + i + ", " + j + ") of " + describe() + " lives on rank "
                    + distribution.owner(i, j).rank() + ", not on this rank " + localRank + " of " + distribution);
        }
        return t;
    }

    /** The primaries (layer 0) as kernels' tile source. */
    private final TileTasks.Tiles view = new LayerView(0);

    /** This matrix as kernels' tile source (one object per matrix: identity keys versions). */
    TileTasks.Tiles asTiles() {
        return view;
    }

    /**
     * The copies on layer {@code l} of a replicating distribution as kernels' tile source: tile (i, j) is
     * owned by its holder on that layer. Layer 0 is {@link #asTiles()}; a distribution with fewer layers
     * serves layer l from its layer l mod layers.
     */
    TileTasks.Tiles layer(int l) {
        return layers[l % layers.length];
    }

    /** One layer's copies: each layer its own identity, so its versions are counted apart from the others'. */
    private final class LayerView implements TileTasks.Tiles {
        private final int layer;

        LayerView(int layer) {
            this.layer = layer;
        }

        @Override
        public Tile tile(int i, int j) {
            return DistributedMatrix.this.tile(i, j);
        }

        @Override
        public int ownerRank(int i, int j) {
            return distribution.replica(i, j, layer).rank();
        }

        @Override
        public int mt() {
            return mt;
        }

        @Override
        public int nt() {
            return nt;
        }

        @Override
        public Tile allocateLike(int i, int j) {
            return Tile.allocate(type, tileRows(i), tileCols(j));
        }

        @Override
        public String describe() {
            return layer == 0 ? DistributedMatrix.this.toString() : DistributedMatrix.this + " layer " + layer;
        }
    }

    /** Whether this rank owns tile (i, j): holds its primary copy. */
    public boolean isLocal(int i, int j) {
        return distribution.owner(i, j).rank() == localRank;
    }

    /** Whether this rank holds a copy of tile (i, j): the primary or, on a replicating distribution, a replica. */
    public boolean holds(int i, int j) {
        return tiles[i][j] != null;
    }

    /** The rank whose tiles this object holds. */
    public int localRank() {
        return localRank;
    }

    /** Whether every tile is held here (a one-rank distribution). */
    public boolean isWhole() {
        return distribution.ranks() == 1;
    }

    private void requireWhole(String what) {
        if (!isWhole()) {
            throw new IllegalStateException(what + " needs the whole matrix, but " + describe() + " is spread over "
                    + distribution.ranks() + " ranks (" + distribution + "); gather it to one rank first");
        }
    }

    /**
     * Collects the whole matrix on rank {@code root} of {@code comm} (whose size must equal the
     * distribution's ranks): returns a one-rank copy there and null on the other ranks. Collective: every
     * rank calls it. Tiles travel point to point with tags above {@link #GATHER_TAG_BASE}, which the
     * algebra's own transfers never use.
     */
    public DistributedMatrix gather(Communicator comm, int root) {
        if (comm.size() != distribution.ranks() || comm.rank() != localRank) {
            throw new IllegalArgumentException("gather: communicator is rank " + comm.rank() + " of " + comm.size()
                    + " but the matrix is rank " + localRank + "'s part of " + distribution);
        }
        long bytesPer = type.bytes();
        if (comm.rank() != root) {
            for (int j = 0; j < nt; j++) {
                for (int i = 0; i < mt; i++) {
                    if (isLocal(i, j)) {
                        comm.send(tiles[i][j].pointer().address(), tiles[i][j].size() * bytesPer, root, gatherTag(i, j));
                    }
                }
            }
            return null;
        }
        DistributedMatrix whole = zeros(type, rows, cols, nb);
        try {
            java.util.List<CompletableFuture<Long>> pending = new java.util.ArrayList<>();
            for (int j = 0; j < nt; j++) {
                for (int i = 0; i < mt; i++) {
                    Tile dst = whole.tiles[i][j];
                    if (isLocal(i, j)) {
                        dst.copyFrom(tiles[i][j]);
                    } else {
                        int src = distribution.owner(i, j).rank();
                        pending.add(comm.irecv(dst.pointer().address(), dst.size() * bytesPer, src, gatherTag(i, j)));
                    }
                }
            }
            for (CompletableFuture<Long> f : pending) {
                f.join();
            }
            return whole;
        } catch (RuntimeException e) {
            whole.close();
            throw e;
        }
    }

    /** First tag of {@link #gather}; tile transfers of {@link TileAlgebra} stay below it. */
    public static final int GATHER_TAG_BASE = 1 << 30;

    private int gatherTag(int i, int j) {
        return GATHER_TAG_BASE + (int) (((long) j * mt + i) % (Integer.MAX_VALUE - GATHER_TAG_BASE));
    }

    public Distribution distribution() {
        return distribution;
    }

    public TileOwner owner(int i, int j) {
        return distribution.owner(i, j);
    }

    public double get(int r, int c) {
        requireWhole("get");
        checkIndex(r, c);
        return tiles[r / nb][c / nb].get(r % nb, c % nb);
    }

    public void set(int r, int c, double v) {
        requireWhole("set");
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
        requireWhole("toColumnMajor");
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
        requireWhole("toINDArray");
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
        requireWhole("fromColumnMajor");
        loadColumnMajor(a);
    }

    /** Fills the tiles held here from the whole matrix in column-major order. */
    private void loadColumnMajor(double[] a) {
        if (a.length != (long) rows * cols) {
            throw new IllegalArgumentException("expected " + (long) rows * cols + " elements for " + rows + "x" + cols + ", got " + a.length);
        }
        for (int i = 0; i < mt; i++) {
            for (int j = 0; j < nt; j++) {
                Tile t = tiles[i][j];
                if (t == null) {
                    continue;
                }
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
                if (t == null) {
                    continue;
                }
                for (int c = 0; c < t.cols(); c++) {
                    t.f32Buffer().put(c * t.ld(), a, (j * nb + c) * rows + i * nb, t.rows());
                }
            }
        }
    }

    /** An independent copy with the same tiling and distribution. */
    public DistributedMatrix copy() {
        DistributedMatrix m = new DistributedMatrix(type, rows, cols, nb, distribution, localRank);
        for (int i = 0; i < mt; i++) {
            for (int j = 0; j < nt; j++) {
                if (tiles[i][j] != null) {
                    m.tiles[i][j].copyFrom(tiles[i][j]);
                }
            }
        }
        return m;
    }

    /** A new cols x rows matrix holding the transpose, same tile size, all on this matrix's distribution kind. */
    public DistributedMatrix transpose() {
        requireWhole("transpose");
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
        requireWhole("normFrobenius");
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
        requireWhole("normMax");
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
        requireWhole("norm1");
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
        requireWhole("normInf");
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
                if (t != null) {
                    t.close();
                }
            }
        }
    }

    @Override
    public String toString() {
        return "DistributedMatrix[" + describe() + ", " + distribution
                + (isWhole() ? "" : ", rank " + localRank + "'s tiles") + "]";
    }

}
