package dev.poniard.scheduler.comm;

/** An operation did not complete within the operation timeout; the communicator is aborted on all ranks. */
public class CommTimeoutException extends CommAbortedException {
    private static final long serialVersionUID = 1L;

    public CommTimeoutException(int originRank, String message) {
        super(originRank, message);
    }
}
