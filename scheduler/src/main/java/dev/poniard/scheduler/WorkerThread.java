package dev.poniard.scheduler;

/** A thread that serves one {@link CpuProcessor} at a time, or waits in the spare pool. */
final class WorkerThread extends Thread {
    final Scheduler scheduler;
    /** The slot this thread serves; null while spare. */
    volatile CpuProcessor proc;
    /** Time spent in tasks run inline by joins inside the current task, excluded from its own time. */
    long nestedNs;

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
