package dev.poniard.scheduler;

import java.time.Duration;
import java.util.Objects;

/**
 * Immutable per-task options. Build once and reuse: {@code TaskOptions.named("potrf").priority(10)}.
 *
 * <ul>
 *   <li>{@code name}: shown in traces and errors; also the cost-model signature (else the function's class).</li>
 *   <li>{@code priority}: higher runs first among ready tasks of a processor, before critical-path rank.</li>
 *   <li>{@code scope}: which processors may run the task.</li>
 *   <li>{@code costHint}: the expected duration until the cost model has observed this signature.</li>
 *   <li>{@code timeout}: fails the task if it runs longer (measured from its start) and interrupts it.</li>
 * </ul>
 */
public final class TaskOptions {
    public static final TaskOptions DEFAULT = new TaskOptions(null, 0, Scope.any(), -1, -1);

    private final String name;
    private final int priority;
    private final Scope scope;
    private final long costHintNs;
    private final long timeoutNs;

    private TaskOptions(String name, int priority, Scope scope, long costHintNs, long timeoutNs) {
        this.name = name;
        this.priority = priority;
        this.scope = scope;
        this.costHintNs = costHintNs;
        this.timeoutNs = timeoutNs;
    }

    public static TaskOptions named(String name) {
        return DEFAULT.name(name);
    }

    public TaskOptions name(String value) {
        return new TaskOptions(value, priority, scope, costHintNs, timeoutNs);
    }

    public TaskOptions priority(int value) {
        return new TaskOptions(name, value, scope, costHintNs, timeoutNs);
    }

    public TaskOptions scope(Scope value) {
        return new TaskOptions(name, priority, Objects.requireNonNull(value, "scope"), costHintNs, timeoutNs);
    }

    public TaskOptions costHint(Duration value) {
        return new TaskOptions(name, priority, scope, positive(value, "costHint"), timeoutNs);
    }

    public TaskOptions timeout(Duration value) {
        return new TaskOptions(name, priority, scope, costHintNs, positive(value, "timeout"));
    }

    private static long positive(Duration d, String what) {
        if (d == null || d.isNegative() || d.isZero()) {
            throw new IllegalArgumentException(what + " must be a positive duration, got " + d);
        }
        return d.toNanos();
    }

    public String name() {
        return name;
    }

    public int priority() {
        return priority;
    }

    public Scope scope() {
        return scope;
    }

    /** Cost hint in nanoseconds, or -1 if none. */
    public long costHintNs() {
        return costHintNs;
    }

    /** Timeout in nanoseconds, or -1 if none. */
    public long timeoutNs() {
        return timeoutNs;
    }

    public Duration timeout() {
        return timeoutNs < 0 ? null : Duration.ofNanos(timeoutNs);
    }
}
