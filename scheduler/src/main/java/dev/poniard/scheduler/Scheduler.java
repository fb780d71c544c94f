package dev.poniard.scheduler;

import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Objects;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.CompletionException;
import java.util.concurrent.CompletionStage;
import java.util.concurrent.ConcurrentLinkedQueue;
import java.util.concurrent.RejectedExecutionException;
import java.util.concurrent.ScheduledThreadPoolExecutor;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.atomic.AtomicLong;
import java.util.concurrent.atomic.LongAdder;
import java.util.concurrent.locks.LockSupport;
import java.util.function.BiConsumer;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * A dynamic task-DAG scheduler: spawn functions whose inputs are values or other tasks' handles, and the
 * scheduler runs each task once its inputs are ready, on the processor where it is expected to finish
 * first.
 *
 * <pre>{@code
 * try (Scheduler s = Scheduler.launch(new Scheduler.Context().workers(2))) {
 *     TaskHandle<Integer> a = s.spawn(() -> 20);
 *     TaskHandle<Integer> b = s.spawn((Integer x) -> x + 1, a);
 *     TaskHandle<Integer> c = s.spawn((Integer x, Integer y) -> x * y, a, b);
 *     System.out.println(c.join()); // 420
 * }
 * }</pre>
 *
 * <p><b>Implementation overview.</b> Each CPU processor owns a {@link ReadyQueue}. A task becomes ready
 * when its last dependency settles ({@link TaskNode}); the thread that made it ready asks the
 * {@link PlacementPolicy} for a processor and queues it there. A processor's thread polls its queue, then
 * the shared queue (FIFO policy), then steals from others (Blumofe–Leiserson work stealing, honouring
 * scopes). A worker that makes a successor ready while completing its task, with nothing queued on its
 * processor, runs it next without queueing it (scheduler bypass): a chain then costs no queue operations.
 * An idle thread spins briefly, yielding, then parks; to avoid lost wake-ups it publishes its parked flag,
 * then re-checks for work, while a pusher publishes the task, then reads the idle count — volatile on both
 * sides, so one of them always sees the other. A pusher wakes a parked thread only when no thread is still
 * spinning for work (that one will find the task), and a thief that finds more work than it takes passes
 * the wake on, so bursts still recruit every idle thread.
 *
 * <p>Joining from inside a task never starves the pool: the joiner first runs the awaited task inline
 * if it is still queued, else it hands its processor slot to a spare thread (compensation, as
 * {@code ForkJoinPool.ManagedBlocker}) and blocks; when it resumes it finishes its task and retires to
 * the spare pool. So at most one thread per processor runs tasks, apart from a thread that has just been
 * released from a join and is finishing its current task.
 *
 * <p>Every execution is timed: the duration feeds the {@link CostModel}, the processor's busy counters
 * and, when tracing, the {@link Trace}. A task's exception (an {@code Error} too) fails that task and its
 * dependents and never the worker; errors are also logged and passed to the context's error handler.
 */
public final class Scheduler implements AutoCloseable, PlacementPolicy.SchedulingView {
    private static final Logger LOG = LoggerFactory.getLogger(Scheduler.class);
    private static final int SPINS = Integer.getInteger("poniard.spins", 64);
    private static final int YIELDS = Integer.getInteger("poniard.yields", 64);
    private static final int JOIN_SPINS = 256;
    private static final int STEAL_SCAN = 64;
    /**
     * Tasks estimated at least this long are always timed and feed the cost model; shorter ones one in eight, so
     * that floods of tiny tasks neither read the clock twice each nor make every processor write the same
     * statistics cache line. The untimed ones count at their estimate in the busy-time statistics.
     */
    static final long SAMPLE_ALWAYS_NS = 10_000;

    /**
     * Configuration of a scheduler. Defaults come from system properties: {@code poniard.workers}
     * (default: available processors), {@code poniard.policy} ({@code eft}, {@code ws}, {@code fifo}),
     * {@code poniard.trace} ({@code true} to record a trace).
     */
    public static final class Context {
        private String name = "poniard";
        private int workers = Integer.getInteger("poniard.workers", Runtime.getRuntime().availableProcessors());
        private PlacementPolicy policy = PlacementPolicy.named(System.getProperty("poniard.policy", "eft"));
        private boolean trace = Boolean.getBoolean("poniard.trace");
        private CostModel costModel;
        private Runnable workerStart = () -> { };
        private BiConsumer<TaskHandle<?>, Throwable> errorHandler;
        private Duration closeTimeout = Duration.ofSeconds(10);
        private int maxThreads = 256;

        public String name() {
            return name;
        }

        /** Names the scheduler's threads ({@code name-cpu-0}, ...). */
        public Context name(String value) {
            name = value;
            return this;
        }

