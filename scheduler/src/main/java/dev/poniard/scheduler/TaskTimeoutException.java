package dev.poniard.scheduler;

import java.time.Duration;

/** The cause of a task failure when the task ran longer than its {@link TaskOptions#timeout()}. */
public class TaskTimeoutException extends RuntimeException {
    private static final long serialVersionUID = 1L;

    public TaskTimeoutException(String task, Duration timeout) {
        super("task " + task + " ran longer than its timeout of " + timeout.toMillis()
                + " ms; raise TaskOptions.timeout or make the task interruptible");
    }
}
