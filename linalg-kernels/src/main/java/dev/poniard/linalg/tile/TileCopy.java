package dev.poniard.linalg.tile;

import dev.poniard.linalg.DType;
import java.nio.DoubleBuffer;
import java.nio.FloatBuffer;

/** Block copies and row swaps between tiles, by direct-buffer bulk moves (no shared pointer positions touched). */
public final class TileCopy {
    private TileCopy() {
    }

    /** Copies the {@code m x n} block at (sr, sc) of {@code src} to (dr, dc) of {@code dst}. */
    public static void block(Tile src, int sr, int sc, Tile dst, int dr, int dc, int m, int n) {
        if (sr + m > src.rows() || sc + n > src.cols() || dr + m > dst.rows() || dc + n > dst.cols()
                || src.type() != dst.type()) {
            throw new IllegalArgumentException("cannot copy a " + m + "x" + n + " block from (" + sr + ", " + sc + ") of a "
                    + src.describe() + " to (" + dr + ", " + dc + ") of a " + dst.describe());
        }
        if (src.type() == DType.F64) {
            DoubleBuffer s = src.f64Buffer();
            DoubleBuffer d = dst.f64Buffer();
            for (int c = 0; c < n; c++) {
                d.put((dc + c) * dst.ld() + dr, s, (sc + c) * src.ld() + sr, m);
            }
        } else {
            FloatBuffer s = src.f32Buffer();
            FloatBuffer d = dst.f32Buffer();
            for (int c = 0; c < n; c++) {
                d.put((dc + c) * dst.ld() + dr, s, (sc + c) * src.ld() + sr, m);
            }
        }
    }

    /** A new tile holding the top-left {@code m x n} block of {@code src}. */
    public static Tile leading(Tile src, int m, int n) {
        Tile t = Tile.allocate(src.type(), m, n);
        block(src, 0, 0, t, 0, 0, m, n);
        return t;
    }

    /** Swaps row {@code ra} of tile {@code a} with row {@code rb} of tile {@code b} (same column count; may be one tile). */
    public static void swapRows(Tile a, int ra, Tile b, int rb) {
        if (a == b && ra == rb) {
            return;
        }
        int n = a.cols();
        if (a.type() == DType.F64) {
            DoubleBuffer x = a.f64Buffer();
            DoubleBuffer y = b.f64Buffer();
            for (int c = 0; c < n; c++) {
                int i = c * a.ld() + ra;
                int k = c * b.ld() + rb;
                double v = x.get(i);
                x.put(i, y.get(k));
                y.put(k, v);
            }
        } else {
            FloatBuffer x = a.f32Buffer();
            FloatBuffer y = b.f32Buffer();
            for (int c = 0; c < n; c++) {
                int i = c * a.ld() + ra;
                int k = c * b.ld() + rb;
                float v = x.get(i);
                x.put(i, y.get(k));
                y.put(k, v);
            }
        }
    }
}