        public int workers() {
            return workers;
        }

        /** Number of CPU processors, each served by one thread at a time. */
        public Context workers(int value) {
            workers = value;
            return this;
        }

        public PlacementPolicy policy() {
            return policy;
        }

        public Context policy(PlacementPolicy value) {
            policy = value;
            return this;
        }

        public boolean trace() {
            return trace;
        }

        /** Records every task for {@link Scheduler#trace()} (costs memory per task). */
        public Context trace(boolean value) {
            trace = value;
            return this;
        }

        public CostModel costModel() {
            return costModel;
        }

        /** Shares a learned cost model between schedulers; default: a new one. */
        public Context costModel(CostModel value) {
            costModel = value;
            return this;
        }

        public Runnable workerStart() {
            return workerStart;
        }

        /**
         * Runs on every worker thread when it starts. Modules above the scheduler use it to hold native math
         * (OpenBLAS, OpenMP) to one thread per worker.
         */
        public Context workerStart(Runnable value) {
            workerStart = value;
            return this;
        }

        public BiConsumer<TaskHandle<?>, Throwable> errorHandler() {
            return errorHandler;
        }

        /** Told about every task that failed with an {@link Error} (after it is logged). */
        public Context errorHandler(BiConsumer<TaskHandle<?>, Throwable> value) {
            errorHandler = value;
            return this;
        }

        public Duration closeTimeout() {
            return closeTimeout;
        }

        /** How long {@link Scheduler#close()} waits for running tasks before interrupting them. */
        public Context closeTimeout(Duration value) {
            closeTimeout = value;
            return this;
        }

        public int maxThreads() {
            return maxThreads;
        }

        /** Bound on worker plus spare threads (spares replace workers blocked in joins). */
        public Context maxThreads(int value) {
            maxThreads = value;
            return this;
        }

        /** Validates the context, naming the bad value. */
        public Context conclude() {
            if (workers < 1) {
                throw new IllegalArgumentException("workers must be >= 1, got " + workers);
            }
            if (maxThreads < workers) {
                throw new IllegalArgumentException("maxThreads (" + maxThreads + ") must be >= workers (" + workers + ")");
            }
            Objects.requireNonNull(policy, "policy");
            Objects.requireNonNull(workerStart, "workerStart");
            if (name == null || name.isBlank()) {
                throw new IllegalArgumentException("name must not be blank");
            }
            if (closeTimeout == null || closeTimeout.isNegative()) {
                throw new IllegalArgumentException("closeTimeout must be >= 0, got " + closeTimeout);
            }
            if (costModel == null) {
                costModel = new CostModel();
            }
            return this;
        }
    }

    private final Context ctx;
    private final PlacementPolicy policy;
    private final CostModel costModel;
    private final CpuProcessor[] processors;
    private final ReadyQueue<TaskNode<?>> shared;
    private final boolean stealing;
    private final TraceRecorder recorder;

    private final AtomicLong ids = new AtomicLong();
    private final AtomicInteger idle = new AtomicInteger();
    /** Threads spinning for work before they park; see {@link #wakeFor}. */
    private final AtomicInteger searching = new AtomicInteger();
    private final AtomicInteger threads = new AtomicInteger();
    private final AtomicInteger spareNames = new AtomicInteger();
    private final ConcurrentLinkedQueue<WorkerThread> spares = new ConcurrentLinkedQueue<>();
    private final List<WorkerThread> allThreads = new ArrayList<>();
    private final LongAdder settled = new LongAdder();
    private final LongAdder failed = new LongAdder();
    private final LongAdder cancelled = new LongAdder();
    private final AtomicBoolean spareLimitWarned = new AtomicBoolean();
    private volatile ScheduledThreadPoolExecutor timer;
    private volatile boolean closed;
    private volatile long statsStartNs;
    private volatile long[] statsBase;

    private Scheduler(Context ctx) {
        this.ctx = ctx;
        this.policy = ctx.policy();
        this.costModel = ctx.costModel();
        this.stealing = policy.stealing();
        this.processors = new CpuProcessor[ctx.workers()];
        for (int i = 0; i < processors.length; i++) {
            processors[i] = new CpuProcessor(i, "cpu-" + i, policy.prioritized());
        }
        this.shared = new ReadyQueue<>(false);
        this.recorder = ctx.trace() ? new TraceRecorder() : null;
        resetStats();
    }

    /** Starts a scheduler and its worker threads. */
    public static Scheduler launch(Context ctx) {
        Scheduler s = new Scheduler(ctx.conclude());
        for (CpuProcessor p : s.processors) {
            WorkerThread w = s.newThread(s.ctx.name() + "-" + p.name());
            p.active = w;
            w.proc = p;
        }
        synchronized (s.allThreads) {
            for (WorkerThread w : s.allThreads) {
                w.start();
            }
        }
        return s;
    }

