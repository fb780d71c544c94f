package dev.poniard.scheduler;

import java.lang.invoke.MethodHandles;
import java.lang.invoke.VarHandle;
import java.util.ArrayDeque;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.ScheduledFuture;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;
import java.util.concurrent.locks.LockSupport;
import java.util.function.Consumer;

/**
 * A task of the DAG and its own handle (one object per task keeps spawning cheap).
 *
 * <p><b>Implementation overview.</b> {@code state} follows {@link TaskState}; every transition is a CAS
 * checked against the state machine's table. {@code pending} counts unresolved dependencies; while the task
 * is being armed it also holds a large bias, so a dependency that completes during arming cannot make the
 * task ready early; whoever brings it to zero moves PENDING → READY and dispatches. Dependents, waiting
 * threads and callbacks sit in a Treiber stack ({@code links}); reaching a terminal state swaps in the
 * {@link #COMPLETED} sentinel and notifies everything popped, so a link pushed after completion is refused
 * and handled by its pusher: nothing is lost and nothing is notified twice. Failure and cancellation
 * propagate through dependents with an explicit work list, never recursion, so a chain of a million
 * tasks cannot overflow the stack. The result is written before the volatile DONE write that publishes
 * it; the failure record right after the FAILED/CANCELLED CAS that decides it (readers wait for it).
 */
final class TaskNode<T> implements TaskHandle<T>, Schedulable {
    static final Object[] NO_ARGS = {};
    /** Function shapes; ASYNC is an FN whose returned CompletionStage decides when the task completes. */
    static final byte F0 = 0, F1 = 1, F2 = 2, F3 = 3, FN = 4, ASYNC = 5;

    private static final Link COMPLETED = new Link(null);
    /** The pending count's bias while {@link #arm} links dependencies: above any number of inputs. */
    private static final int ARMING = 1 << 30;
    private static final VarHandle STATE, PENDING, LINKS;

    static {
        try {
            MethodHandles.Lookup l = MethodHandles.lookup();
            STATE = l.findVarHandle(TaskNode.class, "state", int.class);
            PENDING = l.findVarHandle(TaskNode.class, "pending", int.class);
            LINKS = l.findVarHandle(TaskNode.class, "links", Link.class);
        } catch (ReflectiveOperationException e) {
            throw new ExceptionInInitializerError(e);
        }
    }

    /** A dependent task, a waiting thread, or a completion callback. */
    static final class Link {
        final Object target;
        Link next;

        Link(Object target) {
            this.target = target;
        }
    }

    final Scheduler scheduler;
    final long id;
    final Object fn;
    final byte kind;
    final TaskOptions options;
    Object[] args;
    /** Ordering-only dependencies (data accesses of a region); null for plain spawns. */
    TaskNode<?>[] orderDeps;

    private volatile int state;
    @SuppressWarnings("unused")
    private volatile int pending;
    @SuppressWarnings("unused")
    private volatile Link links;

    /** Written by the running thread before the DONE transition publishes it. */
    private Object result;
    /** Set once, right after a FAILED or CANCELLED transition. */
    private volatile Outcome outcome;

    /** Why a task did not produce a value: the original failure (null if cancelled) and who failed first. */
    private record Outcome(Throwable failure, String failedTask) {
    }

    // Scheduling data, written by the dispatching thread before the task is queued.
    long estimateNs;
    /** Critical-path rank (upward rank) for tasks of a known DAG; 0 for dynamic tasks. */
    double rank;
    /**
     * The processor that ran (or runs) the task; -1 before. Plain: placement reads it only as a hint, and the timer
     * and the trace read it after a hand-over that orders it (scheduling the timeout, the terminal state).
     */
    int processor = -1;
    long startNs;
    long endNs;
    /** Ids of the tasks this one waited for; recorded only while tracing. */
    long[] depIds;
    /** Region tasks are armed when their region closes; joining them earlier is a misuse. */
    volatile boolean unsubmitted;

    // Timeout support: the thread running the task, guarded by this.
    private Thread runner;
    ScheduledFuture<?> timeoutFuture;

    TaskNode(Scheduler scheduler, long id, TaskOptions options, Object fn, byte kind, Object[] args) {
        this.scheduler = scheduler;
        this.id = id;
        this.options = options;
        this.fn = fn;
        this.kind = kind;
        this.args = args;
    }

