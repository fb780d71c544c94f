package dev.poniard.scheduler;

/**
 * What a {@link ReadyQueue} orders and a {@link PlacementPolicy} places: a real task, or a task of the
 * cluster simulator, which runs the scheduler's own queues and policies in virtual time.
 */
public interface Schedulable extends PlacementPolicy.ReadyTask {
    /** Unique per scheduler (or simulation), increasing in spawn order: the final tie-breaker. */
    long id();

    /** Critical-path rank (upward rank) in nanoseconds for a task of a known DAG; 0 for dynamic tasks. */
    double rank();
}
