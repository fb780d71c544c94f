package dev.poniard.scheduler;

import java.util.Locale;
import java.util.concurrent.atomic.AtomicInteger;

/**
 * Where a task that just became ready is queued, whether idle processors steal, and whether queues order
 * by priority. Implementations are stateless or thread-safe: {@link #place} runs on whichever thread made
 * the task ready. Three policies ship so they can be compared side by side: {@link #eft()} (the default),
 * {@link #workStealing()} and {@link #fifo()}.
 */
public interface PlacementPolicy {
    /** Returned by {@link #place} to put a task on the queue all processors share. */
    int SHARED_QUEUE = -1;

    String name();

    /**
     * Chooses a processor for {@code task}: an index of a processor whose scope allows the task, or
     * {@link #SHARED_QUEUE} for a task of {@link Scope#any()}.
     *
     * @param current the processor of the thread that made the task ready or, for a thread outside the
     *     scheduler, the processor that produced the task's first input; -1 if neither
     */
    int place(ReadyTask task, SchedulingView view, int current);

    /** Whether an idle processor takes tasks queued on others. */
    boolean stealing();

    /** Whether queues order by priority and critical-path rank (else by readiness only). */
    boolean prioritized();

    /** What a policy may know of a ready task. */
    interface ReadyTask {
        Scope scope();

        int priority();

        /** The cost model's estimate for this task, in nanoseconds. */
        long estimateNs();
    }

    /** What a policy may know of the processors. */
    interface SchedulingView {
        int processorCount();

        Processor processor(int index);

        /**
         * Estimated finish time of {@code task} on processor {@code index}, in nanoseconds from now: the work
         * queued and running there, the task's estimate on that processor's kind, and the cost of moving its
         * inputs there.
         */
        long estimatedFinishNs(ReadyTask task, int index);

        /**
         * Whether {@code task} would start at once on processor {@code index} and no processor could finish it
         * sooner, so that EFT may take {@code index} without reading every other processor's backlog (shared
         * cache lines that other cores write: the main cost of a dispatch). False when unsure.
         */
        default boolean nothingAhead(ReadyTask task, int index) {
            return false;
        }
    }

    /** A policy's placement rule, without its stealing and ordering flags. */
    @FunctionalInterface
    interface Placement {
        int place(ReadyTask task, SchedulingView view, int current);
    }

    /** A policy made of a placement rule and its two flags. */
    static PlacementPolicy of(String name, boolean stealing, boolean prioritized, Placement placement) {
        record Policy(String name, boolean stealing, boolean prioritized, Placement placement)
                implements PlacementPolicy {
            @Override
            public int place(ReadyTask task, SchedulingView view, int current) {
                int only = task.scope().singleProcessor();
                return only >= 0 ? only : placement.place(task, view, current);
            }
        }
        return new Policy(name, stealing, prioritized, placement);
    }

    /**
     * Earliest estimated finish time: each task goes where the cost model says it would finish first,
     * ties broken towards the processor that made it ready (its inputs are warm there); idle processors
     * steal; queues honour priorities and critical-path ranks.
     */
    static PlacementPolicy eft() {
        return of("eft", true, true, (task, view, current) -> {
            Scope scope = task.scope();
            boolean any = scope.isAny();
            if (current >= 0 && (any || scope.allows(view.processor(current))) && view.nothingAhead(task, current)) {
                return current; // the full scan would pick it too: nothing finishes sooner, ties go to current
            }
            int best = -1;
            long bestT = Long.MAX_VALUE;
            for (int i = 0, n = view.processorCount(); i < n; i++) {
                if (!any && !scope.allows(view.processor(i))) {
                    continue;
                }
                long t = view.estimatedFinishNs(task, i);
                if (t < bestT || (t == bestT && i == current)) {
                    best = i;
                    bestT = t;
                }
            }
            return best;
        });
    }

    /**
     * Work stealing (Blumofe–Leiserson): a task made ready by a processor stays on that processor; tasks
     * from outside are dealt round-robin; idle processors steal the oldest task of a victim.
     */
    static PlacementPolicy workStealing() {
        AtomicInteger next = new AtomicInteger();
        return of("ws", true, true, (task, view, current) -> {
            Scope scope = task.scope();
            if (current >= 0 && scope.allows(view.processor(current))) {
                return current;
            }
            int n = view.processorCount();
            int start = Math.floorMod(next.getAndIncrement(), n);
            for (int k = 0; k < n; k++) {
                int i = (start + k) % n;
                if (scope.allows(view.processor(i))) {
                    return i;
                }
            }
            return -1;
        });
    }

    /**
     * One shared first-in first-out queue, no priorities: the baseline a dynamic scheduler should beat.
     * Scoped tasks go to the first processor their scope allows.
     */
    static PlacementPolicy fifo() {
        return of("fifo", false, false, (task, view, current) -> {
            Scope scope = task.scope();
            if (scope.isAny()) {
                return SHARED_QUEUE;
            }
            for (int i = 0, n = view.processorCount(); i < n; i++) {
                if (scope.allows(view.processor(i))) {
                    return i;
                }
            }
            return -1;
        });
    }

    /** The policy called {@code eft}, {@code ws} or {@code fifo}. */
    static PlacementPolicy named(String name) {
        switch (name.toLowerCase(Locale.ROOT)) {
            case "eft":
                return eft();
            case "ws":
            case "work-stealing":
                return workStealing();
            case "fifo":
                return fifo();
            default:
                throw new IllegalArgumentException("unknown placement policy '" + name + "': use eft, ws or fifo");
        }
    }
}
