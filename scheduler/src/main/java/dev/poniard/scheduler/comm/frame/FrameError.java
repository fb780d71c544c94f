package dev.poniard.scheduler.comm.frame;

/** Outcome of {@link FrameDecoder#validate}: OK or the reason a frame was rejected. */
public enum FrameError {
    OK,
    BAD_BOUNDS,
    TRUNCATED,
    BAD_MAGIC,
    BAD_VERSION,
    BAD_TYPE,
    BAD_FLAGS,
    BAD_SOURCE,
    BAD_SEQUENCE,
    BAD_DTYPE,
    BAD_OP,
    BAD_STEP,
    BAD_PAYLOAD_LENGTH,
    BAD_TOTAL_LENGTH,
    BAD_CHUNK,
    /** Valid on its own but inconsistent with the message it continues (wrong key, chunk out of order). */
    OUT_OF_SEQUENCE,
    /** Claims a source rank other than the one bound to the Aeron session it came on. */
    SPOOFED_SOURCE
}
