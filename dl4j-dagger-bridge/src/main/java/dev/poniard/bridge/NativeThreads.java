package dev.poniard.bridge;

import org.nd4j.linalg.factory.Nd4j;

/** Holds ND4J's native math to one thread, so N scheduler workers use N cores and no more (DESIGN §2). */
public final class NativeThreads {
    private NativeThreads() {
    }

    /**
     * For {@code Scheduler.Context.workerStart}: limits libnd4j's and OpenBLAS's thread pools to one thread. Both
     * settings are process-wide in the native libraries; setting them from every worker is idempotent.
     */
    public static void oneThreadPerWorker() {
        Nd4j.getEnvironment().setMaxThreads(1);
        Nd4j.getEnvironment().setMaxMasterThreads(1);
        Nd4j.factory().blas().setMaxThreads(1);
    }
}