    private WorkerThread newThread(String name) {
        threads.incrementAndGet();
        WorkerThread w = new WorkerThread(this, name);
        synchronized (allThreads) {
            allThreads.add(w);
        }
        return w;
    }

    // ------------------------------------------------------------------------------------------------
    // Spawning

    public <R> TaskHandle<R> spawn(Fn.F0<R> fn) {
        return spawn(TaskOptions.DEFAULT, fn);
    }

    public <R> TaskHandle<R> spawn(TaskOptions options, Fn.F0<R> fn) {
        return submit(options, fn, TaskNode.F0, TaskNode.NO_ARGS);
    }

    /** Spawns {@code fn(a)}; {@code a} is a value or a {@link TaskHandle} whose result is passed. */
    public <A, R> TaskHandle<R> spawn(Fn.F1<A, R> fn, Object a) {
        return spawn(TaskOptions.DEFAULT, fn, a);
    }

    public <A, R> TaskHandle<R> spawn(TaskOptions options, Fn.F1<A, R> fn, Object a) {
        return submit(options, fn, TaskNode.F1, new Object[] {a});
    }

    public <A, B, R> TaskHandle<R> spawn(Fn.F2<A, B, R> fn, Object a, Object b) {
        return spawn(TaskOptions.DEFAULT, fn, a, b);
    }

    public <A, B, R> TaskHandle<R> spawn(TaskOptions options, Fn.F2<A, B, R> fn, Object a, Object b) {
        return submit(options, fn, TaskNode.F2, new Object[] {a, b});
    }

    public <A, B, C, R> TaskHandle<R> spawn(Fn.F3<A, B, C, R> fn, Object a, Object b, Object c) {
        return spawn(TaskOptions.DEFAULT, fn, a, b, c);
    }

    public <A, B, C, R> TaskHandle<R> spawn(TaskOptions options, Fn.F3<A, B, C, R> fn, Object a, Object b, Object c) {
        return submit(options, fn, TaskNode.F3, new Object[] {a, b, c});
    }

    /** Spawns {@code fn(inputs)} with any number of inputs (values or handles). */
    public <R> TaskHandle<R> spawnN(Fn.FN<R> fn, Object... inputs) {
        return spawnN(TaskOptions.DEFAULT, fn, inputs);
    }

    public <R> TaskHandle<R> spawnN(TaskOptions options, Fn.FN<R> fn, Object... inputs) {
        return submit(options, fn, TaskNode.FN, inputsCopy(inputs));
    }

    /**
     * Spawns a task that starts an asynchronous operation (a non-blocking receive, a device copy) and
     * completes when the {@link CompletionStage} that {@code fn} returns completes, with its value or its
     * failure. Its worker is free as soon as {@code fn} returns, so waiting for remote data or a device never
     * holds a processor. Dependents run once the stage completes. A timeout in {@code options} covers the
     * whole operation.
     */
    public <R> TaskHandle<R> spawnAsync(TaskOptions options, Fn.FN<? extends CompletionStage<R>> fn, Object... inputs) {
        return submit(options, fn, TaskNode.ASYNC, inputsCopy(inputs));
    }

    /** A private Object[] copy: the task stores resolved values into it, which a TaskHandle[] could not hold. */
    private static Object[] inputsCopy(Object[] inputs) {
        return java.util.Arrays.copyOf(inputs, inputs.length, Object[].class);
    }

    /**
     * Opens a region in which tasks declare {@code in}/{@code out}/{@code inout} access to mutable chunks;
     * closing it runs them in an order equivalent to program order and waits for all of them.
     */
    public DataDeps dataDeps() {
        return new DataDeps(this);
    }

    private <R> TaskHandle<R> submit(TaskOptions options, Object fn, byte kind, Object[] args) {
        TaskNode<R> t = newTask(options, fn, kind, args);
        t.arm();
        return t;
    }

    <R> TaskNode<R> newTask(TaskOptions options, Object fn, byte kind, Object[] args) {
        Objects.requireNonNull(fn, "task function");
        Objects.requireNonNull(options, "options");
        if (closed) {
            throw new RejectedExecutionException("scheduler '" + ctx.name() + "' is closed: spawn before close()");
        }
        if (!options.scope().isAny()) {
            checkScope(options.scope());
        }
        return new TaskNode<>(this, ids.incrementAndGet(), options, fn, kind, args);
    }

    private void checkScope(Scope scope) {
        for (CpuProcessor p : processors) {
            if (scope.allows(p)) {
                return;
            }
        }
        throw new IllegalArgumentException("scope '" + scope + "' matches none of this scheduler's processors "
                + "(cpu-0 .. cpu-" + (processors.length - 1) + ")");
    }

