package dev.poniard.scheduler.comm.frame;

import org.agrona.concurrent.UnsafeBuffer;
import org.junit.jupiter.api.Test;

import java.nio.ByteBuffer;
import java.util.EnumMap;
import java.util.Map;
import java.util.Random;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/** The decoder accepts exactly the well-formed frames and survives random and mutated input. */
class FrameDecoderTest {
    private static final int WORLD = 4;
    private static final long MAX_MESSAGE = 1 << 20;
    private static final int MAX_CHUNK = 4096;

    private final FrameDecoder decoder = new FrameDecoder(WORLD, MAX_MESSAGE, MAX_CHUNK);

    private static UnsafeBuffer frame(int type, long total, int chunkIndex, int chunkLength, int payload) {
        final UnsafeBuffer b = new UnsafeBuffer(ByteBuffer.allocateDirect(FrameHeader.LENGTH + payload + 16));
        FrameHeader.write(b, 0, type, type == FrameHeader.TYPE_COLLECTIVE ? 1 : 0,
            type == FrameHeader.TYPE_COLLECTIVE ? 1 : 0, 7, 2, 99, 3, chunkIndex, total, payload, chunkLength);
        return b;
    }

    @Test
    void shouldAcceptWellFormedFrames() {
        assertEquals(FrameError.OK, decoder.validate(frame(FrameHeader.TYPE_P2P, 10_000, 0, 4096, 4096), 0,
            FrameHeader.LENGTH + 4096));
        assertEquals(FrameError.OK, decoder.validate(frame(FrameHeader.TYPE_P2P, 10_000, 2, 4096, 10_000 - 8192), 0,
            FrameHeader.LENGTH + 10_000 - 8192));
        assertEquals(FrameError.OK, decoder.validate(frame(FrameHeader.TYPE_COLLECTIVE, 0, 0, 64, 0), 0,
            FrameHeader.LENGTH));
        assertEquals(FrameError.OK, decoder.validate(frame(FrameHeader.TYPE_HEARTBEAT, 0, 0, 0, 0), 0,
            FrameHeader.LENGTH));
        final FrameHeader h = decoder.header();
        assertEquals(FrameHeader.TYPE_HEARTBEAT, h.type());
        assertEquals(2, h.source());
        assertEquals(99, h.sequence());
    }

    @Test
    void shouldRejectEachBadField() {
        final int len = FrameHeader.LENGTH + 100;
        UnsafeBuffer b = frame(FrameHeader.TYPE_P2P, 100, 0, 128, 100);
        assertEquals(FrameError.TRUNCATED, decoder.validate(b, 0, FrameHeader.LENGTH - 1));
        assertEquals(FrameError.BAD_BOUNDS, decoder.validate(b, 0, b.capacity() + 1));
        assertEquals(FrameError.BAD_BOUNDS, decoder.validate(b, -1, 10));
        b.putShort(0, (short) 0x1234);
        assertEquals(FrameError.BAD_MAGIC, decoder.validate(b, 0, len));
        b = frame(FrameHeader.TYPE_P2P, 100, 0, 128, 100);
        b.putByte(FrameHeader.VERSION_OFFSET, (byte) 9);
        assertEquals(FrameError.BAD_VERSION, decoder.validate(b, 0, len));
        assertEquals(FrameError.BAD_TYPE, decoder.validate(frame(99, 100, 0, 128, 100), 0, len));
        b = frame(FrameHeader.TYPE_P2P, 100, 0, 128, 100);
        b.putInt(FrameHeader.SOURCE_OFFSET, WORLD);
        assertEquals(FrameError.BAD_SOURCE, decoder.validate(b, 0, len));
        b = frame(FrameHeader.TYPE_P2P, 100, 0, 128, 100);
        b.putLong(FrameHeader.SEQUENCE_OFFSET, -5);
        assertEquals(FrameError.BAD_SEQUENCE, decoder.validate(b, 0, len));
        b = frame(FrameHeader.TYPE_P2P, 100, 0, 128, 100);
        b.putShort(FrameHeader.FLAGS_OFFSET, (short) 1);
        assertEquals(FrameError.BAD_FLAGS, decoder.validate(b, 0, len));
        b = frame(FrameHeader.TYPE_P2P, 100, 0, 128, 100);
        b.putByte(FrameHeader.DTYPE_OFFSET, (byte) 9);
        assertEquals(FrameError.BAD_DTYPE, decoder.validate(b, 0, len));
        b = frame(FrameHeader.TYPE_P2P, 100, 0, 128, 100);
        b.putByte(FrameHeader.OP_OFFSET, (byte) 6);
        assertEquals(FrameError.BAD_OP, decoder.validate(b, 0, len));
        b = frame(FrameHeader.TYPE_P2P, 100, 0, 128, 100);
        b.putInt(FrameHeader.STEP_OFFSET, -1);
        assertEquals(FrameError.BAD_STEP, decoder.validate(b, 0, len));
        assertEquals(FrameError.BAD_PAYLOAD_LENGTH, decoder.validate(frame(FrameHeader.TYPE_P2P, 100, 0, 128, 100), 0,
            len - 1));
        assertEquals(FrameError.BAD_TOTAL_LENGTH, decoder.validate(frame(FrameHeader.TYPE_P2P, MAX_MESSAGE + 1, 0, 128,
            100), 0, len));
        assertEquals(FrameError.BAD_TOTAL_LENGTH, decoder.validate(frame(FrameHeader.TYPE_P2P, -1, 0, 128, 100), 0,
            len));
        assertEquals(FrameError.BAD_CHUNK, decoder.validate(frame(FrameHeader.TYPE_P2P, 100, 0, MAX_CHUNK + 1, 100), 0,
            len));
        assertEquals(FrameError.BAD_CHUNK, decoder.validate(frame(FrameHeader.TYPE_P2P, 100, 1, 128, 100), 0, len));
        assertEquals(FrameError.BAD_CHUNK, decoder.validate(frame(FrameHeader.TYPE_P2P, 100, -1, 128, 100), 0, len));
        assertEquals(FrameError.BAD_CHUNK, decoder.validate(frame(FrameHeader.TYPE_P2P, 100, 0, 64, 100), 0, len));
        // A chunk in the middle that is shorter than the chunk length.
        assertEquals(FrameError.BAD_PAYLOAD_LENGTH, decoder.validate(frame(FrameHeader.TYPE_P2P, 1000, 1, 128, 100),
            0, len));
        // Heartbeats carry no dtype and no payload beyond the control limit.
        b = frame(FrameHeader.TYPE_HEARTBEAT, 0, 0, 0, 0);
        b.putByte(FrameHeader.DTYPE_OFFSET, (byte) 1);
        assertEquals(FrameError.BAD_DTYPE, decoder.validate(b, 0, FrameHeader.LENGTH));
        // Huge claimed chunk index times chunk length must not overflow into acceptance.
        assertEquals(FrameError.BAD_CHUNK, decoder.validate(frame(FrameHeader.TYPE_P2P, MAX_MESSAGE, Integer.MAX_VALUE,
            4096, 100), 0, len));
    }

