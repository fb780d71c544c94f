package dev.poniard.bridge;

/**
 * A SameDiff graph, or one of its ops, that the bridge cannot turn into scheduler tasks: control flow, an op that
 * cannot run outside the graph, or an op without a gradient on the path to the loss. The message names the op (its
 * own name and its op type) and says what to do.
 */
public final class UnsupportedGraphException extends IllegalArgumentException {
    private static final long serialVersionUID = 1L;

    private final String opName;

    UnsupportedGraphException(String opName, String message) {
        super(message);
        this.opName = opName;
    }

    /** The own name of the op that was refused (as in {@code sd.getOps()}), or null when no single op is to blame. */
    public String opName() {
        return opName;
    }
}