    // ------------------------------------------------------------------------------------------------
    // Dispatch and wake-up

    /** Queues a task that just became READY. */
    void dispatch(TaskNode<?> t) {
        if (closed) {
            t.cancel();
            return;
        }
        t.estimateNs = costModel.estimateNs(t.signature(), Processor.Kind.CPU, t.options.costHintNs());
        WorkerThread self = currentWorker();
        int current = self == null ? -1 : self.proc.id();
        int i = policy.place(t, this, current >= 0 ? current : t.preferredProcessor());
        if (current >= 0 && i == current && self.completing && self.next == null && processors[i].queue.isEmpty()
                && t.options.scope().allows(processors[i])) {
            self.next = t; // its worker runs it next: the policy chose it and nothing queued waits there
            return;
        }
        ReadyQueue<TaskNode<?>> q;
        if (i == PlacementPolicy.SHARED_QUEUE && t.options.scope().isAny()) {
            q = shared;
        } else if (i >= 0 && i < processors.length && t.options.scope().allows(processors[i])) {
            q = processors[i].queue;
        } else {
            t.failQueued(new IllegalStateException("placement policy '" + policy.name() + "' chose processor "
                    + i + ", which scope '" + t.options.scope() + "' does not allow"));
            return;
        }
        q.push(t);
        // A worker that queues a task for itself takes it as soon as it returns to its loop: waking an idle
        // thief (a futex call on the critical path) pays only when more work than this task is waiting. A
        // non-worker thread (current == -1) queueing on the shared queue (also -1) is not such a worker.
        boolean forItself = current >= 0 && i == current;
        if (idle.get() > 0 && (!forItself || backlogNs(processors[i]) > t.estimateNs)) {
            wakeFor(i, t);
        }
    }

    /**
     * Wakes a parked thread for a task just queued on processor {@code i} (or the shared queue): that processor's
     * own thread, else, for a task any processor may steal, any parked thread unless one is still searching.
     */
    private void wakeFor(int i, TaskNode<?> t) {
        if (i >= 0) {
            if (wake(processors[i]) || !stealing || !t.options.scope().isAny()) {
                return;
            }
        }
        if (searching.get() > 0) {
            // A thread still spinning for work will find this task: waking a parked one too (a futex call here,
            // and a thread that then finds nothing and competes for the cores) is how a chain fed from outside
            // the pool used to wake a second worker for every task.
            return;
        }
        for (CpuProcessor p : processors) {
            if (wake(p)) {
                return;
            }
        }
    }

    /** Wakes {@code p}'s thread if it is parked idle; whoever clears the parked flag owns the decrement. */
    private boolean wake(CpuProcessor p) {
        if (p.clearParked()) {
            idle.decrementAndGet();
            LockSupport.unpark(p.active);
            return true;
        }
        return false;
    }

    /** The calling thread if it serves one of this scheduler's processors, else null. */
    private WorkerThread currentWorker() {
        Thread th = Thread.currentThread();
        if (th instanceof WorkerThread w && w.scheduler == this && w.proc != null) {
            return w;
        }
        return null;
    }

    /**
     * Queues the calling worker's bypassed successor on {@code p} (the processor it was placed on), before the
     * thread does anything that may block or leave the processor: there, other threads can run or steal it.
     */
    private void requeueNext(WorkerThread w, CpuProcessor p) {
        TaskNode<?> t = w.next;
        w.next = null;
        p.queue.push(t);
        if (idle.get() > 0) {
            wakeFor(p.id(), t);
        }
    }

    /** Called before a completion callback runs: arbitrary code may block, so bypass nothing past it. */
    void beforeCallback() {
        Thread th = Thread.currentThread();
        if (th instanceof WorkerThread w && w.scheduler == this && w.next != null) {
            requeueNext(w, w.proc);
        }
    }

    @Override
    public int processorCount() {
        return processors.length;
    }

    @Override
    public Processor processor(int index) {
        return processors[index];
    }

    @Override
    public long estimatedFinishNs(PlacementPolicy.ReadyTask task, int index) {
        // All CPU processors share one memory domain and one cost-model kind: the backlog decides.
        CpuProcessor p = processors[index];
        return backlogNs(p) + task.estimateNs();
    }

    /** Same-kind processors in one memory domain: a processor with nothing queued or running finishes first. */
    @Override
    public boolean nothingAhead(PlacementPolicy.ReadyTask task, int index) {
        CpuProcessor p = processors[index];
        return p.active == Thread.currentThread() && backlogNs(p) <= 0;
    }

