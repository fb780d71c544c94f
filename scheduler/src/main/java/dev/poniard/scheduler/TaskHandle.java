package dev.poniard.scheduler;

import java.util.concurrent.Future;
import java.util.function.Consumer;

/**
 * The future result of a spawned task. Pass it as an input to another spawn to make a dependency.
 *
 * <p>{@link #join()} waits without blocking the scheduler: called from a task it runs the awaited task
 * inline when it is ready, or hands its processor to a spare thread while it waits.
 */
public interface TaskHandle<T> extends Future<T> {
    /** Unique within its scheduler, in spawn order. */
    long id();

    /** The task's name, or {@code fn#id} when none was given. */
    String name();

    TaskState state();

    /**
     * Waits for the result.
     *
     * @throws TaskFailedException if the task or an upstream task failed (cause: the original exception)
     * @throws TaskCancelledException if the task was cancelled
     */
    T join();

    /** Cancels the task and its not-yet-started dependents; false once it has started. */
    boolean cancel();

    /** Calls {@code callback} with this handle once the task reaches a terminal state (maybe at once). */
    void onCompletion(Consumer<? super TaskHandle<T>> callback);

    /** The failure cause if the task failed, else null. */
    Throwable failure();
}
