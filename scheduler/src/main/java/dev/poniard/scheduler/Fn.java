package dev.poniard.scheduler;

/**
 * Task function shapes accepted by {@link Scheduler#spawn}. Inputs arrive resolved: an argument given as a
 * {@link TaskHandle} is replaced by that task's result, an {@link Access} by its chunk. Functions may throw
 * checked exceptions; the task then fails with that exception as its cause.
 */
public final class Fn {
    private Fn() {
    }

    @FunctionalInterface
    public interface F0<R> {
        R call() throws Exception;
    }

    @FunctionalInterface
    public interface F1<A, R> {
        R apply(A a) throws Exception;
    }

    @FunctionalInterface
    public interface F2<A, B, R> {
        R apply(A a, B b) throws Exception;
    }

    @FunctionalInterface
    public interface F3<A, B, C, R> {
        R apply(A a, B b, C c) throws Exception;
    }

    /** Any number of inputs, as an array in the order given to spawn. */
    @FunctionalInterface
    public interface FN<R> {
        R apply(Object[] args) throws Exception;
    }

    /** A task run for its effect, typically on chunks of a {@link DataDeps} region. */
    @FunctionalInterface
    public interface Effect {
        void run(Object[] args) throws Exception;
    }
}
