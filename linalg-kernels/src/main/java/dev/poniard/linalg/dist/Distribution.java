package dev.poniard.linalg.dist;

import java.util.ArrayList;
import java.util.List;

/**
 * Maps every tile (i, j) of an mt x nt tile grid to its owner. Owners are numbered as <i>slots</i>
 * {@code 0 .. ranks*devicesPerRank-1}; slot s is device {@code s % devicesPerRank} of rank
 * {@code s / devicesPerRank}, so one descriptor covers "one rank per device" and "several devices per
 * rank" alike. The descriptors are pure functions of the tile index, so every rank of an SPMD program
 * computes the same owners without talking to the others.
 *
 * <ul>
 *   <li>{@link #block1d}: contiguous bands of tile columns (or rows), one band per slot.</li>
 *   <li>{@link #cyclic1d}: tile column (or row) j goes to slot j mod S.</li>
 *   <li>{@link #blockCyclic1d}: groups of b tile columns (or rows) dealt cyclically.</li>
 *   <li>{@link #blockCyclic2d}: ScaLAPACK's 2D block-cyclic over a P x Q grid with tile blocks of mb x nb.</li>
 *   <li>{@link #reflectedCyclic2d}: 2D cyclic with tile rows dealt back and forth from the last one, which
 *       balances the lower-triangular work of a Cholesky factorization.</li>
 *   <li>{@link #replicated25d}: 2.5D (Solomonik–Demmel): c layers, each a P x Q block-cyclic grid, every
 *       tile replicated once per layer; its primary owner is on layer 0.</li>
 * </ul>
 */
public interface Distribution {
    /** Which tile index a 1D distribution deals out. */
    enum Axis { ROWS, COLUMNS }

    /** The primary owner of tile (i, j): the one whose copy is authoritative. */
    TileOwner owner(int i, int j);

    /** Every holder of tile (i, j), layer by layer; a single owner unless the distribution replicates. */
    default List<TileOwner> replicas(int i, int j) {
        return List.of(owner(i, j));
    }

    /** Copies of every tile: the c of {@link #replicated25d}, 1 for every other distribution. */
    default int layers() {
        return 1;
    }

    /** The holder of tile (i, j) on {@code layer} (0 .. {@link #layers()}-1); layer 0 holds the primary. */
    default TileOwner replica(int i, int j, int layer) {
        if (layer != 0) {
            throw new IndexOutOfBoundsException("layer " + layer + " of " + this + ", which has 1 layer");
        }
        return owner(i, j);
    }

    /** Number of ranks the distribution spans. */
    int ranks();

    /** Devices (processor slots) per rank. */
    int devicesPerRank();

    /** Tiles of an mt x nt grid whose primary owner is {@code rank}, in column-major tile order. */
    default List<int[]> localTiles(int rank, int mt, int nt) {
        List<int[]> out = new ArrayList<>();
        for (int j = 0; j < nt; j++) {
            for (int i = 0; i < mt; i++) {
                if (owner(i, j).rank() == rank) {
                    out.add(new int[] {i, j});
                }
            }
        }
        return out;
    }

    /** Everything on rank 0, device 0: the one-process case. */
    static Distribution single() {
        return blockCyclic2d(1, 1, 1, 1, 1);
    }

    /** Contiguous bands: {@code tiles} tile columns (or rows) split into {@code slots} nearly equal bands. */
    static Distribution block1d(Axis axis, int tiles, int ranks, int devicesPerRank) {
        positive("tiles", tiles);
        int slots = slots(ranks, devicesPerRank);
        return new OneD(axis, ranks, devicesPerRank, idx -> {
            if (idx < 0 || idx >= tiles) {
                throw new IndexOutOfBoundsException("tile index " + idx + " is outside the " + tiles + " tiles this block distribution covers");
            }
            // Band s starts at floor(s * tiles / slots), so band sizes differ by at most one; the slot of
            // idx is the last band starting at or before it.
            return (int) (((long) (idx + 1) * slots - 1) / tiles);
        }, "block1d");
    }