    /**
     * Work queued and running on {@code p}. Its own worker counts the pulls it has not yet published (it batches
     * them), so a worker that readies a successor of its task sees its true, empty backlog and keeps the
     * successor instead of handing it to an idle core; and the successor it already keeps to run next, so that a
     * second one goes to an idle core.
     */
    private static long backlogNs(CpuProcessor p) {
        long queued = p.queue.queuedWorkNs();
        WorkerThread w = p.active;
        if (w == Thread.currentThread()) {
            queued -= p.unpublishedNs();
            TaskNode<?> next = w.next;
            if (next != null) {
                queued += next.estimateNs;
            }
        }
        return queued + p.runningEstimateNs;
    }

    // ------------------------------------------------------------------------------------------------
    // Worker loop

    void workerLoop(WorkerThread w) {
        try {
            ctx.workerStart().run();
        } catch (RuntimeException | Error e) {
            LOG.error("workerStart hook failed on {}; the thread serves tasks anyway", w.getName(), e);
        }
        try {
            while (!closed) {
                CpuProcessor p = w.proc;
                if (p == null || p.active != w) {
                    if (w.next != null && p != null) {
                        requeueNext(w, p); // the slot went to another thread while this one ran a task
                    }
                    retire(w);
                    continue;
                }
                TaskNode<?> t = w.next;
                if (t != null) {
                    w.next = null;
                } else {
                    t = findWork(p);
                }
                if (t != null) {
                    if (t.claim()) {
                        run(t, p, w, true);
                    }
                } else {
                    idle(p, w);
                }
            }
        } finally {
            threads.decrementAndGet();
            if (w.next != null) {
                w.next.cancel(); // closed before this thread came back to it
            }
        }
    }

    private TaskNode<?> findWork(CpuProcessor p) {
        TaskNode<?> t = p.queue.poll();
        if (t != null) {
            p.tookOwn(t.estimateNs);
            return t;
        }
        p.publish();
        if (!shared.isEmpty()) {
            t = shared.steal(p, STEAL_SCAN);
            if (t != null) {
                shared.pulled(t.estimateNs);
                passOnWake(shared);
                return t;
            }
        }
        if (stealing) {
            int n = processors.length;
            for (int k = 1; k < n; k++) {
                CpuProcessor victim = processors[(p.id() + k) % n];
                if (victim.queue.hasStealable()) {
                    t = victim.queue.steal(p, STEAL_SCAN);
                    if (t != null) {
                        victim.queue.pulled(t.estimateNs);
                        passOnWake(victim.queue);
                        return t;
                    }
                }
            }
        }
        return null;
    }

    /**
     * A thief that found work where more is left wakes one parked thread if nobody else is searching: pushers
     * skip waking while someone searches ({@link #wakeFor}), so a burst of work recruits idle threads one by one.
     */
    private void passOnWake(ReadyQueue<TaskNode<?>> q) {
        if (idle.get() > 0 && searching.get() == 0 && q.hasStealable()) {
            for (CpuProcessor other : processors) {
                if (wake(other)) {
                    return;
                }
            }
        }
    }

    private boolean hasWork(CpuProcessor p) {
        if (!p.queue.isEmpty() || !shared.isEmpty()) {
            return true;
        }
        if (stealing) {
            for (CpuProcessor q : processors) {
                if (q != p && q.queue.hasStealable()) {
                    return true;
                }
            }
        }
        return false;
    }

    private void idle(CpuProcessor p, WorkerThread w) {
        long start = System.nanoTime();
        p.idleSince = start;
        searching.incrementAndGet();
        for (int i = 0; i < SPINS + YIELDS; i++) {
            if (hasWork(p) || closed || p.active != w) {
                searching.decrementAndGet();
                p.idleSince = 0;
                p.recordIdle(System.nanoTime() - start);
                return;
            }
            if (i < SPINS) {
                Thread.onSpinWait();
            } else {
                Thread.yield();
            }
        }
        // Stop counting as searching before re-checking for work below: a pusher that saw us searching (and so
        // woke nobody) pushed before this decrement, so the re-check sees its task.
        searching.decrementAndGet();
        p.markParked();
        idle.incrementAndGet();
        if (!hasWork(p) && !closed && p.active == w) {
            LockSupport.park(this);
        }
        if (p.clearParked()) {
            idle.decrementAndGet();
        }
        p.idleSince = 0;
        p.recordIdle(System.nanoTime() - start);
    }

    private void retire(WorkerThread w) {
        w.proc = null;
        spares.add(w);
        while (w.proc == null && !closed) {
            LockSupport.park(this);
        }
    }