    // ----------------------------------------------------------------------------------------------
    // Arming: registering with dependencies

    /**
     * Links this task to every unfinished dependency and releases the arming guard. Called once, by the
     * spawning thread (or the closing region), before any other thread can see the task. Inputs already
     * done cost nothing; a task with no unfinished dependency becomes ready without any atomic operation.
     */
    void arm() {
        Object[] a = args;
        TaskNode<?>[] od = orderDeps;
        if (scheduler.tracing()) {
            depIds = dependencyIds(a, od);
        }
        // While arming, pending carries a bias that no number of settling dependencies can consume, so counting a
        // dependency costs no atomic add here: one add at the end swaps the bias for the number linked.
        PENDING.set(this, ARMING);
        // One pass over the inputs: with thousands of inputs, each one touched is a cache miss.
        int linked = 0;
        for (Object o : a) {
            if (o instanceof TaskNode) {
                TaskNode<?> d = (TaskNode<?>) o;
                if (d.scheduler != scheduler) {
                    abandon();
                    throw new IllegalArgumentException("input " + o + " belongs to another scheduler; "
                            + "pass its joined value instead");
                }
                linked += linkIfUnfinished(d);
            }
        }
        if (od != null) {
            for (TaskNode<?> d : od) {
                linked += linkIfUnfinished(d);
            }
        }
        if (linked == 0) {
            // No other thread can see this task yet: PENDING -> READY needs no CAS.
            STATE.setRelease(this, TaskState.READY.ordinal());
            scheduler.dispatch(this);
        } else if ((int) PENDING.getAndAdd(this, linked - ARMING) == ARMING - linked) {
            becomeReady();
        }
    }

    /** Cancels a task whose arming failed, so that dependencies linked so far can never make it run. */
    private void abandon() {
        if (transition(TaskState.PENDING, TaskState.CANCELLED)) {
            outcome = new Outcome(null, name());
            scheduler.taskSettled(this);
        }
    }

    /**
     * Links to a dependency unless it is already done; returns the number of settlements this adds to wait for (0 or
     * 1, counted by {@link #arm}).
     */
    private int linkIfUnfinished(TaskNode<?> dep) {
        if (dep.state == TaskState.DONE.ordinal()) {
            return 0;
        }
        if (!dep.push(new Link(this)) && dependencySettled(dep)) {
            propagate(this);
        }
        return 1;
    }

    private static long[] dependencyIds(Object[] a, TaskNode<?>[] od) {
        int deps = od == null ? 0 : od.length;
        for (Object o : a) {
            if (o instanceof TaskNode) {
                deps++;
            }
        }
        long[] ids = new long[deps];
        int k = 0;
        for (Object o : a) {
            if (o instanceof TaskNode) {
                ids[k++] = ((TaskNode<?>) o).id;
            }
        }
        if (od != null) {
            for (TaskNode<?> d : od) {
                ids[k++] = d.id;
            }
        }
        return ids;
    }

    /**
     * Called when a dependency reached a terminal state. Returns true if this task thereby failed or was
     * cancelled; the caller then propagates to this task's own dependents.
     */
    private boolean dependencySettled(TaskNode<?> dep) {
        int s = dep.state;
        if (s == TaskState.DONE.ordinal()) {
            if ((int) PENDING.getAndAdd(this, -1) == 1) {
                becomeReady();
            }
            return false;
        }
        TaskState target = s == TaskState.FAILED.ordinal() ? TaskState.FAILED : TaskState.CANCELLED;
        if (!transition(TaskState.PENDING, target)) {
            return false;
        }
        Outcome up = dep.awaitOutcome();
        outcome = new Outcome(up.failure, up.failedTask);
        scheduler.taskSettled(this);
        releaseInputs();
        return true;
    }

    private void becomeReady() {
        if (transition(TaskState.PENDING, TaskState.READY)) {
            scheduler.dispatch(this);
        }
    }

    // ----------------------------------------------------------------------------------------------
    // State machine

    private boolean transition(TaskState from, TaskState to) {
        if (!from.canTransitionTo(to)) {
            throw new IllegalStateException("illegal task transition " + from + " -> " + to + " for " + name());
        }
        return STATE.compareAndSet(this, from.ordinal(), to.ordinal());
    }

    /** READY → RUNNING; false if another thread claimed or cancelled it first. */
    boolean claim() {
        return transition(TaskState.READY, TaskState.RUNNING);
    }

