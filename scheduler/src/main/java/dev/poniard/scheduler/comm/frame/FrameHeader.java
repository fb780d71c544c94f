package dev.poniard.scheduler.comm.frame;

import org.agrona.DirectBuffer;
import org.agrona.MutableDirectBuffer;

import java.nio.ByteOrder;

/**
 * Flyweight over the fixed 48-byte header that starts every Poniard frame. All fields are little endian.
 *
 * <pre>
 *   0                   1                   2                   3
 *   0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
 *  +-------------------------------+---------------+---------------+
 *  |         magic 0x4E50          |    version    |     type      |  0
 *  +---------------+---------------+---------------+---------------+
 *  |     dtype     |      op       |         flags (zero)          |  4
 *  +---------------+---------------+-------------------------------+
 *  |                       communicator id                         |  8
 *  +---------------------------------------------------------------+
 *  |                    source rank (world rank)                   | 12
 *  +---------------------------------------------------------------+
 *  |                 operation sequence (64 bits)                  | 16
 *  |                                                               |
 *  +---------------------------------------------------------------+
 *  |              step (collectives) or tag (point-to-point)       | 24
 *  +---------------------------------------------------------------+
 *  |                         chunk index                           | 28
 *  +---------------------------------------------------------------+
 *  |            total message length in bytes (64 bits)            | 32
 *  |                                                               |
 *  +---------------------------------------------------------------+
 *  |                 payload length of this frame                  | 40
 *  +---------------------------------------------------------------+
 *  |      chunk length (nominal payload bytes per chunk, > 0)      | 44
 *  +---------------------------------------------------------------+
 *  |                      payload ...                              | 48
 * </pre>
 *
 * A message of {@code total length} bytes travels as consecutive frames with chunk index 0, 1, ...; chunk k
 * carries bytes {@code [k * chunkLength, k * chunkLength + payloadLength)} and every chunk but the last is
 * exactly {@code chunkLength} long. Control frames (heartbeat, abort) are single-chunk messages.
 */
public final class FrameHeader {
    public static final int MAGIC = 0x4E50; // "PN"
    public static final int VERSION = 1;

    public static final int TYPE_P2P = 1;
    public static final int TYPE_COLLECTIVE = 2;
    public static final int TYPE_HEARTBEAT = 3;
    public static final int TYPE_ABORT = 4;
    public static final int TYPE_RMA = 5;

    public static final int MAGIC_OFFSET = 0;
    public static final int VERSION_OFFSET = 2;
    public static final int TYPE_OFFSET = 3;
    public static final int DTYPE_OFFSET = 4;
    public static final int OP_OFFSET = 5;
    public static final int FLAGS_OFFSET = 6;
    public static final int COMM_ID_OFFSET = 8;
    public static final int SOURCE_OFFSET = 12;
    public static final int SEQUENCE_OFFSET = 16;
    public static final int STEP_OFFSET = 24;
    public static final int CHUNK_INDEX_OFFSET = 28;
    public static final int TOTAL_LENGTH_OFFSET = 32;
    public static final int PAYLOAD_LENGTH_OFFSET = 40;
    public static final int CHUNK_LENGTH_OFFSET = 44;
    public static final int LENGTH = 48;

    private static final ByteOrder LE = ByteOrder.LITTLE_ENDIAN;

    private DirectBuffer buffer;
    private int offset;

    /** Points this flyweight at a header. */
    public FrameHeader wrap(DirectBuffer buffer, int offset) {
        this.buffer = buffer;
        this.offset = offset;
        return this;
    }

    public int magic() {
        return buffer.getShort(offset + MAGIC_OFFSET, LE) & 0xFFFF;
    }

    public int version() {
        return buffer.getByte(offset + VERSION_OFFSET) & 0xFF;
    }

    public int type() {
        return buffer.getByte(offset + TYPE_OFFSET) & 0xFF;
    }

    public int dtype() {
        return buffer.getByte(offset + DTYPE_OFFSET) & 0xFF;
    }

    public int op() {
        return buffer.getByte(offset + OP_OFFSET) & 0xFF;
    }

    public int flags() {
        return buffer.getShort(offset + FLAGS_OFFSET, LE) & 0xFFFF;
    }

    public int communicatorId() {
        return buffer.getInt(offset + COMM_ID_OFFSET, LE);
    }

    public int source() {
        return buffer.getInt(offset + SOURCE_OFFSET, LE);
    }

    public long sequence() {
        return buffer.getLong(offset + SEQUENCE_OFFSET, LE);
    }

    public int step() {
        return buffer.getInt(offset + STEP_OFFSET, LE);
    }

    public int chunkIndex() {
        return buffer.getInt(offset + CHUNK_INDEX_OFFSET, LE);
    }

    public long totalLength() {
        return buffer.getLong(offset + TOTAL_LENGTH_OFFSET, LE);
    }

    public int payloadLength() {
        return buffer.getInt(offset + PAYLOAD_LENGTH_OFFSET, LE);
    }

    public int chunkLength() {
        return buffer.getInt(offset + CHUNK_LENGTH_OFFSET, LE);
    }

    /** Writes a complete header at {@code offset} of {@code out}. */
    public static void write(MutableDirectBuffer out, int offset, int type, int dtype, int op, int communicatorId,
                             int source, long sequence, int step, int chunkIndex, long totalLength,
                             int payloadLength, int chunkLength) {
        out.putShort(offset + MAGIC_OFFSET, (short) MAGIC, LE);
        out.putByte(offset + VERSION_OFFSET, (byte) VERSION);
        out.putByte(offset + TYPE_OFFSET, (byte) type);
        out.putByte(offset + DTYPE_OFFSET, (byte) dtype);
        out.putByte(offset + OP_OFFSET, (byte) op);
        out.putShort(offset + FLAGS_OFFSET, (short) 0, LE);
        out.putInt(offset + COMM_ID_OFFSET, communicatorId, LE);
        out.putInt(offset + SOURCE_OFFSET, source, LE);
        out.putLong(offset + SEQUENCE_OFFSET, sequence, LE);
        out.putInt(offset + STEP_OFFSET, step, LE);
        out.putInt(offset + CHUNK_INDEX_OFFSET, chunkIndex, LE);
        out.putLong(offset + TOTAL_LENGTH_OFFSET, totalLength, LE);
        out.putInt(offset + PAYLOAD_LENGTH_OFFSET, payloadLength, LE);
        out.putInt(offset + CHUNK_LENGTH_OFFSET, chunkLength, LE);
    }
}