    /** Gives processor {@code p} a spare thread because its current thread blocks. */
    private void compensate(CpuProcessor p) {
        if (closed) {
            return;
        }
        WorkerThread s = spares.poll();
        boolean fresh = false;
        if (s == null) {
            if (threads.get() >= ctx.maxThreads()) {
                if (spareLimitWarned.compareAndSet(false, true)) {
                    LOG.warn("scheduler '{}' reached maxThreads={} while tasks block in joins; processor {} stays "
                            + "blocked (raise Context.maxThreads or join less deeply)", ctx.name(), ctx.maxThreads(), p);
                }
                return;
            }
            s = newThread(ctx.name() + "-spare-" + spareNames.incrementAndGet());
            fresh = true;
        }
        p.active = s;
        s.proc = p;
        if (fresh) {
            s.start();
        } else {
            LockSupport.unpark(s);
        }
    }

    /**
     * Runs a claimed task on {@code p}; {@code w} is null when the caller is not a worker thread. {@code fromLoop}:
     * called from the worker loop, which takes a successor bypassed while completing (not from a join, whose
     * caller still has its own task to finish).
     */
    private void run(TaskNode<?> t, CpuProcessor p, WorkerThread w, boolean fromLoop) {
        t.processor = p.id();
        boolean published = t.estimateNs >= CpuProcessor.PUBLISH_NS;
        if (published) {
            p.runningEstimateNs = t.estimateNs;
        }
        long timeout = t.options.timeoutNs();
        if (timeout > 0) {
            armTimeout(t, timeout);
        }
        long savedNested = 0;
        if (w != null) {
            savedNested = w.nestedNs;
            w.nestedNs = 0;
        }
        // Two clock reads cost ~60 ns on a VM's kvm-clock, more than the rest of a tiny task's path: tasks the model
        // knows to be short are timed one in eight, which is all the model samples of them anyway.
        boolean timed = recorder != null || t.estimateNs >= SAMPLE_ALWAYS_NS || (p.observeTick++ & 7) == 0;
        long start = timed ? System.nanoTime() : 0;
        t.startNs = start;
        Object r = null;
        Throwable err = null;
        try {
            r = t.invoke();
        } catch (Throwable e) {
            err = e;
        }
        long end = timed ? System.nanoTime() : t.estimateNs;
        t.endNs = end;
        if (timeout > 0) {
            disarmTimeout(t);
        }
        long own = end - start;
        if (w != null) {
            own = Math.max(0, own - w.nestedNs);
            w.nestedNs = savedNested + (end - start);
        }
        if (published) {
            p.runningEstimateNs = 0;
        }
        p.recordTask(own);
        if (err == null) {
            if (timed) {
                costModel.observe(t.signature(), Processor.Kind.CPU, own);
            }
            if (t.kind == TaskNode.ASYNC) {
                completeLater(t, r);
            } else if (fromLoop) {
                w.completing = true;
                try {
                    t.complete(r);
                } finally {
                    w.completing = false;
                }
            } else {
                t.complete(r);
            }
        } else {
            if (err instanceof Error) {
                reportError(t, err); // before joiners wake, so they observe a reported error
            }
            t.fail(err);
        }
    }

    /** Completes an async task when the stage its function returned completes (on the thread completing it). */
    private void completeLater(TaskNode<?> t, Object stage) {
        if (!(stage instanceof CompletionStage)) {
            t.fail(new IllegalStateException("async task " + t.name() + " returned " + stage
                    + " instead of a CompletionStage; return the operation's future"));
            return;
        }
        CompletableFuture<?> f = ((CompletionStage<?>) stage).toCompletableFuture();
        long timeout = t.options.timeoutNs();
        if (timeout > 0 && !f.isDone()) {
            f = f.copy().orTimeout(timeout, TimeUnit.NANOSECONDS);
        }
        f.whenComplete((v, e) -> {
            if (e == null) {
                t.complete(v);
            } else {
                Throwable cause = e instanceof CompletionException && e.getCause() != null ? e.getCause() : e;
                t.fail(cause instanceof TimeoutException ? new TaskTimeoutException(t.name(), t.options.timeout()) : cause);
            }
        });
    }

    private void reportError(TaskNode<?> t, Throwable err) {
        LOG.error("task {} failed with an error; the scheduler keeps running", t.name(), err);
        BiConsumer<TaskHandle<?>, Throwable> h = ctx.errorHandler();
        if (h != null) {
            try {
                h.accept(t, err);
            } catch (RuntimeException e) {
                LOG.error("error handler failed for task {}", t.name(), e);
            }
        }
    }

    // ------------------------------------------------------------------------------------------------
    // Timeouts

    private void armTimeout(TaskNode<?> t, long timeoutNs) {
        ScheduledThreadPoolExecutor tm = timer;
        if (tm == null) {
            synchronized (this) {
                tm = timer;
                if (tm == null) {
                    tm = new ScheduledThreadPoolExecutor(1, r -> {
                        Thread th = new Thread(r, ctx.name() + "-timer");
                        th.setDaemon(true);
                        return th;
                    });
                    tm.setRemoveOnCancelPolicy(true);
                    timer = tm;
                }
            }
        }
        t.setRunner(Thread.currentThread());
        t.timeoutFuture = tm.schedule(t::timeoutExpired, timeoutNs, TimeUnit.NANOSECONDS);
    }

