package dev.poniard.scheduler.comm.frame;

import org.agrona.DirectBuffer;

/**
 * Validates frames before anything acts on them. {@link #validate} checks every header field and every length
 * against the frame's actual size and the configured limits and returns a {@code FrameError} code; it never
 * throws, never allocates, and reads nothing outside {@code [offset, offset + length)}.
 */
public final class FrameDecoder {
    /** Upper bound on an abort frame's reason text. */
    public static final int MAX_CONTROL_PAYLOAD = 4096;

    private final int worldSize;
    private final long maxMessageLength;
    private final int maxChunkLength;
    private final FrameHeader header = new FrameHeader();

    /**
     * @param worldSize valid source ranks are {@code [0, worldSize)}
     * @param maxMessageLength largest total message length accepted
     * @param maxChunkLength largest chunk length (and payload per frame) accepted
     */
    public FrameDecoder(int worldSize, long maxMessageLength, int maxChunkLength) {
        if (worldSize < 1) {
            throw new IllegalArgumentException("worldSize must be >= 1: " + worldSize);
        }
        if (maxMessageLength < 0) {
            throw new IllegalArgumentException("maxMessageLength must be >= 0: " + maxMessageLength);
        }
        if (maxChunkLength < 8) {
            throw new IllegalArgumentException("maxChunkLength must be >= 8: " + maxChunkLength);
        }
        this.worldSize = worldSize;
        this.maxMessageLength = maxMessageLength;
        this.maxChunkLength = maxChunkLength;
    }

    /** The header flyweight, positioned on the last frame passed to {@link #validate}. */
    public FrameHeader header() {
        return header;
    }

    /**
     * Validates one frame.
     *
     * @return {@link FrameError#OK} or the first error found
     */
    public FrameError validate(DirectBuffer buffer, int offset, int length) {
        if (buffer == null || offset < 0 || length < 0 || (long) offset + length > buffer.capacity()) {
            return FrameError.BAD_BOUNDS;
        }
        if (length < FrameHeader.LENGTH) {
            return FrameError.TRUNCATED;
        }
        header.wrap(buffer, offset);
        if (header.magic() != FrameHeader.MAGIC) {
            return FrameError.BAD_MAGIC;
        }
        if (header.version() != FrameHeader.VERSION) {
            return FrameError.BAD_VERSION;
        }
        final int type = header.type();
        if (type < FrameHeader.TYPE_P2P || type > FrameHeader.TYPE_RMA) {
            return FrameError.BAD_TYPE;
        }
        if (header.flags() != 0) {
            return FrameError.BAD_FLAGS;
        }
        final int source = header.source();
        if (source < 0 || source >= worldSize) {
            return FrameError.BAD_SOURCE;
        }
        if (header.sequence() < 0) {
            return FrameError.BAD_SEQUENCE;
        }
        final int dtype = header.dtype();
        final int op = header.op();
        final boolean data = type == FrameHeader.TYPE_P2P || type == FrameHeader.TYPE_COLLECTIVE
            || type == FrameHeader.TYPE_RMA;
        if (dtype > 4 || (!data && dtype != 0)) {
            return FrameError.BAD_DTYPE;
        }
        if (op > 5 || (!data && op != 0)) {
            return FrameError.BAD_OP;
        }
        if (header.step() < 0) {
            return FrameError.BAD_STEP;
        }
        final int payloadLength = header.payloadLength();
        if (payloadLength < 0 || payloadLength != length - FrameHeader.LENGTH) {
            return FrameError.BAD_PAYLOAD_LENGTH;
        }
        final long totalLength = header.totalLength();
        final int chunkLength = header.chunkLength();
        final int chunkIndex = header.chunkIndex();
        if (!data) {
            if (totalLength != payloadLength || payloadLength > MAX_CONTROL_PAYLOAD) {
                return FrameError.BAD_TOTAL_LENGTH;
            }
            if (chunkIndex != 0 || chunkLength < 0 || chunkLength > maxChunkLength) {
                return FrameError.BAD_CHUNK;
            }
            return FrameError.OK;
        }
        if (totalLength < 0 || totalLength > maxMessageLength) {
            return FrameError.BAD_TOTAL_LENGTH;
        }
        if (chunkLength <= 0 || chunkLength > maxChunkLength || payloadLength > chunkLength) {
            return FrameError.BAD_CHUNK;
        }
        if (chunkIndex < 0) {
            return FrameError.BAD_CHUNK;
        }
        final long start = (long) chunkIndex * chunkLength;
        if (totalLength == 0) {
            return chunkIndex == 0 && payloadLength == 0 ? FrameError.OK : FrameError.BAD_CHUNK;
        }
        if (start >= totalLength) {
            return FrameError.BAD_CHUNK;
        }
        final long expected = Math.min(chunkLength, totalLength - start);
        if (payloadLength != expected) {
            return FrameError.BAD_PAYLOAD_LENGTH;
        }
        return FrameError.OK;
    }
}
