package dev.poniard.linalg;

import dev.poniard.linalg.dist.Distribution;
import dev.poniard.linalg.tile.Tile;
import dev.poniard.linalg.tile.TileKernels;

/**
 * Result of {@link TileAlgebra#qr}: the factored matrix (R in its upper triangle, reflectors below and in
 * the tiles under the diagonal), the block-reflector factors T of every GEQRT (i = k) and TPQRT (i > k)
 * step, and a copy of each diagonal tile's reflectors. T and V of tile column k live on the rank that factored
 * that column: its owner in {@link #factors()}, or, where that distribution splits tile columns over ranks, in
 * the 1D cyclic by columns copy that {@link TileAlgebra#qr} factored. Holds native memory for T and V: close it.
 */
public final class QrFactorization implements AutoCloseable {
    private final DistributedMatrix factors;
    private final TileSet t;
    private final TileSet v;
    private final int innerBlock;

    QrFactorization(DistributedMatrix factors, TileSet t, TileSet v, int innerBlock) {
        this.factors = factors;
        this.t = t;
        this.v = v;
        this.innerBlock = innerBlock;
    }

    /**
     * Empty T and reflector tiles for a QR of {@code a} with inner block size {@code innerBlock}, allocated on the rank
     * that owns each tile column (row 0's owner): T of step k and tile row i >= k is min(ib, r) x w for the tile
     * column's width w and r = min(rows, w) reflectors at i = k, w at i > k. For implementations of the factorization
     * other than {@link TileAlgebra#qr} (the device algebra), which fill {@link #t} and {@link #v} as LAPACK's
     * geqrt/tpqrt leave them; the result owns the tiles (close it).
     */
    public static QrFactorization allocate(DistributedMatrix a, int innerBlock) {
        if (innerBlock < 1) {
            throw new IllegalArgumentException("innerBlock must be >= 1, got " + innerBlock);
        }
        Distribution d = a.distribution();
        int steps = Math.min(a.mt(), a.nt());
        int me = a.localRank();
        TileSet t = new TileSet("T factors of the QR of " + a.describe(), a.type(), a.mt(), steps, (i, k) -> {
            if (i < k) {
                return null;
            }
            int w = a.tileCols(k);
            int refl = i == k ? Math.min(a.tileRows(k), w) : w;
            return new int[] {TileKernels.tRows(innerBlock, refl), w};
        }, (i, k) -> d.owner(0, k).rank(), me);
        TileSet v = new TileSet("reflectors of the QR of " + a.describe(), a.type(), steps, 1,
                (k, z) -> new int[] {a.tileRows(k), a.tileCols(k)}, (k, z) -> d.owner(0, k).rank(), me);
        return new QrFactorization(a, t, v, innerBlock);
    }

    public DistributedMatrix factors() {
        return factors;
    }

    /** The same T and V (this object's, now owned by the result) for factors copied into {@code a}. */
    QrFactorization withFactors(DistributedMatrix a) {
        return new QrFactorization(a, t, v, innerBlock);
    }

    /** T factors of step k for tile row i (i >= k); null on a rank that did not factor tile column k. */
    public Tile t(int i, int k) {
        return t.orNull(i, k);
    }

    /** Reflectors of diagonal tile k, as GEQRT left them; null on a rank that did not factor tile column k. */
    public Tile v(int k) {
        return v.orNull(k, 0);
    }

    public int innerBlock() {
        return innerBlock;
    }

    /** T as kernels name it: entry (i, k), owned by the rank that factored tile column k. */
    TileTasks.Tiles tFactors() {
        return t;
    }

    /** The reflector copies as kernels name them: entry (k, 0), owned by the rank that factored tile column k. */
    TileTasks.Tiles reflectors() {
        return v;
    }

    /** Frees T and V (not the factored matrix, which the caller owns). */
    @Override
    public void close() {
        t.close();
        v.close();
    }
}