    private void disarmTimeout(TaskNode<?> t) {
        t.setRunner(null);
        t.timeoutFuture.cancel(false);
        // an interrupt meant for this task must not leak into the next one
        Thread.interrupted();
    }

    /** A task timed out while its thread still runs it: give its processor another thread. */
    void taskTimedOut(TaskNode<?> t) {
        int i = t.processor;
        if (i >= 0) {
            compensate(processors[i]);
        }
    }

    // ------------------------------------------------------------------------------------------------
    // Waiting

    /** Blocks until {@code t} is done, helping or compensating when called from a worker. */
    void awaitCompletion(TaskNode<?> t) {
        checkJoinable(t);
        Thread th = Thread.currentThread();
        if (th instanceof WorkerThread && ((WorkerThread) th).scheduler == this) {
            WorkerThread w = (WorkerThread) th;
            CpuProcessor p = w.proc;
            if (p != null && p.active == w) {
                if (t.isReady() && t.options.scope().allows(p) && t.claim()) {
                    run(t, p, w, false);
                    return;
                }
                for (int i = 0; i < JOIN_SPINS && !t.isDone(); i++) {
                    if (i < SPINS) {
                        Thread.onSpinWait();
                    } else {
                        Thread.yield();
                    }
                }
                if (t.isDone()) {
                    return;
                }
                compensate(p);
            }
        }
        boolean interrupted = false;
        if (t.addWaiter(th)) {
            while (!t.isDone()) {
                LockSupport.park(t);
                if (Thread.interrupted()) {
                    interrupted = true;
                }
            }
        }
        if (interrupted) {
            th.interrupt();
        }
    }

    /** Waits up to {@code timeoutNs} (negative: forever); true if done. */
    boolean awaitCompletionInterruptibly(TaskNode<?> t, long timeoutNs) throws InterruptedException {
        checkJoinable(t);
        if (timeoutNs < 0) {
            Thread th = Thread.currentThread();
            if (th instanceof WorkerThread) {
                // from a task: the compensating join, which keeps the interrupt status
                awaitCompletion(t);
                if (Thread.interrupted()) {
                    throw new InterruptedException();
                }
                return true;
            }
        }
        long deadline = System.nanoTime() + timeoutNs;
        if (t.addWaiter(Thread.currentThread())) {
            while (!t.isDone()) {
                if (timeoutNs < 0) {
                    LockSupport.park(t);
                } else {
                    long left = deadline - System.nanoTime();
                    if (left <= 0) {
                        return false;
                    }
                    LockSupport.parkNanos(t, left);
                }
                if (Thread.interrupted()) {
                    throw new InterruptedException();
                }
            }
        }
        return true;
    }

    private static void checkJoinable(TaskNode<?> t) {
        if (t.unsubmitted) {
            throw new IllegalStateException("task " + t.name() + " belongs to a DataDeps region that is still open; "
                    + "close the region before waiting on its tasks");
        }
    }

    // ------------------------------------------------------------------------------------------------
    // Bookkeeping and observability

    void taskSettled(TaskNode<?> t) {
        settled.increment();
        TaskState s = t.state();
        if (s == TaskState.FAILED) {
            failed.increment();
        } else if (s == TaskState.CANCELLED) {
            cancelled.increment();
        }
        if (recorder != null) {
            recorder.settled(t);
        }
    }

    boolean tracing() {
        return recorder != null;
    }

    /**
     * Adds a counter sample (named values at this moment) to the trace, shown as a counter track in Perfetto; does
     * nothing unless the scheduler records a trace.
     */
    public void traceCounter(String name, java.util.Map<String, Double> values) {
        if (recorder != null) {
            recorder.counter(Objects.requireNonNull(name, "name"), values);
        }
    }

    /** The scheduler whose task the calling thread is running, or null on any other thread. */
    public static Scheduler current() {
        return Thread.currentThread() instanceof WorkerThread w ? w.scheduler : null;
    }

    void callbackFailed(TaskNode<?> t, Throwable e) {
        LOG.error("completion callback of task {} threw; other callbacks still run", t.name(), e);
    }

    public CostModel costModel() {
        return costModel;
    }

    public PlacementPolicy policy() {
        return policy;
    }

    public List<Processor> processors() {
        return List.of(processors);
    }

    public Context context() {
        return ctx;
    }

    /** Tasks that reached a terminal state since launch. */
    public long settledTasks() {
        return settled.sum();
    }

