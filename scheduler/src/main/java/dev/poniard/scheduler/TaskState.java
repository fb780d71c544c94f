package dev.poniard.scheduler;

/**
 * The lifecycle of a task, as an explicit state machine.
 *
 * <pre>
 *   from \ to   PENDING READY RUNNING DONE FAILED CANCELLED
 *   PENDING        .      x      .      .     x       x      inputs resolved / an input failed / cancelled
 *   READY          .      .      x      .     x       x      claimed by a processor / scheduler closed / cancelled
 *   RUNNING        .      .      .      x     x       .      returned / threw or timed out
 *   DONE, FAILED, CANCELLED are terminal.
 * </pre>
 *
 * A running task cannot be cancelled (it may only fail by timing out); a READY task fails only when the
 * scheduler cannot run it any more. {@link #canTransitionTo} is the single source of truth: the runtime
 * checks every transition against it.
 */
public enum TaskState {
    /** Spawned; waiting for inputs or ordering dependencies. */
    PENDING,
    /** All dependencies satisfied; queued on a processor. */
    READY,
    /** Claimed by a processor; its function is executing. */
    RUNNING,
    /** Returned a value. */
    DONE,
    /** Threw, timed out, or an upstream task failed. */
    FAILED,
    /** Cancelled before it started, or an upstream task was cancelled. */
    CANCELLED;

    private static final TaskState[] VALUES = values();
    private static final boolean[][] ALLOWED = new boolean[VALUES.length][VALUES.length];

    static {
        allow(PENDING, READY, FAILED, CANCELLED);
        allow(READY, RUNNING, FAILED, CANCELLED);
        allow(RUNNING, DONE, FAILED);
    }

    private static void allow(TaskState from, TaskState... targets) {
        for (TaskState to : targets) {
            ALLOWED[from.ordinal()][to.ordinal()] = true;
        }
    }

    /** Whether the state machine permits moving from this state to {@code target}. */
    public boolean canTransitionTo(TaskState target) {
        return ALLOWED[ordinal()][target.ordinal()];
    }

    /** Whether no transition leaves this state. */
    public boolean isTerminal() {
        return this == DONE || this == FAILED || this == CANCELLED;
    }

    static TaskState of(int ordinal) {
        return VALUES[ordinal];
    }
}
