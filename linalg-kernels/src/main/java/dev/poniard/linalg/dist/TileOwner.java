package dev.poniard.linalg.dist;

/** Where a tile lives: a process rank and a device (processor slot) inside it. */
public record TileOwner(int rank, int device) {
    public TileOwner {
        if (rank < 0 || device < 0) {
            throw new IllegalArgumentException("rank and device must be >= 0, got rank " + rank + ", device " + device);
        }
    }
}
