package dev.poniard.bridge;

import java.time.Duration;
import java.util.Objects;
import java.util.concurrent.atomic.AtomicLong;
import org.bytedeco.javacpp.Pointer;

/**
 * Keeps the process's resident memory under a limit: a daemon thread reads the resident size every {@code period}
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
    private final Thread thread;
    private final AtomicLong collections = new AtomicLong();

    private NativeMemoryGuard(Context ctx) {
        this.ctx = ctx;
        this.thread = new Thread(this::watch, "poniard-native-memory-guard");
        thread.setDaemon(true);
    }

    public static NativeMemoryGuard start(Context ctx) {
        if (ctx.limitBytes <= 0) {
            throw new IllegalArgumentException("set limitBytes: the resident memory above which to collect");
        }
        NativeMemoryGuard g = new NativeMemoryGuard(ctx);
        g.thread.start();
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

    private void watch() {
        long last = System.nanoTime() - ctx.minInterval.toNanos();
        boolean trimPending = false;
        try {
            while (!Thread.currentThread().isInterrupted()) {
                // The sampling period of this daemon, not a wait for an event: there is none for the resident size.
                Thread.sleep(ctx.period.toMillis(), ctx.period.toNanosPart() % 1_000_000);
                long now = System.nanoTime();
                if (trimPending) {
                    // One period after the collection, so ND4J's deallocator threads have freed what it found.
                    trimMemory();
                    collections.incrementAndGet();
                    trimPending = false;
                    last = now;
                } else if (now - last >= ctx.minInterval.toNanos() && Pointer.physicalBytes() > ctx.limitBytes) {
                    System.gc();
                    trimPending = true;
                }
                ctx.afterCheck.run();
            }
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
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

    @Override
    public void close() {
        thread.interrupt();
        try {
            thread.join();
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
    }
}
