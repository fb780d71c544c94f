package dev.poniard.scheduler;

/** A thread that serves one {@link CpuProcessor} at a time, or waits in the spare pool. */
final class WorkerThread extends Thread {
    final Scheduler scheduler;
    /** The slot this thread serves; null while spare. */
    volatile CpuProcessor proc;
    /** Time spent in tasks run inline by joins inside the current task, excluded from its own time. */
    long nestedNs;
    /**
     * A successor this thread made ready while completing the task it ran from its loop, to run next without
     * queueing it (scheduler bypass, as in TBB): a chain then costs no queue operations and no cache line
     * shared with idle thieves. Set only when the processor's queue is empty, so it overtakes nothing queued;
     * handed back to the queue before anything that could block this thread (see {@link Scheduler}).
     */
    TaskNode<?> next;
    /** True only while this thread completes a task it ran from its loop: the one time {@link #next} is set. */
    boolean completing;

    WorkerThread(Scheduler scheduler, String name) {
        super(name);
        this.scheduler = scheduler;
        setDaemon(true);
    }

    @Override
    public void run() {
        scheduler.workerLoop(this);
    }
}
