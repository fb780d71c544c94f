package dev.poniard.scheduler.comm;

import java.util.concurrent.CompletableFuture;
import java.util.concurrent.Executor;
import java.util.concurrent.locks.LockSupport;

/**
 * Completion handle of one transport operation. The engine completes or fails it; the owner waits with spin,
 * then yield, then park, and while it spins or yields it drives the transport's progress itself (see
 * {@link Transport#tryProgress}); whoever completes the request unparks a parked waiter.
 */
final class Request {
    private static final int PENDING = 0;
    private static final int DONE = 1;
    private static final int FAILED = 2;

    private volatile int state = PENDING;
    private volatile Thread waiter;
    private Throwable error;
    /** Bytes actually received (receives) or sent (sends). Written before completion. */
    long length;
    private CompletableFuture<Void> future;
    private Executor futureExecutor;
    /** The transport the operation was submitted to; waiters drive its progress. Set before submission. */
    Transport engine;

    boolean isDone() {
        return state != PENDING;
    }

    void complete() {
        if (state == PENDING) {
            state = DONE;
            signal();
        }
    }

    void fail(Throwable t) {
        if (state == PENDING) {
            error = t;
            state = FAILED;
            signal();
        }
    }

    private void signal() {
        final Thread w = waiter;
        if (w != null) {
            LockSupport.unpark(w);
        }
        final CompletableFuture<Void> f;
        final Executor ex;
        synchronized (this) {
            f = future;
            ex = futureExecutor;
        }
        if (f != null) {
            ex.execute(this::settle);
        }
    }

    private void settle() {
        if (state == DONE) {
            future.complete(null);
        } else {
            future.completeExceptionally(error);
        }
    }

    /** A future completed on {@code executor} (never on the progress thread). */
    CompletableFuture<Void> toFuture(Executor executor) {
        final CompletableFuture<Void> f = new CompletableFuture<>();
        synchronized (this) {
            future = f;
            futureExecutor = executor;
        }
        if (state != PENDING) {
            executor.execute(this::settle);
        }
        return f;
    }

    /** Waits for completion; rethrows the failure as a {@link CommException}. */
    void await(long spinIterations) {
        await(spinIterations, 20);
    }

    /**
     * Waits: up to {@code spinIterations} busy spins (yielding every 1024th, and while flow-controlled), then
     * {@code yields} yields, each after a progress cycle of the transport (counting restarts whenever a cycle did
     * work), then parks until signalled.
     */
    void await(long spinIterations, long yields) {
        final Transport transport = engine;
        long idle = 0;
        while (state == PENDING && idle < spinIterations + yields) {
            if (transport != null && transport.tryProgress() > 0) {
                idle = 0;
            } else if (idle++ < spinIterations && (idle & 1023) != 0
                && (transport == null || !transport.flowControlled())) {
                Thread.onSpinWait();
            } else {
                // Yield also every 1024 spins, so that a peer sharing this core runs without waiting for the whole
                // spin budget, and while sends wait for flow control, so that the media driver's conductor gets
                // the core to advance the publisher limit (a no-op system call when nothing else is runnable).
                Thread.yield();
            }
        }
        if (state == PENDING) {
            if (transport != null) {
                transport.handOff(); // about to park: the progress thread must carry the operation on
            }
            waiter = Thread.currentThread();
            while (state == PENDING) {
                LockSupport.parkNanos(this, 1_000_000L);
            }
            waiter = null;
        }
        if (state == FAILED) {
            final Throwable t = error;
            if (t instanceof CommException ce) {
                throw ce;
            }
            throw new CommException("communication failed: " + t, t);
        }
    }
}
