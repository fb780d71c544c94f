package dev.poniard.samples.trainer;

import java.io.BufferedInputStream;
import java.io.DataInputStream;
import java.io.EOFException;
import java.io.IOException;
import java.io.InputStream;
import java.util.zip.GZIPInputStream;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.dataset.DataSet;
import org.nd4j.linalg.factory.Nd4j;

/**
 * Reads image/label pairs in the IDX format of MNIST and Fashion-MNIST (big-endian header: magic 2051 for images,
 * 2049 for labels, count, then rows and columns for images), plain or gzip-compressed (detected by its magic bytes).
 */
public final class IdxData {
    static final int IMAGES_MAGIC = 2051;
    static final int LABELS_MAGIC = 2049;

    private IdxData() {
    }

    /**
     * Features {@code [n, rows*cols]} scaled to [0, 1] and one-hot labels {@code [n, classes]}, of the first
     * {@code limit} examples (all when {@code limit <= 0}).
     */
    public static DataSet read(InputStream images, InputStream labels, String what, int classes, int limit) throws IOException {
        try (DataInputStream im = open(images); DataInputStream lb = open(labels)) {
            int magic = im.readInt();
            if (magic != IMAGES_MAGIC) {
                throw new IOException(what + ": the image file is not an IDX image file (magic " + magic + ", expected "
                        + IMAGES_MAGIC + "); pass the *-images-idx3-ubyte file");
            }
            int n = im.readInt(), rows = im.readInt(), cols = im.readInt();
            int lMagic = lb.readInt();
            if (lMagic != LABELS_MAGIC) {
                throw new IOException(what + ": the label file is not an IDX label file (magic " + lMagic + ", expected "
                        + LABELS_MAGIC + "); pass the *-labels-idx1-ubyte file");
            }
            int ln = lb.readInt();
            if (ln != n || n <= 0 || rows <= 0 || cols <= 0) {
                throw new IOException(what + ": " + n + " images of " + rows + "x" + cols + " but " + ln
                        + " labels; the image and label files must belong together");
            }
            int count = limit > 0 ? Math.min(limit, n) : n;
            int pixels = rows * cols;
            float[] x = new float[count * pixels];
            float[] y = new float[count * classes];
            byte[] img = new byte[pixels];
            for (int i = 0; i < count; i++) {
                im.readFully(img);
                for (int p = 0; p < pixels; p++) {
                    x[i * pixels + p] = (img[p] & 0xff) / 255f;
                }
                int label = lb.readUnsignedByte();
                if (label >= classes) {
                    throw new IOException(what + ": label " + label + " of example " + i + " is not below " + classes);
                }
                y[i * classes + label] = 1f;
            }
            INDArray features = Nd4j.create(x, new long[] {count, pixels}, DataType.FLOAT);
            INDArray oneHot = Nd4j.create(y, new long[] {count, classes}, DataType.FLOAT);
            return new DataSet(features, oneHot);
        } catch (EOFException e) {
            throw new IOException(what + ": the file ends early (truncated download?)", e);
        }
    }

    private static DataInputStream open(InputStream in) throws IOException {
        BufferedInputStream b = new BufferedInputStream(in, 1 << 16);
        b.mark(2);
        int b0 = b.read(), b1 = b.read();
        b.reset();
        boolean gzip = b0 == 0x1f && b1 == 0x8b;
        return new DataInputStream(gzip ? new BufferedInputStream(new GZIPInputStream(b, 1 << 16), 1 << 16) : b);
    }
}
