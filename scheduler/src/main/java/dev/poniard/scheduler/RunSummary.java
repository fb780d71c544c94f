package dev.poniard.scheduler;

import java.util.Locale;

/**
 * What a scheduler did over a measurement window: task counts, per-processor utilization, the scheduler's
 * own overhead per task, and — when tracing — the critical path against the makespan.
 *
 * <p>Overhead per task is the processors' time that was neither in task bodies nor idle, divided by the
 * tasks they ran: queueing, dispatch, bookkeeping and wake-ups. All times are wall-clock, so on a machine
 * shared with other processes it also counts time the operating system took a worker away between tasks.
 * Tasks the cost model knows to be shorter than 10 µs are timed one in eight and otherwise count at their
 * estimate (unless tracing, which times every task), so for floods of tiny tasks busy time is an estimate.
 */
public final class RunSummary {
    private final String policy;
    private final long wallNs;
    private final long tasks, failed, cancelled;
    private final String[] names;
    private final long[] perProcessorTasks, busyNs, idleNs;
    private final long criticalPathNs, makespanNs;

    RunSummary(String policy, long wallNs, long tasks, long failed, long cancelled, String[] names,
               long[] perProcessorTasks, long[] busyNs, long[] idleNs, long criticalPathNs, long makespanNs) {
        this.policy = policy;
        this.wallNs = wallNs;
        this.tasks = tasks;
        this.failed = failed;
        this.cancelled = cancelled;
        this.names = names;
        this.perProcessorTasks = perProcessorTasks;
        this.busyNs = busyNs;
        this.idleNs = idleNs;
        this.criticalPathNs = criticalPathNs;
        this.makespanNs = makespanNs;
    }

    /** Tasks that reached a terminal state. */
    public long tasks() {
        return tasks;
    }

    public long failed() {
        return failed;
    }

    public long cancelled() {
        return cancelled;
    }

    public long wallNs() {
        return wallNs;
    }

    /** Share of the window processor {@code i} spent in task bodies. */
    public double utilization(int i) {
        return wallNs == 0 ? 0 : Math.min(1.0, busyNs[i] / (double) wallNs);
    }

    public long busyNs(int i) {
        return busyNs[i];
    }

    public long tasksOn(int i) {
        return perProcessorTasks[i];
    }

    public int processors() {
        return names.length;
    }

    /** Nanoseconds per executed task that processors spent neither running tasks nor idle. */
    public double overheadNsPerTask() {
        long executed = 0, busy = 0, idle = 0;
        for (int i = 0; i < names.length; i++) {
            executed += perProcessorTasks[i];
            busy += busyNs[i];
            idle += idleNs[i];
        }
        if (executed == 0) {
            return 0;
        }
        return Math.max(0, (double) wallNs * names.length - busy - idle) / executed;
    }

    /** Critical path in nanoseconds, or -1 when the run was not traced. */
    public long criticalPathNs() {
        return criticalPathNs;
    }

    /** Makespan (first start to last end) in nanoseconds, or -1 when the run was not traced. */
    public long makespanNs() {
        return makespanNs;
    }

    @Override
    public String toString() {
        StringBuilder b = new StringBuilder();
        b.append(String.format(Locale.ROOT, "%,d tasks (%,d failed, %,d cancelled) in %.1f ms on %d processors, policy %s%n",
                tasks, failed, cancelled, wallNs / 1e6, names.length, policy));
        b.append(String.format(Locale.ROOT, "scheduler overhead: %.2f us per task%n", overheadNsPerTask() / 1e3));
        if (criticalPathNs >= 0) {
            b.append(String.format(Locale.ROOT, "critical path: %.2f ms of a %.2f ms makespan (%.0f%%)%n",
                    criticalPathNs / 1e6, makespanNs / 1e6, makespanNs == 0 ? 0 : 100.0 * criticalPathNs / makespanNs));
        }
        b.append(String.format(Locale.ROOT, "%-10s %12s %12s %12s %8s%n", "processor", "tasks", "busy ms", "idle ms", "util"));
        for (int i = 0; i < names.length; i++) {
            b.append(String.format(Locale.ROOT, "%-10s %,12d %12.1f %12.1f %7.1f%%%n", names[i], perProcessorTasks[i],
                    busyNs[i] / 1e6, idleNs[i] / 1e6, 100 * utilization(i)));
        }
        return b.toString();
    }
}
