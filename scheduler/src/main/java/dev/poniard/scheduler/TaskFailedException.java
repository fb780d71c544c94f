package dev.poniard.scheduler;

/**
 * Thrown by {@link TaskHandle#join()} when a task threw, timed out, or could not run because a task it
 * depends on failed. The cause is the original exception of the task that failed first (never wrapped
 * twice), and {@link #failedTask()} names that task, so a failure deep in a DAG reads the same at every
 * dependent.
 */
public class TaskFailedException extends RuntimeException {
    private static final long serialVersionUID = 1L;
    private final String task;
    private final String failedTask;

    public TaskFailedException(String task, String failedTask, String message, Throwable cause) {
        super(message, cause);
        this.task = task;
        this.failedTask = failedTask;
    }

    /** The task whose handle reported this failure. */
    public String task() {
        return task;
    }

    /** The task that originally failed: this task itself or an upstream one. */
    public String failedTask() {
        return failedTask;
    }
}