    /**
     * Waits until every task spawned so far has settled (tasks of still-open {@link DataDeps} regions
     * count too). Polls with exponential back-off, so it costs the workers nothing.
     *
     * @return true if quiescent, false on timeout
     */
    public boolean awaitQuiescence(Duration timeout) {
        long deadline = System.nanoTime() + timeout.toNanos();
        long pause = 10_000;
        while (settled.sum() < ids.get()) {
            long left = deadline - System.nanoTime();
            if (left <= 0) {
                return false;
            }
            LockSupport.parkNanos(Math.min(pause, left));
            pause = Math.min(pause * 2, 1_000_000);
        }
        return true;
    }

    /** Starts a new measurement window for {@link #summary()} (and clears the trace, if recording). */
    public void resetStats() {
        long[] base = new long[processors.length * 3 + 3];
        long now = System.nanoTime();
        for (int i = 0; i < processors.length; i++) {
            base[3 * i] = processors[i].tasks();
            base[3 * i + 1] = processors[i].busyNs();
            // an idle period in progress will be recorded whole when it ends: its part before now is not ours
            base[3 * i + 2] = processors[i].idleNsAt(now);
        }
        int k = processors.length * 3;
        base[k] = settled.sum();
        base[k + 1] = failed.sum();
        base[k + 2] = cancelled.sum();
        statsBase = base;
        statsStartNs = now;
        if (recorder != null) {
            recorder.clear();
        }
    }

    /**
     * What happened since launch or the last {@link #resetStats()}: tasks, utilization per processor,
     * scheduler overhead per task and, when tracing, the critical path.
     */
    public RunSummary summary() {
        long now = System.nanoTime();
        long wall = now - statsStartNs;
        long[] base = statsBase;
        int n = processors.length;
        String[] names = new String[n];
        long[] tasks = new long[n], busy = new long[n], idleNs = new long[n];
        for (int i = 0; i < n; i++) {
            names[i] = processors[i].name();
            tasks[i] = processors[i].tasks() - base[3 * i];
            busy[i] = processors[i].busyNs() - base[3 * i + 1];
            idleNs[i] = processors[i].idleNsAt(now) - base[3 * i + 2];
        }
        Trace trace = recorder == null ? null : recorder.snapshot(names, ctx.name());
        return new RunSummary(policy.name(), wall, settled.sum() - base[3 * n], failed.sum() - base[3 * n + 1],
                cancelled.sum() - base[3 * n + 2], names, tasks, busy, idleNs,
                trace == null ? -1 : trace.criticalPathNs(), trace == null ? -1 : trace.makespanNs());
    }

    /** The recorded trace since launch or the last reset. */
    public Trace trace() {
        if (recorder == null) {
            throw new IllegalStateException("tracing is off: launch with new Scheduler.Context().trace(true)");
        }
        String[] names = new String[processors.length];
        for (int i = 0; i < names.length; i++) {
            names[i] = processors[i].name();
        }
        return recorder.snapshot(names, ctx.name());
    }

    // ------------------------------------------------------------------------------------------------
    // Shutdown

    /**
     * Stops the scheduler: tasks not yet started are cancelled (their joiners wake), running tasks get
     * {@link Context#closeTimeout()} to finish, then their threads are interrupted.
     */
    @Override
    public void close() {
        if (closed) {
            return;
        }
        closed = true;
        cancelQueued(shared);
        for (CpuProcessor p : processors) {
            cancelQueued(p.queue);
        }
        List<WorkerThread> all;
        synchronized (allThreads) {
            all = new ArrayList<>(allThreads);
        }
        for (WorkerThread w : all) {
            LockSupport.unpark(w);
        }
        long deadline = System.nanoTime() + ctx.closeTimeout().toNanos();
        for (WorkerThread w : all) {
            if (w == Thread.currentThread()) {
                continue;
            }
            try {
                long left = TimeUnit.NANOSECONDS.toMillis(deadline - System.nanoTime());
                if (left > 0) {
                    w.join(left);
                }
                if (w.isAlive()) {
                    LOG.warn("worker {} still runs a task {} ms after close(); interrupting it",
                            w.getName(), ctx.closeTimeout().toMillis());
                    w.interrupt();
                }
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
                break;
            }
        }
        // Tasks dispatched while closing were cancelled by dispatch(); sweep once more for stragglers.
        cancelQueued(shared);
        for (CpuProcessor p : processors) {
            cancelQueued(p.queue);
        }
        ScheduledThreadPoolExecutor tm = timer;
        if (tm != null) {
            tm.shutdownNow();
        }
    }

    private static void cancelQueued(ReadyQueue<TaskNode<?>> q) {
        for (TaskNode<?> t : q.drain()) {
            t.cancel();
        }
    }

    public boolean isClosed() {
        return closed;
    }

    @Override
    public String toString() {
        return "Scheduler[" + ctx.name() + ", " + processors.length + " cpu, policy " + policy.name() + "]";
    }

}
