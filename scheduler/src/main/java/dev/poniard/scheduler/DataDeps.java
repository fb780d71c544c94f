package dev.poniard.scheduler;

import java.util.ArrayList;
import java.util.IdentityHashMap;
import java.util.List;
import java.util.concurrent.CompletionStage;

/**
 * A data-dependency region (as Dagger's {@code spawn_datadeps}): tasks declare how they access mutable
 * chunks with {@link #in}, {@link #out} and {@link #inout}, and the region orders them so that the result
 * equals running them one by one in program order (sequential consistency). A task that reads a chunk
 * waits for the chunk's last writer; a task that writes it waits for the last writer and every reader
 * since. Chunks are identified by identity, never by {@code equals}.
 *
 * <pre>{@code
 * try (DataDeps region = scheduler.dataDeps()) {
 *     region.spawn(args -> potrf((double[]) args[0]), DataDeps.inout(a00));
 *     region.spawn(args -> trsm((double[]) args[0], (double[]) args[1]), DataDeps.in(a00), DataDeps.inout(a10));
 * } // runs the tasks, waits for all, throws the first failure in program order
 * }</pre>
 *
 * <p>Tasks are submitted when the region closes: the whole DAG is then known, so each task gets its
 * critical-path priority (upward rank: its estimate plus the largest rank among its successors) and
 * the scheduler runs the longest remaining chain first. Handles of region tasks may be passed as inputs to
 * later tasks of the region; waiting on them before the region closes is an error. A region is used by
 * one thread.
 */
public final class DataDeps implements AutoCloseable {
    private final Scheduler scheduler;
    private final List<TaskNode<?>> tasks = new ArrayList<>();
    private final IdentityHashMap<Object, ChunkState> chunks = new IdentityHashMap<>();
    private boolean closed;

    private static final class ChunkState {
        TaskNode<?> lastWriter;
        final List<TaskNode<?>> readers = new ArrayList<>();
    }

    DataDeps(Scheduler scheduler) {
        this.scheduler = scheduler;
    }

    /** The task reads the chunk. */
    public static Access in(Object chunk) {
        return new Access(Access.Mode.IN, chunk);
    }

    /** The task overwrites the chunk. */
    public static Access out(Object chunk) {
        return new Access(Access.Mode.OUT, chunk);
    }

    /** The task reads and writes the chunk. */
    public static Access inout(Object chunk) {
        return new Access(Access.Mode.INOUT, chunk);
    }

    public <R> TaskHandle<R> spawn(Fn.FN<R> fn, Object... args) {
        return spawn(TaskOptions.DEFAULT, fn, args);
    }

    /**
     * Adds a task to the region. {@code args} may mix {@link Access} declarations (the function receives
     * the chunk), handles (it receives their results) and plain values.
     */
    public <R> TaskHandle<R> spawn(TaskOptions options, Fn.FN<R> fn, Object... args) {
        return add(options, fn, TaskNode.FN, args);
    }

    /**
     * Adds a task that starts an asynchronous operation on its chunks and holds them until the returned stage
     * completes (see {@link Scheduler#spawnAsync}): a non-blocking send keeps reading its chunk, a receive keeps
     * writing it, and the region orders other tasks around them as around any task.
     */
    public <R> TaskHandle<R> spawnAsync(TaskOptions options, Fn.FN<? extends CompletionStage<R>> fn, Object... args) {
        return add(options, fn, TaskNode.ASYNC, args);
    }

    private <R> TaskHandle<R> add(TaskOptions options, Object fn, byte kind, Object... args) {
        if (closed) {
            throw new IllegalStateException("this DataDeps region is closed; open a new one with scheduler.dataDeps()");
        }
        Object[] a = args.clone();
        TaskNode<R> t = scheduler.newTask(options, fn, kind, a);
        t.unsubmitted = true;
        List<TaskNode<?>> deps = new ArrayList<>();
        for (Object o : a) {
            if (o instanceof Access) {
                Access acc = (Access) o;
                if (acc.chunk() instanceof TaskHandle) {
                    throw new IllegalArgumentException("a chunk must be the mutable object itself, not a task handle: "
                            + "pass the handle as a plain input instead of " + acc);
                }
                ChunkState cs = chunks.computeIfAbsent(acc.chunk(), k -> new ChunkState());
                addOnce(deps, cs.lastWriter, t);
                if (acc.writes()) {
                    for (TaskNode<?> r : cs.readers) {
                        addOnce(deps, r, t);
                    }
                }
            }
        }
        // Update chunk states only after all dependencies are known: a task may name one chunk twice.
        for (Object o : a) {
            if (o instanceof Access) {
                Access acc = (Access) o;
                ChunkState cs = chunks.get(acc.chunk());
                if (acc.writes()) {
                    cs.lastWriter = t;
                    cs.readers.clear();
                } else if (cs.lastWriter != t && !cs.readers.contains(t)) {
                    cs.readers.add(t);
                }
            }
        }
        t.orderDeps = deps.isEmpty() ? null : deps.toArray(new TaskNode<?>[0]);
        tasks.add(t);
        return t;
    }

    private static void addOnce(List<TaskNode<?>> deps, TaskNode<?> d, TaskNode<?> self) {
        if (d != null && d != self && !deps.contains(d)) {
            deps.add(d);
        }
    }

    /** Number of tasks spawned in this region so far. */
    public int size() {
        return tasks.size();
    }

    /**
     * Submits the region's tasks with critical-path priorities, waits for all of them, and throws the
     * first failure in program order (after every task has settled).
     */
    @Override
    public void close() {
        if (closed) {
            return;
        }
        closed = true;
        CostModel model = scheduler.costModel();
        // Upward ranks in reverse program order: every successor of a task comes later in the program.
        for (int i = tasks.size() - 1; i >= 0; i--) {
            TaskNode<?> t = tasks.get(i);
            t.rank += model.estimateNs(t.signature(), Processor.Kind.CPU, t.options.costHintNs());
            if (t.orderDeps != null) {
                for (TaskNode<?> d : t.orderDeps) {
                    raise(d, t.rank);
                }
            }
            for (Object o : t.args) {
                if (o instanceof TaskNode) {
                    raise((TaskNode<?>) o, t.rank);
                }
            }
        }
        for (TaskNode<?> t : tasks) {
            t.unsubmitted = false;
            t.arm();
        }
        RuntimeException first = null;
        for (TaskNode<?> t : tasks) {
            try {
                t.join();
            } catch (RuntimeException e) {
                if (first == null) {
                    first = e;
                }
            }
        }
        if (first != null) {
            throw first;
        }
    }

    /** Raises the accumulated successor rank of a dependency that belongs to this region. */
    private static void raise(TaskNode<?> d, double successorRank) {
        if (d.unsubmitted && d.rank < successorRank) {
            d.rank = successorRank;
        }
    }
}
