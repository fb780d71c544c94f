package dev.poniard.linalg;

/** A Cholesky factorization met a leading minor that is not positive definite. */
public final class NotPositiveDefiniteException extends ArithmeticException {
    private static final long serialVersionUID = 1L;
    private final int tile;
    private final int column;

    public NotPositiveDefiniteException(int tile, int column) {
        super("matrix is not positive definite: the leading minor of order " + (column + 1) + " is not (column "
                + column + ", in diagonal tile (" + tile + ", " + tile + ")); check that the matrix is symmetric "
                + "positive definite, or factor it with LU");
        this.tile = tile;
        this.column = column;
    }

    /** Index of the diagonal tile whose factorization failed. */
    public int tile() {
        return tile;
    }

    /** 0-based global column where positive definiteness fails. */
    public int column() {
        return column;
    }
}
