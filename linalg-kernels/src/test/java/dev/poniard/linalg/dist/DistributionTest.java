package dev.poniard.linalg.dist;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.poniard.linalg.dist.Distribution.Axis;
import java.util.HashSet;
import java.util.List;
import java.util.Set;
import org.junit.jupiter.api.Test;

class DistributionTest {
    @Test
    void shouldSplitColumnsIntoNearlyEqualContiguousBands() {
        Distribution d = Distribution.block1d(Axis.COLUMNS, 10, 3, 1);
        int[] expected = {0, 0, 0, 1, 1, 1, 2, 2, 2, 2};
        for (int j = 0; j < 10; j++) {
            assertEquals(new TileOwner(expected[j], 0), d.owner(5, j));
        }
        assertThrows(IndexOutOfBoundsException.class, () -> d.owner(0, 10));
    }

    @Test
    void shouldDealRowsCyclicallyAndInBlocks() {
        Distribution cyc = Distribution.cyclic1d(Axis.ROWS, 3, 1);
        Distribution blk = Distribution.blockCyclic1d(Axis.ROWS, 2, 3, 1);
        for (int i = 0; i < 12; i++) {
            assertEquals(i % 3, cyc.owner(i, 7).rank());
            assertEquals((i / 2) % 3, blk.owner(i, 7).rank());
        }
    }

    @Test
    void reflectedRowsGoBackAndForthFromTheLastTileRowAndColumnsCyclically() {
        Distribution d = Distribution.reflectedCyclic2d(2, 2, 8, 1);
        int[] gridRow = {0, 1, 1, 0, 0, 1, 1, 0}; // tile rows 0..7: the last row on grid row 0, then 1, 1, 0, 0, ...
        for (int i = 0; i < 8; i++) {
            for (int j = 0; j < 4; j++) {
                assertEquals(new TileOwner(gridRow[i] * 2 + j % 2, 0), d.owner(i, j), "tile (" + i + ", " + j + ")");
            }
        }
        assertEquals(d.owner(0, 0), d.owner(8, 0)); // past the last row the pattern continues: row 8 is one after row 7's
        assertEquals(4, d.ranks());
        assertThrows(IllegalArgumentException.class, () -> Distribution.reflectedCyclic2d(2, 1, 0, 1));
    }

    @Test
    void reflectedRowsBalanceCholeskyWorkBetterThanCyclicRows() {
        for (int mt = 6; mt <= 20; mt++) {
            double cyclic = heaviestShare(Distribution.blockCyclic2d(2, 1, 1, 1, 1), mt);
            double reflected = heaviestShare(Distribution.reflectedCyclic2d(2, 1, mt, 1), mt);
            assertTrue(reflected <= cyclic && reflected < 0.55, mt + " tile rows: reflected " + reflected + ", cyclic " + cyclic);
        }
    }

    /** The largest share of the lower-triangular updates (tile row i: i(i+1)/2 of them) that one of 2 ranks holds. */
    private static double heaviestShare(Distribution d, int mt) {
        double[] work = new double[2];
        double total = 0;
        for (int i = 0; i < mt; i++) {
            work[d.owner(i, 0).rank()] += i * (i + 1) / 2.0;
            total += i * (i + 1) / 2.0;
        }
        return Math.max(work[0], work[1]) / total;
    }

    @Test
    void shouldMapSlotsToRanksAndDevices() {
        // 2 ranks with 2 devices each: slots 0..3 are (0,0), (0,1), (1,0), (1,1).
        Distribution d = Distribution.cyclic1d(Axis.COLUMNS, 2, 2);
        assertEquals(new TileOwner(0, 0), d.owner(0, 0));
        assertEquals(new TileOwner(0, 1), d.owner(0, 1));
        assertEquals(new TileOwner(1, 0), d.owner(0, 2));
        assertEquals(new TileOwner(1, 1), d.owner(0, 3));
        assertEquals(new TileOwner(0, 0), d.owner(0, 4));
    }

    @Test
    void shouldFollowScalapackTwoDimensionalBlockCyclic() {
        // 2 x 3 grid, 1 x 1 blocks: tile (i, j) on grid position (i mod 2, j mod 3), row-major slots.
        Distribution d = Distribution.blockCyclic2d(2, 3, 1, 1, 1);
        assertEquals(6, d.ranks());
        for (int i = 0; i < 7; i++) {
            for (int j = 0; j < 7; j++) {
                assertEquals((i % 2) * 3 + j % 3, d.owner(i, j).rank());
            }
        }
        // 2 x 2 tile blocks.
        Distribution b = Distribution.blockCyclic2d(2, 2, 2, 2, 1);
        assertEquals(0, b.owner(1, 1).rank());
        assertEquals(1, b.owner(1, 2).rank());
        assertEquals(3, b.owner(2, 3).rank());
        assertEquals(0, b.owner(4, 5).rank());
    }

    @Test
    void shouldBalanceTilesOverTheGrid() {
        Distribution d = Distribution.blockCyclic2d(2, 2, 1, 1, 1);
        int[] counts = new int[4];
        for (int r = 0; r < 4; r++) {
            counts[r] = d.localTiles(r, 8, 8).size();
        }
        assertEquals(List.of(16, 16, 16, 16), java.util.Arrays.stream(counts).boxed().toList());
    }

    @Test
    void shouldReplicateEveryTileOncePerLayerIn25d() {
        Distribution d = Distribution.replicated25d(2, 2, 3, 1);
        assertEquals(12, d.ranks());
        for (int i = 0; i < 5; i++) {
            for (int j = 0; j < 5; j++) {
                List<TileOwner> reps = d.replicas(i, j);
                assertEquals(3, reps.size());
                Set<Integer> ranks = new HashSet<>();
                for (int l = 0; l < 3; l++) {
                    assertEquals(l * 4 + (i % 2) * 2 + j % 2, reps.get(l).rank());
                    ranks.add(reps.get(l).rank());
                }
                assertEquals(3, ranks.size());
                assertEquals(reps.get(0), d.owner(i, j));
            }
        }
    }

    @Test
    void shouldRejectBadGrids() {
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> Distribution.blockCyclic2d(0, 2, 1, 1, 1));
        assertTrue(e.getMessage().contains("p must be >= 1, got 0"), e.getMessage());
        assertThrows(IllegalArgumentException.class, () -> Distribution.blockCyclic2d(3, 1, 1, 1, 2));
        assertThrows(IllegalArgumentException.class, () -> Distribution.cyclic1d(Axis.ROWS, 2, 0));
    }

    @Test
    void shouldPutEverythingOnRankZeroForOneProcess() {
        Distribution d = Distribution.single();
        assertEquals(new TileOwner(0, 0), d.owner(13, 7));
        assertEquals(1, d.ranks());
    }
}