    @Test
    void shouldSurviveRandomBytes() {
        final long seed = System.nanoTime();
        System.out.println("FrameDecoderTest.shouldSurviveRandomBytes seed=" + seed);
        final Random random = new Random(seed);
        final UnsafeBuffer b = new UnsafeBuffer(ByteBuffer.allocateDirect(8192));
        int ok = 0;
        for (int i = 0; i < 200_000; i++) {
            final int len = random.nextInt(200);
            for (int j = 0; j < len; j++) {
                b.putByte(j, (byte) random.nextInt());
            }
            if (decoder.validate(b, 0, len) == FrameError.OK) {
                ok++;
            }
        }
        assertTrue(ok < 5, "random bytes should almost never validate, seed " + seed + ": " + ok);
    }

    @Test
    void shouldRejectOrSafelyAcceptMutationsOfValidFrames() {
        final long seed = System.nanoTime();
        System.out.println("FrameDecoderTest.shouldRejectOrSafelyAcceptMutationsOfValidFrames seed=" + seed);
        final Random random = new Random(seed);
        final Map<FrameError, Integer> seen = new EnumMap<>(FrameError.class);
        for (int i = 0; i < 100_000; i++) {
            final long total = random.nextInt(20_000);
            final int chunk = 64 * (1 + random.nextInt(MAX_CHUNK / 64));
            final int chunks = (int) Math.max(1, (total + chunk - 1) / chunk);
            final int index = random.nextInt(chunks);
            final int payload = (int) Math.min(chunk, Math.max(0, total - (long) index * chunk));
            final UnsafeBuffer b = frame(random.nextBoolean() ? FrameHeader.TYPE_P2P : FrameHeader.TYPE_COLLECTIVE,
                total, index, chunk, payload);
            int len = FrameHeader.LENGTH + payload;
            assertEquals(FrameError.OK, decoder.validate(b, 0, len), "unmutated frame, seed " + seed);
            final int mutations = 1 + random.nextInt(3);
            for (int m = 0; m < mutations; m++) {
                switch (random.nextInt(3)) {
                    case 0 -> b.putByte(random.nextInt(FrameHeader.LENGTH), (byte) random.nextInt());
                    case 1 -> len = Math.max(0, len + random.nextInt(9) - 4);
                    default -> b.putInt(4 * random.nextInt(FrameHeader.LENGTH / 4), random.nextInt());
                }
            }
            len = Math.min(len, b.capacity());
            final FrameError e = decoder.validate(b, 0, len);
            seen.merge(e, 1, Integer::sum);
            if (e == FrameError.OK) {
                // Whatever passes must be self-consistent: the payload lies inside the message and the frame.
                final FrameHeader h = decoder.header();
                final long start = (long) h.chunkIndex() * Math.max(1, h.chunkLength());
                assertTrue(h.payloadLength() == len - FrameHeader.LENGTH, "seed " + seed);
                assertTrue(h.totalLength() <= MAX_MESSAGE && start + h.payloadLength() <= Math.max(h.totalLength(),
                    h.payloadLength()), "seed " + seed);
                assertTrue(h.source() >= 0 && h.source() < WORLD, "seed " + seed);
            }
        }
        assertNotEquals(null, seen.get(FrameError.BAD_MAGIC));
        System.out.println("mutation outcomes: " + seen);
    }
}
