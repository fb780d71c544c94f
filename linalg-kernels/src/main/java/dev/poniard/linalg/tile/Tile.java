package dev.poniard.linalg.tile;

import dev.poniard.linalg.DType;
import java.nio.DoubleBuffer;
import java.nio.FloatBuffer;
import org.bytedeco.javacpp.DoublePointer;
import org.bytedeco.javacpp.FloatPointer;
import org.bytedeco.javacpp.Pointer;

/**
 * A contiguous column-major block of a matrix in native memory, the unit that tile kernels, data
 * dependencies and (later) messages between ranks work on. The leading dimension equals the row count,
 * so a tile is one flat buffer that BLAS and LAPACK take as is and that can be sent without packing.
 *
 * <p>A tile is a mutable chunk: {@link dev.poniard.scheduler.DataDeps} tracks it by identity, and
 * {@code equals}/{@code hashCode} are those of {@link Object} on purpose. Memory is freed by
 * {@link #close()} (or, failing that, by javacpp's deallocator once the tile is unreachable).
 */
public final class Tile implements AutoCloseable {
    private final DType type;
    private final int rows;
    private final int cols;
    private final DoublePointer dp;
    private final FloatPointer fp;
    private final DoubleBuffer db;
    private final FloatBuffer fb;

    private Tile(DType type, int rows, int cols) {
        if (rows < 1 || cols < 1) {
            throw new IllegalArgumentException("a tile needs at least one row and one column, got " + rows + "x" + cols);
        }
        this.type = type;
        this.rows = rows;
        this.cols = cols;
        long n = (long) rows * cols;
        if (type == DType.F64) {
            dp = new DoublePointer(n);
            dp.zero();
            db = dp.asBuffer();
            fp = null;
            fb = null;
        } else {
            fp = new FloatPointer(n);
            fp.zero();
            fb = fp.asBuffer();
            dp = null;
            db = null;
        }
    }

    /** A zero-filled tile. */
    public static Tile allocate(DType type, int rows, int cols) {
        return new Tile(type, rows, cols);
    }

    public DType type() {
        return type;
    }

    public int rows() {
        return rows;
    }

    public int cols() {
        return cols;
    }

    /** Leading dimension of the column-major storage (always the row count). */
    public int ld() {
        return rows;
    }

    public int size() {
        return rows * cols;
    }

    public double get(int r, int c) {
        int i = index(r, c);
        return db != null ? db.get(i) : fb.get(i);
    }

    public void set(int r, int c, double v) {
        int i = index(r, c);
        if (db != null) {
            db.put(i, v);
        } else {
            fb.put(i, (float) v);
        }
    }

    /** Element at flat column-major index {@code i}, without bounds checks beyond the buffer's. */
    public double getFlat(int i) {
        return db != null ? db.get(i) : fb.get(i);
    }

    public void setFlat(int i, double v) {
        if (db != null) {
            db.put(i, v);
        } else {
            fb.put(i, (float) v);
        }
    }

    private int index(int r, int c) {
        if (r < 0 || r >= rows || c < 0 || c >= cols) {
            throw new IndexOutOfBoundsException("element (" + r + ", " + c + ") is outside a " + rows + "x" + cols + " tile");
        }
        return c * rows + r;
    }

    /** The float64 storage; throws if this is a float32 tile. */
    public DoublePointer f64() {
        if (dp == null) {
            throw new IllegalStateException("tile is " + type + ", not F64");
        }
        return dp;
    }

    /** The float32 storage; throws if this is a float64 tile. */
    public FloatPointer f32() {
        if (fp == null) {
            throw new IllegalStateException("tile is " + type + ", not F32");
        }
        return fp;
    }

    /** The float64 storage as a direct buffer view (position 0, column-major). */
    public DoubleBuffer f64Buffer() {
        f64();
        return db;
    }

    /** The float32 storage as a direct buffer view (position 0, column-major). */
    public FloatBuffer f32Buffer() {
        f32();
        return fb;
    }

    /** Native storage of either type, for byte-level copies and transport. */
    public Pointer pointer() {
        return dp != null ? dp : fp;
    }

    /** Copies every element of {@code src} (same shape and type) into this tile. */
    public void copyFrom(Tile src) {
        if (src.type != type || src.rows != rows || src.cols != cols) {
            throw new IllegalArgumentException("cannot copy a " + src.describe() + " into a " + describe());
        }
        Pointer.memcpy(pointer(), src.pointer(), (long) size() * type.bytes());
    }

    /** A new tile with the same contents. */
    public Tile copy() {
        Tile t = new Tile(type, rows, cols);
        t.copyFrom(this);
        return t;
    }

    /** Shape and type, for messages: {@code 256x256 F64}. */
    public String describe() {
        return rows + "x" + cols + " " + type;
    }

    @Override
    public void close() {
        pointer().close();
    }

    @Override
    public String toString() {
        return "Tile[" + describe() + "]";
    }
}
