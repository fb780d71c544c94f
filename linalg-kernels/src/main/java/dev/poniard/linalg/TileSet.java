package dev.poniard.linalg;

import dev.poniard.linalg.tile.Tile;
import java.util.function.IntBinaryOperator;

/**
 * An mt x nt grid of tiles of individual shapes (QR's T factors and diagonal reflectors), each owned by
 * one rank and allocated only there; absent entries of the grid are neither allocated nor owned by
 * anyone in particular and must not be named.
 */
final class TileSet implements TileTasks.Tiles, AutoCloseable {
    /** Shape of entry (i, j), or null where the grid has no tile. */
    @FunctionalInterface
    interface Shape {
        int[] of(int i, int j);
    }

    private final String name;
    private final DType type;
    private final int mt;
    private final int nt;
    private final Shape shape;
    private final IntBinaryOperator owner;
    private final Tile[][] tiles;

    TileSet(String name, DType type, int mt, int nt, Shape shape, IntBinaryOperator owner, int localRank) {
        this.name = name;
        this.type = type;
        this.mt = mt;
        this.nt = nt;
        this.shape = shape;
        this.owner = owner;
        this.tiles = new Tile[mt][nt];
        for (int i = 0; i < mt; i++) {
            for (int j = 0; j < nt; j++) {
                int[] s = shape.of(i, j);
                if (s != null && owner.applyAsInt(i, j) == localRank) {
                    tiles[i][j] = Tile.allocate(type, s[0], s[1]);
                }
            }
        }
    }

    /** The tile, or null where another rank holds it or the grid has none. */
    Tile orNull(int i, int j) {
        return tiles[i][j];
    }

    @Override
    public Tile tile(int i, int j) {
        Tile t = tiles[i][j];
        if (t == null) {
            throw new IllegalStateException(name + " (" + i + ", " + j + ") is not held on this rank (owner: rank "
                    + owner.applyAsInt(i, j) + ")");
        }
        return t;
    }

    @Override
    public int ownerRank(int i, int j) {
        return owner.applyAsInt(i, j);
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
        int[] s = shape.of(i, j);
        if (s == null) {
            throw new IllegalArgumentException(name + " has no tile (" + i + ", " + j + ")");
        }
        return Tile.allocate(type, s[0], s[1]);
    }

    @Override
    public String describe() {
        return name + " (" + mt + "x" + nt + " tiles)";
    }

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
}
