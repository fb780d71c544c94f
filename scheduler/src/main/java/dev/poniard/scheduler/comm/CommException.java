package dev.poniard.scheduler.comm;

/** Base class of communication failures: a lost rank, an abort, a timeout, a refused rendezvous. */
public class CommException extends RuntimeException {
    private static final long serialVersionUID = 1L;

    public CommException(String message) {
        super(message);
    }

    public CommException(String message, Throwable cause) {
        super(message, cause);
    }
}
