package dev.poniard.scheduler;

import java.lang.invoke.MethodHandles;
import java.lang.invoke.VarHandle;
import java.util.concurrent.atomic.AtomicLong;

/**
 * A CPU worker slot: a ready queue and the one thread currently serving it. While that thread blocks in
 * a join, a spare thread takes the slot (see {@link Scheduler}), so the thread may change; the counters
 * are updated atomically for that reason.
 */
final class CpuProcessor implements Processor {
    private static final VarHandle PARKED;

    static {
        try {
            PARKED = MethodHandles.lookup().findVarHandle(CpuProcessor.class, "parked", int.class);
        } catch (ReflectiveOperationException e) {
            throw new ExceptionInInitializerError(e);
        }
    }

    private final int id;
    private final String name;
    final ReadyQueue<TaskNode<?>> queue;
    /** The thread serving this slot. */
    volatile WorkerThread active;
    /** 1 while the active thread is parked waiting for work; whoever resets it unparks. */
    @SuppressWarnings("unused")
    private volatile int parked;
    /**
     * Estimate of the task running now when it is long enough to matter to EFT ({@link #PUBLISH_NS} or
     * more), else 0: tiny tasks would only make every dispatch miss this cache line.
     */
    volatile long runningEstimateNs;
    /** Work taken from our own queue but not yet published to it; touched by the active thread only. */
    private long unpublishedNs;
    private int unpublishedTasks;
    /** Samples the timing of tiny tasks; touched by the thread running tasks here (a lost update is harmless). */
    int observeTick;

    /** Batches of own-queue work smaller than this are published lazily. */
    static final long PUBLISH_NS = 20_000;

    /** Written on every task: kept off the cache lines that dispatching threads read. */
    private final Counters counters = new Counters();
    /** When the current idle period started, 0 while busy: lets a summary count idle time not yet recorded. */
    volatile long idleSince;

    CpuProcessor(int id, String name, boolean prioritized) {
        this.id = id;
        this.name = name;
        this.queue = new ReadyQueue<>(prioritized);
    }

    @Override
    public int id() {
        return id;
    }

    @Override
    public String name() {
        return name;
    }

    @Override
    public Kind kind() {
        return Kind.CPU;
    }

    @Override
    public int memoryDomain() {
        return 0;
    }

    void markParked() {
        PARKED.setVolatile(this, 1);
    }

    /** Clears the parked flag; true for the one caller that cleared it. */
    boolean clearParked() {
        return (int) PARKED.getVolatile(this) == 1 && PARKED.compareAndSet(this, 1, 0);
    }

    /** Accounts for a task the active thread took from its own queue. */
    void tookOwn(long estimateNs) {
        unpublishedNs += estimateNs;
        if (++unpublishedTasks >= 32 || unpublishedNs >= PUBLISH_NS) {
            publish();
        }
    }

    /** Own-queue work taken and not yet published; meaningful to the active thread only. */
    long unpublishedNs() {
        return unpublishedNs;
    }

    /** Publishes own-queue work taken so far (before idling, so an idle processor shows no backlog). */
    void publish() {
        if (unpublishedTasks > 0) {
            queue.pulled(unpublishedNs);
            unpublishedNs = 0;
            unpublishedTasks = 0;
        }
    }

    void recordTask(long ns) {
        counters.tasks.getAndIncrement();
        counters.busyNs.getAndAdd(ns);
    }

    void recordIdle(long ns) {
        counters.idleNs.getAndAdd(ns);
    }

    /** Idle time up to {@code now}, including the idle period in progress. */
    long idleNsAt(long now) {
        long since = idleSince;
        return counters.idleNs.get() + (since == 0 ? 0 : now - since);
    }

    long tasks() {
        return counters.tasks.get();
    }

    long busyNs() {
        return counters.busyNs.get();
    }

    /** Statistics counters, padded away from the fields other threads read on the dispatch path. */
    @SuppressWarnings("unused")
    private static final class Counters {
        private long p01, p02, p03, p04, p05, p06, p07;
        final AtomicLong tasks = new AtomicLong();
        final AtomicLong busyNs = new AtomicLong();
        final AtomicLong idleNs = new AtomicLong();
        private long p11, p12, p13, p14, p15, p16, p17;
    }


    @Override
    public String toString() {
        return name;
    }
}
