package dev.poniard.bridge;

import java.time.Duration;
import java.util.Objects;
import java.util.concurrent.Executors;
import java.util.concurrent.ScheduledExecutorService;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicLong;
import org.bytedeco.javacpp.Pointer;

/**
 * Keeps the process's resident memory under a limit: a daemon thread reads the resident size every {@code period}
 * (a scheduled check: the resident size has no event to wait for)
 * and, when it is above {@code limitBytes}, runs the Java GC (ND4J frees a dead array's native memory only when the
 * GC collects its handle) and hands freed heap back to the system, at most once per {@code minInterval}.
 *
 * <p>It replaces JavaCPP's own limit ({@code -Dorg.bytedeco.javacpp.maxphysicalbytes}), which reads the resident size
 * on every native allocation while holding a lock that every allocating thread takes: 3.4 µs per allocation on one
 * thread and 10-12 µs on each of two, against 0.75 and 1.5 µs without it, and ND4J allocates several per op. The
 * command line turns JavaCPP's check off and starts this guard instead ({@code -Dponiard.maxPhysicalBytes}); in your
 * own JVM do the same:
 *
 * <pre>{@code
 * // java -Dorg.bytedeco.javacpp.maxphysicalbytes=0 ...
 * try (NativeMemoryGuard guard = NativeMemoryGuard.start(new NativeMemoryGuard.Context().limitBytes(8L << 30))) {
 *     train();
 * }
 * }</pre>
 *
 * Between two reads the process can overshoot the limit by what it allocates in one period.
 */
public final class NativeMemoryGuard implements AutoCloseable {
    /** Settings; {@link #limitBytes} has no default. */
    public static final class Context {
        private long limitBytes;
        private Duration period = Duration.ofMillis(200);
        private Duration minInterval = Duration.ofSeconds(1);
        private Runnable afterCheck = () -> { };

        public Context limitBytes(long value) {
            if (value <= 0) {
                throw new IllegalArgumentException("the resident memory limit must be positive, got " + value);
            }
            limitBytes = value;
            return this;
        }

        public Context period(Duration value) {
            period = Objects.requireNonNull(value, "period");
            return this;
        }

        /** The least time between two collections, so a limit set below the live data does not collect nonstop. */
        public Context minInterval(Duration value) {
            minInterval = Objects.requireNonNull(value, "minInterval");
            return this;
        }

        /** Runs on the guard's thread after each read of the resident size (and collection, if any): a test hook. */
        Context afterCheck(Runnable value) {
            afterCheck = Objects.requireNonNull(value, "afterCheck");
            return this;
        }
    }

    private final Context ctx;
    /** The checker's one thread, kept so that {@link #close()} can join it. */
    private volatile Thread thread;
    private final ScheduledExecutorService checker = Executors.newSingleThreadScheduledExecutor(r -> {
        Thread t = new Thread(r, "poniard-native-memory-guard");
        t.setDaemon(true);
        thread = t;
        return t;
    });
    private final AtomicLong collections = new AtomicLong();
    /** State of the checks, touched only by the checker's thread. */
    private long lastCollection;
    private boolean trimPending;

    private NativeMemoryGuard(Context ctx) {
        this.ctx = ctx;
        this.lastCollection = System.nanoTime() - ctx.minInterval.toNanos();
    }

    public static NativeMemoryGuard start(Context ctx) {
        if (ctx.limitBytes <= 0) {
            throw new IllegalArgumentException("set limitBytes: the resident memory above which to collect");
        }
        NativeMemoryGuard g = new NativeMemoryGuard(ctx);
        long period = ctx.period.toNanos();
        g.checker.scheduleWithFixedDelay(g::check, period, period, TimeUnit.NANOSECONDS);
        return g;
    }

    /**
     * Parses a byte count as JavaCPP does ({@code 8G}, {@code 512m}, {@code 1073741824}).
     *
     * @throws IllegalArgumentException naming the property and the value when it is not a positive byte count
     */
    public static long parseBytes(String property, String value) {
        long bytes;
        try {
            bytes = Pointer.parseBytes(value.trim(), Runtime.getRuntime().maxMemory());
        } catch (NumberFormatException e) {
            bytes = -1;
        }
        if (bytes <= 0) {
            throw new IllegalArgumentException(property + "=" + value + " is not a positive byte count; use e.g. 8G");
        }
        return bytes;
    }

    /** How many times the guard has collected so far. */
    public long collections() {
        return collections.get();
    }

    private void check() {
        long now = System.nanoTime();
        if (trimPending) {
            // One period after the collection, so ND4J's deallocator threads have freed what it found.
            trimMemory();
            collections.incrementAndGet();
            trimPending = false;
            lastCollection = now;
        } else if (now - lastCollection >= ctx.minInterval.toNanos() && Pointer.physicalBytes() > ctx.limitBytes) {
            System.gc();
            trimPending = true;
        }
        ctx.afterCheck.run();
    }

    /** glibc's malloc_trim through JavaCPP (as its own limit does), so freed native memory leaves the resident size. */
    private static void trimMemory() {
        if (TRIM != null) {
            try {
                TRIM.invoke(null);
            } catch (ReflectiveOperationException e) {
                // Trimming is an optimisation: without it the freed memory is reused by later allocations.
            }
        }
    }

    private static final java.lang.reflect.Method TRIM = trimMethod();

    private static java.lang.reflect.Method trimMethod() {
        try {
            java.lang.reflect.Method m = Pointer.class.getDeclaredMethod("trimMemory");
            m.setAccessible(true);
            return m;
        } catch (ReflectiveOperationException | RuntimeException e) {
            return null;
        }
    }

    /** Stops the checks and joins the checker's thread, so nothing runs after it returns. */
    @Override
    public void close() {
        checker.shutdownNow();
        try {
            Thread t = thread;
            if (t != null) {
                t.join();
            }
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
    }
}
