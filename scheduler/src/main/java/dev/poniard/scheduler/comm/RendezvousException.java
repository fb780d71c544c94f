package dev.poniard.scheduler.comm;

/** Joining the job failed: wrong shared secret, protocol version mismatch, bad rank, or no coordinator. */
public class RendezvousException extends CommException {
    private static final long serialVersionUID = 1L;

    public RendezvousException(String message) {
        super(message);
    }

    public RendezvousException(String message, Throwable cause) {
        super(message, cause);
    }
}