    /** Tile column (or row) j on slot j mod S. */
    static Distribution cyclic1d(Axis axis, int ranks, int devicesPerRank) {
        int slots = slots(ranks, devicesPerRank);
        return new OneD(axis, ranks, devicesPerRank, idx -> Math.floorMod(idx, slots), "cyclic1d");
    }

    /** Blocks of {@code block} tile columns (or rows) dealt cyclically. */
    static Distribution blockCyclic1d(Axis axis, int block, int ranks, int devicesPerRank) {
        positive("block", block);
        int slots = slots(ranks, devicesPerRank);
        return new OneD(axis, ranks, devicesPerRank, idx -> Math.floorMod(idx / block, slots), "blockCyclic1d");
    }

    /**
     * 2D block-cyclic over a {@code p x q} grid of slots (row-major slot numbering, as ScaLAPACK's default
     * grid), blocks of {@code mb x nb} tiles. Needs {@code p * q == ranks * devicesPerRank}.
     */
    static Distribution blockCyclic2d(int p, int q, int mb, int nb, int devicesPerRank) {
        positive("mb", mb);
        positive("nb", nb);
        return new Grid(p, q, mb, nb, 1, gridRanks(p, q, devicesPerRank), devicesPerRank);
    }

    /**
     * 2D cyclic over a {@code p x q} grid of slots (row-major slot numbering) whose tile rows are dealt back and
     * forth, counted up from the last of {@code mt} rows: grid rows 0, 1, .., p-1, p-1, .., 0, 0, 1, ... Tile
     * columns are dealt cyclically as in {@link #blockCyclic2d}. In a Cholesky factorization tile row i receives
     * about i²/2 updates, so plain cyclic rows give the last grid row the heaviest row of every round: at 8 tile
     * rows over 2 ranks it gets 60% of the work, here 52%. Tile rows at or past {@code mt} continue the pattern.
     */
    static Distribution reflectedCyclic2d(int p, int q, int mt, int devicesPerRank) {
        positive("mt", mt);
        return new Reflected(p, q, mt, gridRanks(p, q, devicesPerRank), devicesPerRank);
    }

    /**
     * 2.5D: {@code c} layers of a {@code p x q} block-cyclic grid (tile blocks 1 x 1); layer l holds slots
     * {@code l*p*q .. (l+1)*p*q-1}. Every tile has c replicas, one per layer; layer 0 holds the primary.
     * With c = 1 this is plain 2D block-cyclic; a 3D distribution is p = q = c. A
     * {@link dev.poniard.linalg.DistributedMatrix} on it holds every layer's copy on that layer's ranks, and
     * {@link dev.poniard.linalg.TileAlgebra#gemm} with C on it runs 2.5D GEMM.
     */
    static Distribution replicated25d(int p, int q, int c, int devicesPerRank) {
        positive("p", p);
        positive("q", q);
        positive("c", c);
        positive("devicesPerRank", devicesPerRank);
        if ((p * q * c) % devicesPerRank != 0) {
            throw new IllegalArgumentException(p + "x" + q + "x" + c + " slots is not a multiple of " + devicesPerRank
                    + " devices per rank");
        }
        return new Grid(p, q, 1, 1, c, p * q * c / devicesPerRank, devicesPerRank);
    }

    /**
     * 2.5D over {@code ranks} ranks, one device each: c layers of the most square p x q grid (p <= q) of
     * {@code ranks / c} ranks. {@code c} must divide {@code ranks}.
     */
    static Distribution replicated25d(int ranks, int c) {
        positive("ranks", ranks);
        positive("c", c);
        if (ranks % c != 0) {
            throw new IllegalArgumentException("replication factor c = " + c + " does not divide " + ranks
                    + " ranks; each of the c layers needs ranks / c of them");
        }
        int perLayer = ranks / c;
        int p = (int) Math.sqrt(perLayer);
        while (perLayer % p != 0) {
            p--;
        }
        return replicated25d(p, perLayer / p, c, 1);
    }

