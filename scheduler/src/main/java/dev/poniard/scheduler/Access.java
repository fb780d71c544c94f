package dev.poniard.scheduler;

import java.util.Objects;

/**
 * A declared access to a mutable chunk inside a {@link DataDeps} region. The task receives the chunk
 * itself; the region uses the mode to order tasks. Chunks are compared by identity, never by
 * {@code equals}: two distinct arrays with equal contents are two chunks.
 */
public final class Access {
    public enum Mode { IN, OUT, INOUT }

    private final Mode mode;
    private final Object chunk;

    Access(Mode mode, Object chunk) {
        this.mode = mode;
        this.chunk = Objects.requireNonNull(chunk, "chunk");
    }

    public Mode mode() {
        return mode;
    }

    public Object chunk() {
        return chunk;
    }

    boolean writes() {
        return mode != Mode.IN;
    }

    @Override
    public String toString() {
        return mode.name().toLowerCase() + "(" + chunk.getClass().getSimpleName() + "@"
                + Integer.toHexString(System.identityHashCode(chunk)) + ")";
    }
}
