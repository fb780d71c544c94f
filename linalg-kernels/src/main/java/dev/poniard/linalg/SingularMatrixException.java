package dev.poniard.linalg;

/** An LU factorization produced an exactly zero pivot: the matrix is singular to working precision. */
public final class SingularMatrixException extends ArithmeticException {
    private static final long serialVersionUID = 1L;
    private final int tile;
    private final int column;

    public SingularMatrixException(int tile, int column) {
        super("matrix is singular: U(" + column + ", " + column + ") is exactly zero (column " + column
                + ", panel of tile column " + tile + "); the system has no unique solution");
        this.tile = tile;
        this.column = column;
    }

    /** Tile column of the panel with the zero pivot. */
    public int tile() {
        return tile;
    }

    /** 0-based global column of the zero pivot. */
    public int column() {
        return column;
    }
}
