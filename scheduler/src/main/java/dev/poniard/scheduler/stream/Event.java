package dev.poniard.scheduler.stream;

/**
 * A point in a stream's order of work (as a CUDA event): complete once everything enqueued on its stream
 * before it has finished. Other streams wait for it without blocking the host
 * ({@link Stream#waitFor(Event)}); only {@link #synchronize()} blocks a thread, for the end of a run.
 */
public interface Event {
    boolean isComplete();

    /** Blocks the calling thread until the event completes; rethrows a failure of the work before it. */
    void synchronize();
}
