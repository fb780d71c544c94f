package dev.poniard.bridge;

/** One op of a graph failed while the bridge ran it as a task; the message names the op and the native error. */
public final class OpExecutionException extends RuntimeException {
    private static final long serialVersionUID = 1L;

    private final String opName;

    OpExecutionException(String opName, String message, Throwable cause) {
        super(message, cause);
        this.opName = opName;
    }

    /** The own name of the op that failed. */
    public String opName() {
        return opName;
    }
}