    boolean isReady() {
        return state == TaskState.READY.ordinal();
    }

    Object invoke() throws Exception {
        Object[] a = args;
        for (int i = 0; i < a.length; i++) {
            Object o = a[i];
            if (o instanceof TaskNode) {
                a[i] = ((TaskNode<?>) o).result;
            } else if (o instanceof Access) {
                a[i] = ((Access) o).chunk();
            }
        }
        switch (kind) {
            case F0:
                return ((Fn.F0<?>) fn).call();
            case F1:
                return call1(a[0]);
            case F2:
                return call2(a[0], a[1]);
            case F3:
                return call3(a[0], a[1], a[2]);
            default:
                return ((Fn.FN<?>) fn).apply(a);
        }
    }

    @SuppressWarnings({"unchecked", "rawtypes"})
    private Object call1(Object a) throws Exception {
        return ((Fn.F1) fn).apply(a);
    }

    @SuppressWarnings({"unchecked", "rawtypes"})
    private Object call2(Object a, Object b) throws Exception {
        return ((Fn.F2) fn).apply(a, b);
    }

    @SuppressWarnings({"unchecked", "rawtypes"})
    private Object call3(Object a, Object b, Object c) throws Exception {
        return ((Fn.F3) fn).apply(a, b, c);
    }

    /** RUNNING → DONE. False if the task already failed (timed out) while running. */
    boolean complete(Object value) {
        result = value;
        if (!transition(TaskState.RUNNING, TaskState.DONE)) {
            result = null;
            return false;
        }
        settle();
        return true;
    }

    /** RUNNING → FAILED with the task's own exception; false if it already failed (timed out). */
    boolean fail(Throwable cause) {
        return failFrom(TaskState.RUNNING, cause);
    }

    /** READY → FAILED when the scheduler can no longer run the task. */
    boolean failQueued(Throwable cause) {
        return failFrom(TaskState.READY, cause);
    }

    private boolean failFrom(TaskState from, Throwable cause) {
        if (!transition(from, TaskState.FAILED)) {
            return false;
        }
        outcome = new Outcome(cause, name());
        settle();
        return true;
    }

    @Override
    public boolean cancel() {
        for (;;) {
            int s = state;
            if (s != TaskState.PENDING.ordinal() && s != TaskState.READY.ordinal()) {
                return s == TaskState.CANCELLED.ordinal();
            }
            if (transition(TaskState.of(s), TaskState.CANCELLED)) {
                outcome = new Outcome(null, name());
                settle();
                return true;
            }
        }
    }

    @Override
    public boolean cancel(boolean mayInterruptIfRunning) {
        return cancel();
    }

    private void settle() {
        scheduler.taskSettled(this);
        propagate(this);
        releaseInputs();
    }

    /** Drops references to inputs so that a kept handle does not keep its whole upstream graph alive. */
    private void releaseInputs() {
        args = NO_ARGS;
        orderDeps = null;
    }

    /**
     * Publishes a terminal state to everything linked to {@code root}, propagating failure and
     * cancellation through dependents with a work list.
     */
    private static void propagate(TaskNode<?> root) {
        ArrayDeque<TaskNode<?>> work = null;
        TaskNode<?> from = root;
        for (;;) {
            for (Link l = (Link) LINKS.getAndSet(from, COMPLETED); l != null; l = l.next) {
                Object t = l.target;
                if (t instanceof TaskNode) {
                    TaskNode<?> d = (TaskNode<?>) t;
                    if (d.dependencySettled(from)) {
                        if (work == null) {
                            work = new ArrayDeque<>();
                        }
                        work.add(d);
                    }
                } else if (t instanceof Thread) {
                    LockSupport.unpark((Thread) t);
                } else {
                    from.runCallback(t);
                }
            }
            if (work == null || work.isEmpty()) {
                return;
            }
            from = work.poll();
        }
    }

    /** The failure or cancellation record; published right after the terminal CAS. */
    private Outcome awaitOutcome() {
        Outcome o;
        while ((o = outcome) == null) {
            Thread.onSpinWait();
        }
        return o;
    }

    @SuppressWarnings("unchecked")
    private void runCallback(Object cb) {
        scheduler.beforeCallback();
        try {
            ((Consumer<TaskHandle<?>>) cb).accept(this);
        } catch (RuntimeException | Error e) {
            scheduler.callbackFailed(this, e);
        }
    }

