package dev.poniard.linalg.tile;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;

import dev.poniard.linalg.DType;
import java.util.Random;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.EnumSource;

/** Row interchanges over a stack of tiles against the same swaps on one dense array, row by row. */
class TileCopyTest {
    @ParameterizedTest
    @EnumSource(DType.class)
    void interchangeRowsAppliesEverySwapInOrderAcrossTilesAndAShortLastTile(DType type) {
        int nb = 6;
        int cols = 11; // not a multiple of the sweep width
        int[] heights = {nb, nb, 4};
        int rows = nb + nb + 4;
        Random rnd = new Random(7);
        double[][] dense = new double[rows][cols];
        Tile[] stack = new Tile[heights.length];
        for (int t = 0; t < stack.length; t++) {
            stack[t] = Tile.allocate(type, heights[t], cols);
            for (int r = 0; r < heights[t]; r++) {
                for (int c = 0; c < cols; c++) {
                    double v = rnd.nextInt(1000);
                    stack[t].set(r, c, v);
                    dense[t * nb + r][c] = v;
                }
            }
        }
        // Partial pivoting's shape: row r swaps with a row at or below it, sometimes with itself; the same target twice.
        int[] to = {3, 1, 15, 15, 7, 12};
        for (int r = 0; r < to.length; r++) {
            double[] keep = dense[r];
            dense[r] = dense[to[r]];
            dense[to[r]] = keep;
        }
        TileCopy.interchangeRows(stack, nb, to);
        for (int t = 0; t < stack.length; t++) {
            for (int r = 0; r < heights[t]; r++) {
                for (int c = 0; c < cols; c++) {
                    assertEquals(dense[t * nb + r][c], stack[t].get(r, c), "row " + (t * nb + r) + ", column " + c);
                }
            }
        }
        for (Tile t : stack) {
            t.close();
        }
    }

    @ParameterizedTest
    @EnumSource(DType.class)
    void interchangeRowsRefusesAStackOfMismatchedTiles(DType type) {
        try (Tile a = Tile.allocate(type, 4, 3); Tile b = Tile.allocate(type, 4, 5)) {
            IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                    () -> TileCopy.interchangeRows(new Tile[] {a, b}, 4, new int[] {5}));
            assertEquals("tile 1 of the stack is a " + b.describe() + ", expected at most 4 rows and 3 columns of " + type,
                    e.getMessage());
        }
    }
}