    /** Ranks of a {@code p x q} grid of slots with {@code devicesPerRank} slots per rank. */
    private static int gridRanks(int p, int q, int devicesPerRank) {
        positive("p", p);
        positive("q", q);
        positive("devicesPerRank", devicesPerRank);
        if ((p * q) % devicesPerRank != 0) {
            throw new IllegalArgumentException("a " + p + "x" + q + " grid has " + p * q + " slots, not a multiple of "
                    + devicesPerRank + " devices per rank");
        }
        return p * q / devicesPerRank;
    }

    private static int slots(int ranks, int devicesPerRank) {
        positive("ranks", ranks);
        positive("devicesPerRank", devicesPerRank);
        return ranks * devicesPerRank;
    }

    private static void positive(String what, int v) {
        if (v < 1) {
            throw new IllegalArgumentException(what + " must be >= 1, got " + v);
        }
    }

    /** Owner from a slot number. */
    private static TileOwner slot(int s, int devicesPerRank) {
        return new TileOwner(s / devicesPerRank, s % devicesPerRank);
    }

    /** A 1D distribution: a slot function of the row or column tile index. */
    record OneD(Axis axis, int ranks, int devicesPerRank, java.util.function.IntUnaryOperator slotOf, String kind)
            implements Distribution {
        @Override
        public TileOwner owner(int i, int j) {
            return slot(slotOf.applyAsInt(axis == Axis.COLUMNS ? j : i), devicesPerRank);
        }

        @Override
        public String toString() {
            return kind + "(" + axis + ", " + ranks + " ranks x " + devicesPerRank + " devices)";
        }
    }

    /** {@link #reflectedCyclic2d}: grid row of tile row i from its distance to the last tile row, mt - 1. */
    record Reflected(int p, int q, int mt, int ranks, int devicesPerRank) implements Distribution {
        @Override
        public TileOwner owner(int i, int j) {
            if (i < 0 || j < 0) {
                throw new IndexOutOfBoundsException("tile (" + i + ", " + j + ") has a negative index");
            }
            int x = Math.floorMod(mt - 1 - i, 2 * p);
            int pr = x < p ? x : 2 * p - 1 - x;
            return slot(pr * q + j % q, devicesPerRank);
        }

        @Override
        public String toString() {
            return "reflectedCyclic2d(" + p + "x" + q + ", rows dealt back and forth from tile row " + (mt - 1) + ")";
        }
    }

    /** P x Q block-cyclic grids, replicated over c layers. */
    record Grid(int p, int q, int mb, int nb, int c, int ranks, int devicesPerRank) implements Distribution {
        @Override
        public TileOwner owner(int i, int j) {
            return onLayer(i, j, 0);
        }

        @Override
        public List<TileOwner> replicas(int i, int j) {
            List<TileOwner> out = new ArrayList<>(c);
            for (int l = 0; l < c; l++) {
                out.add(onLayer(i, j, l));
            }
            return out;
        }

        @Override
        public int layers() {
            return c;
        }

        @Override
        public TileOwner replica(int i, int j, int layer) {
            if (layer < 0 || layer >= c) {
                throw new IndexOutOfBoundsException("layer " + layer + " of " + this + ", which has " + c + " layers");
            }
            return onLayer(i, j, layer);
        }

        private TileOwner onLayer(int i, int j, int layer) {
            if (i < 0 || j < 0) {
                throw new IndexOutOfBoundsException("tile (" + i + ", " + j + ") has a negative index");
            }
            int pr = (i / mb) % p;
            int pc = (j / nb) % q;
            return slot(layer * p * q + pr * q + pc, devicesPerRank);
        }

        @Override
        public String toString() {
            return c == 1 ? "blockCyclic2d(" + p + "x" + q + ", blocks " + mb + "x" + nb + ")"
                    : "replicated25d(" + p + "x" + q + "x" + c + ")";
        }
    }
}