    /** Pushes a link; false if the task already completed (the caller must handle it itself). */
    private boolean push(Link l) {
        for (;;) {
            Link h = (Link) LINKS.getVolatile(this);
            if (h == COMPLETED) {
                return false;
            }
            l.next = h;
            if (LINKS.compareAndSet(this, h, l)) {
                return true;
            }
        }
    }

    // ----------------------------------------------------------------------------------------------
    // Timeouts

    synchronized void setRunner(Thread t) {
        runner = t;
    }

    /** Called by the timer: fails a task still running past its timeout and interrupts its thread. */
    void timeoutExpired() {
        if (state != TaskState.RUNNING.ordinal()) {
            return;
        }
        if (fail(new TaskTimeoutException(name(), options.timeout()))) {
            synchronized (this) {
                if (runner != null) {
                    runner.interrupt();
                }
            }
            scheduler.taskTimedOut(this);
        }
    }

    // ----------------------------------------------------------------------------------------------
    // Handle

    @Override
    public long id() {
        return id;
    }

    @Override
    public String name() {
        String n = options.name();
        return n != null ? n + "#" + id : "task#" + id;
    }

    @Override
    public Scope scope() {
        return options.scope();
    }

    @Override
    public int priority() {
        return options.priority();
    }

    @Override
    public long estimateNs() {
        return estimateNs;
    }

    @Override
    public double rank() {
        return rank;
    }

    /** The processor that produced the first input (its data is warm there), or -1. */
    int preferredProcessor() {
        for (Object o : args) {
            if (o instanceof TaskNode) {
                return ((TaskNode<?>) o).processor;
            }
        }
        return -1;
    }

    Object signature() {
        String n = options.name();
        return n != null ? n : fn.getClass();
    }

    @Override
    public TaskState state() {
        return TaskState.of(state);
    }

    @Override
    public boolean isDone() {
        return state >= TaskState.DONE.ordinal();
    }

    @Override
    public boolean isCancelled() {
        return state == TaskState.CANCELLED.ordinal();
    }

    @Override
    public Throwable failure() {
        return state == TaskState.FAILED.ordinal() ? awaitOutcome().failure : null;
    }

    Object rawResult() {
        return result;
    }

    @Override
    public T join() {
        if (!isDone()) {
            scheduler.awaitCompletion(this);
        }
        return report();
    }

    @SuppressWarnings("unchecked")
    private T report() {
        int s = state;
        if (s == TaskState.DONE.ordinal()) {
            return (T) result;
        }
        Outcome o = awaitOutcome();
        String failedTask = o.failedTask;
        if (s == TaskState.CANCELLED.ordinal()) {
            throw new TaskCancelledException(failedTask.equals(name())
                    ? "task " + name() + " was cancelled"
                    : "task " + name() + " was not run: upstream task " + failedTask + " was cancelled");
        }
        String own = name();
        String msg = own.equals(failedTask)
                ? "task " + own + " failed: " + o.failure
                : "task " + own + " was not run: upstream task " + failedTask + " failed: " + o.failure;
        throw new TaskFailedException(own, failedTask, msg, o.failure);
    }

    @Override
    public T get() throws InterruptedException, ExecutionException {
        if (!isDone()) {
            scheduler.awaitCompletionInterruptibly(this, -1);
        }
        return getReport();
    }

    @Override
    public T get(long timeout, TimeUnit unit) throws InterruptedException, ExecutionException, TimeoutException {
        if (!isDone() && !scheduler.awaitCompletionInterruptibly(this, unit.toNanos(timeout))) {
            throw new TimeoutException("task " + name() + " not done after " + timeout + " " + unit
                    + " (state " + state() + ")");
        }
        return getReport();
    }

    private T getReport() throws ExecutionException {
        try {
            return report();
        } catch (TaskFailedException e) {
            throw new ExecutionException(e.getMessage(), e.getCause());
        }
    }

    @Override
    public void onCompletion(Consumer<? super TaskHandle<T>> callback) {
        if (!push(new Link(callback))) {
            runCallback(callback);
        }
    }

    /** Registers the current thread to be unparked on completion; false if already complete. */
    boolean addWaiter(Thread t) {
        return push(new Link(t));
    }

    @Override
    public String toString() {
        return name() + "[" + state() + "]";
    }
}
