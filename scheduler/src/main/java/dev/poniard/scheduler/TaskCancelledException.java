package dev.poniard.scheduler;

import java.util.concurrent.CancellationException;

/** Thrown by {@link TaskHandle#join()} for a task that was cancelled, directly or through an upstream task. */
public class TaskCancelledException extends CancellationException {
    private static final long serialVersionUID = 1L;

    public TaskCancelledException(String message) {
        super(message);
    }
}
