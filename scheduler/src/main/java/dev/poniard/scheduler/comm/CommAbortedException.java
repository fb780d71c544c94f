package dev.poniard.scheduler.comm;

/** The communicator was aborted, locally or by another rank; the message names the origin and reason. */
public class CommAbortedException extends CommException {
    private static final long serialVersionUID = 1L;
    private final int originRank;

    public CommAbortedException(int originRank, String message) {
        super(message);
        this.originRank = originRank;
    }

    /** The world rank that called abort (or timed out). */
    public int originRank() {
        return originRank;
    }
}
