package dev.poniard.linalg;

import dev.poniard.linalg.tile.Tile;

/**
 * Result of {@link TileAlgebra#qr}: the factored matrix (R in its upper triangle, reflectors below and in
 * the tiles under the diagonal), the block-reflector factors T of every GEQRT (i = k) and TPQRT (i > k)
 * step, and a copy of each diagonal tile's reflectors. Holds native memory for T and V: close it.
 */
public final class QrFactorization implements AutoCloseable {
    private final DistributedMatrix factors;
    private final Tile[][] t;
    private final Tile[] v;
    private final int innerBlock;

    QrFactorization(DistributedMatrix factors, Tile[][] t, Tile[] v, int innerBlock) {
        this.factors = factors;
        this.t = t;
        this.v = v;
        this.innerBlock = innerBlock;
    }

    public DistributedMatrix factors() {
        return factors;
    }

    /** T factors of step k for tile row i (i >= k); null on a rank that does not own tile column k. */
    public Tile t(int i, int k) {
        return t[i][k];
    }

    /** Reflectors of diagonal tile k, as GEQRT left them; null on a rank that does not own tile column k. */
    public Tile v(int k) {
        return v[k];
    }

    public int innerBlock() {
        return innerBlock;
    }

    /** Frees T and V (not the factored matrix, which the caller owns). */
    @Override
    public void close() {
        for (Tile[] row : t) {
            for (Tile x : row) {
                if (x != null) {
                    x.close();
                }
            }
        }
        for (Tile x : v) {
            if (x != null) {
                x.close();
            }
        }
    }
}
