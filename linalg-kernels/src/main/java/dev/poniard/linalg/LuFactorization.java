package dev.poniard.linalg;

/**
 * Result of {@link TileAlgebra#lu}: the factored matrix (U on and above the diagonal, unit-lower L
 * below) and the row interchanges, LAPACK style but 0-based: row r was swapped with row
 * {@code pivots()[r]}, for r = 0, 1, ... in order.
 */
public record LuFactorization(DistributedMatrix factors, int[] pivots) {
    /** The permutation as a row order: row r of P A is row {@code perm[r]} of A. */
    public int[] permutation() {
        int[] perm = new int[factors.rows()];
        for (int r = 0; r < perm.length; r++) {
            perm[r] = r;
        }
        for (int r = 0; r < pivots.length; r++) {
            int p = pivots[r];
            int t = perm[r];
            perm[r] = perm[p];
            perm[p] = t;
        }
        return perm;
    }
}
