package dev.poniard.scheduler.stream.cpu;

import dev.poniard.scheduler.stream.Buffer;
import dev.poniard.scheduler.stream.BufferPool;
import dev.poniard.scheduler.stream.Device;
import dev.poniard.scheduler.stream.DeviceCall;
import dev.poniard.scheduler.stream.DeviceTimeline;
import dev.poniard.scheduler.stream.Event;
import dev.poniard.scheduler.stream.KernelLaunch;
import dev.poniard.scheduler.stream.Stream;
import dev.poniard.scheduler.stream.StreamScheduler.Access;
import java.nio.ByteBuffer;
import java.util.ArrayList;
import java.util.Collections;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.CompletionException;
import java.util.concurrent.LinkedBlockingQueue;
import java.util.concurrent.Semaphore;
import java.util.concurrent.atomic.AtomicLong;
import java.util.concurrent.locks.LockSupport;
import java.util.function.Function;

/**
 * A device emulated on the CPU, so that stream scheduling runs and is tested on every machine and is the
 * model the simulator uses for devices.
 *
 * <p><b>Implementation overview.</b> Every stream is a lane: one daemon thread taking operations from its
 * queue in order. Kernels run on the compute lanes, at most {@link Context#computeCapacity()} at once (a
 * semaphore), so K compute streams never make more busy threads than cores; library calls
 * ({@link DeviceCall#runOnHost()}) and host functions run there the same way. Each copy stream is a copy
 * engine: it copies for real and then parks until {@code bytes / bandwidth} has passed, which emulates a
 * PCIe or NVLink engine without burning a core. Events are futures completed by the lane when it reaches
 * them; {@code waitFor} parks the lane (never the host) until the event completes. A failing operation
 * fails its stream: the lane skips later work and completes later events exceptionally with the cause.
 */
public final class CpuDevice implements Device {

    /** Configuration; defaults from system properties {@code poniard.cpuDevice.*}. */
    public static final class Context {
        private String name = "cpu-device";
        private int computeStreams = Integer.getInteger("poniard.cpuDevice.computeStreams", 2);
        private int computeCapacity = Integer.getInteger("poniard.cpuDevice.computeCapacity",
                Runtime.getRuntime().availableProcessors());
        private double copyBytesPerSecond = Double.parseDouble(System.getProperty("poniard.cpuDevice.copyGBps", "12")) * 1e9;
        private long memoryBytes = 1L << 30;
        private long stagingBytes = 256L << 20;
        private DeviceTimeline timeline;

        public String name() {
            return name;
        }

        public Context name(String value) {
            name = value;
            return this;
        }

        public int computeStreams() {
            return computeStreams;
        }

        /** K: compute streams; the first is the high-priority one. */
        public Context computeStreams(int value) {
            computeStreams = value;
            return this;
        }

        public int computeCapacity() {
            return computeCapacity;
        }

        /** Kernels that may run at once (default: one per core). */
        public Context computeCapacity(int value) {
            computeCapacity = value;
            return this;
        }

        public double copyBytesPerSecond() {
            return copyBytesPerSecond;
        }

        /** Emulated bandwidth of each copy engine. */
        public Context copyBytesPerSecond(double value) {
            copyBytesPerSecond = value;
            return this;
        }

        public long memoryBytes() {
            return memoryBytes;
        }

        public Context memoryBytes(long value) {
            memoryBytes = value;
            return this;
        }

        public long stagingBytes() {
            return stagingBytes;
        }

        public Context stagingBytes(long value) {
            stagingBytes = value;
            return this;
        }

        public DeviceTimeline timeline() {
            return timeline;
        }

        /** Records every operation the streams run, with its start and end (null, the default: none). */
        public Context timeline(DeviceTimeline value) {
            timeline = value;
            return this;
        }

        public Context conclude() {
            if (computeStreams < 1 || computeCapacity < 1) {
                throw new IllegalArgumentException("a device needs computeStreams >= 1 and computeCapacity >= 1, got "
                        + computeStreams + " and " + computeCapacity);
            }
            if (!(copyBytesPerSecond > 0)) {
                throw new IllegalArgumentException("copyBytesPerSecond must be > 0, got " + copyBytesPerSecond);
            }
            return this;
        }
    }

    private final Context ctx;
    private final Semaphore computeSlots;
    private final List<Stream> compute;
    private final Lane h2d;
    private final Lane d2h;
    private final List<Lane> lanes = new ArrayList<>();
    private final BufferPool memory;
    private final BufferPool staging;

    private CpuDevice(Context ctx) {
        this.ctx = ctx;
        this.computeSlots = new Semaphore(ctx.computeCapacity());
        List<Stream> c = new ArrayList<>();
        for (int i = 0; i < ctx.computeStreams(); i++) {
            c.add(lane(ctx.name() + "-compute-" + i, Stream.Kind.COMPUTE, i == 0));
        }
        this.compute = Collections.unmodifiableList(c);
        this.h2d = lane(ctx.name() + "-h2d", Stream.Kind.HOST_TO_DEVICE, false);
        this.d2h = lane(ctx.name() + "-d2h", Stream.Kind.DEVICE_TO_HOST, false);
        this.memory = new BufferPool(ctx.name() + "-memory", false, ctx.memoryBytes());
        this.staging = new BufferPool(ctx.name() + "-pinned", true, ctx.stagingBytes());
    }

    public static CpuDevice launch(Context ctx) {
        CpuDevice d = new CpuDevice(ctx.conclude());
        for (Lane l : d.lanes) {
            l.thread.start();
        }
        return d;
    }

    private Lane lane(String name, Stream.Kind kind, boolean priority) {
        Lane l = new Lane(name, kind, priority);
        lanes.add(l);
        return l;
    }

    @Override
    public String name() {
        return ctx.name();
    }

    @Override
    public List<Stream> computeStreams() {
        return compute;
    }

    @Override
    public Stream hostToDevice() {
        return h2d;
    }

    @Override
    public Stream deviceToHost() {
        return d2h;
    }

    @Override
    public BufferPool memory() {
        return memory;
    }

    @Override
    public BufferPool staging() {
        return staging;
    }

    @Override
    public double copyBytesPerSecond() {
        return ctx.copyBytesPerSecond();
    }

    @Override
    public int computeCapacity() {
        return ctx.computeCapacity();
    }

    @Override
    public void synchronize() {
        // every lane drains before the first failure is thrown, so callers may reuse their buffers afterwards
        List<Event> ends = new ArrayList<>();
        for (Lane l : lanes) {
            ends.add(l.record());
        }
        IllegalStateException first = null;
        for (Event e : ends) {
            try {
                e.synchronize();
            } catch (IllegalStateException ex) {
                if (first == null) {
                    first = ex;
                }
            }
        }
        if (first != null) {
            throw first;
        }
    }

    @Override
    public void close() {
        for (Lane l : lanes) {
            l.closing = true;
            l.queue.add(Lane.STOP);
        }
        for (Lane l : lanes) {
            try {
                l.thread.join(10_000);
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
                break;
            }
        }
        memory.close();
        staging.close();
    }

    /** An event: a future the lane completes when it reaches it. */
    private static final class CpuEvent implements Event {
        final CompletableFuture<Void> done = new CompletableFuture<>();
        /** The timeline id of the last operation before this event on its stream, or -1. */
        final long sourceOp;
        /** When the stream reached this event, written before {@link #done} completes. */
        volatile long reachedNs;

        CpuEvent(long sourceOp) {
            this.sourceOp = sourceOp;
        }

        @Override
        public boolean isComplete() {
            return done.isDone();
        }

        @Override
        public void synchronize() {
            try {
                done.join();
            } catch (CompletionException e) {
                throw new IllegalStateException("device work failed before this event: " + e.getCause(), e.getCause());
            }
        }
    }

    /** One stream: a thread running its operations in order. */
    private final class Lane implements Stream {
        static final Runnable STOP = () -> { };
        final String name;
        final Kind kind;
        final boolean priority;
        final LinkedBlockingQueue<Runnable> queue = new LinkedBlockingQueue<>();
        final AtomicLong pending = new AtomicLong();
        /** The timeline's marks of this stream, or null without a timeline. */
        final DeviceTimeline.Marks marks = ctx.timeline() == null ? null : new DeviceTimeline.Marks();
        final Thread thread;
        volatile boolean closing;
        /** The first failure on this stream; later work is skipped. */
        Throwable failure;
        /** When this stream's last transfer is due, and when its last other operation ended; lane thread only. */
        long engineFreeNs = Long.MIN_VALUE;
        long otherOpEndNs = Long.MIN_VALUE;

        Lane(String name, Kind kind, boolean priority) {
            this.name = name;
            this.kind = kind;
            this.priority = priority;
            this.thread = new Thread(this::loop, name);
            this.thread.setDaemon(true);
        }

        private void loop() {
            for (;;) {
                Runnable op;
                try {
                    op = queue.take();
                } catch (InterruptedException e) {
                    return;
                }
                if (op == STOP) {
                    return;
                }
                op.run();
            }
        }

        private void enqueue(Runnable op) {
            if (closing) {
                throw new IllegalStateException("device " + ctx.name() + " is closed");
            }
            queue.add(op);
        }

        /**
         * Enqueues the work {@code op} builds around a callback, which it calls with the times it ran: the timeline
         * records them as operation {@code what} (with its id and the operations it waited for), or nothing without
         * one. With a timeline it holds the lane's lock, as {@link #record()} does, so that an event follows the
         * operation enqueued last; without one it takes no lock.
         */
        private void enqueueTimed(String what, Function<Ran, Runnable> op) {
            DeviceTimeline t = ctx.timeline();
            if (t == null) {
                enqueue(op.apply(NOT_RECORDED));
                return;
            }
            synchronized (this) {
                long id = t.nextId();
                long[] after = marks.enqueue(id);
                enqueue(op.apply((start, end) -> t.add(id, after, name, what, start, end)));
            }
        }

        @Override
        public String name() {
            return name;
        }

        @Override
        public Kind kind() {
            return kind;
        }

        @Override
        public boolean highPriority() {
            return priority;
        }

        @Override
        public void launch(Runnable work, long estimateNs) {
            run("kernel", work, estimateNs);
        }

        /** Runs {@code work} in stream order on a compute slot; {@code what} names it in the timeline. */
        private void run(String what, Runnable work, long estimateNs) {
            pending.addAndGet(estimateNs);
            enqueueTimed(what, ran -> () -> {
                try {
                    if (failure == null) {
                        computeSlots.acquireUninterruptibly();
                        try {
                            long start = System.nanoTime();
                            work.run();
                            ran.ran(start, System.nanoTime());
                        } finally {
                            computeSlots.release();
                        }
                    }
                } catch (RuntimeException | Error e) {
                    failure = e;
                } finally {
                    pending.addAndGet(-estimateNs);
                    otherOpEndNs = System.nanoTime();
                }
            });
        }

        @Override
        public void launch(KernelLaunch kernel, long estimateNs) {
            for (int i = 0; i < kernel.argCount(); i++) {
                if (kernel.arg(i) instanceof Buffer && ((Buffer) kernel.arg(i)).memory().bytes() == null) {
                    throw new IllegalArgumentException("kernel " + kernel.kernel().name() + ", argument " + i
                            + ": memory of a GPU cannot be used by the CPU emulation " + ctx.name());
                }
            }
            run(kernel.kernel().name(), () -> kernel.kernel().runOnCpu(kernel), estimateNs);
        }

        @Override
        public void launch(DeviceCall call, long estimateNs) {
            for (Access a : call.accesses()) {
                if (a.buffer().memory().bytes() == null) {
                    throw new IllegalArgumentException(call.name() + ": memory of a GPU cannot be used by the CPU"
                            + " emulation " + ctx.name());
                }
                // as on a GPU, where a library call gets device pointers: refused here too, so tests catch it
                if (a.buffer().host()) {
                    throw new IllegalArgumentException(call.name() + ": a buffer is pinned host memory; library calls"
                            + " work on device memory: acquire it from Device.memory() and copy the data in first");
                }
            }
            run(call.name(), call::runOnHost, estimateNs);
        }

        /** Host code is CPU work here like a kernel, so it takes a compute slot too (no more busy threads than cores). */
        @Override
        public void launchHostFunction(Runnable fn, long estimateNs) {
            run("host function", fn, estimateNs);
        }

        @Override
        public void copy(Buffer from, long fromOffset, Buffer to, long toOffset, long bytes) {
            if (fromOffset < 0 || toOffset < 0 || bytes < 0 || fromOffset + bytes > from.capacity()
                    || toOffset + bytes > to.capacity()) {
                throw new IllegalArgumentException("copy of " + bytes + " bytes from offset " + fromOffset + " of a "
                        + from.capacity() + "-byte buffer to offset " + toOffset + " of a " + to.capacity()
                        + "-byte buffer is out of bounds");
            }
            long estimate = (long) (bytes * 1e9 / ctx.copyBytesPerSecond());
            pending.addAndGet(estimate);
            long queued = System.nanoTime();
            enqueueTimed(DeviceTimeline.copyName(bytes), ran -> () -> {
                try {
                    if (failure == null) {
                        // Back-to-back copies run at the engine's bandwidth, as a DMA engine's do: a transfer starts
                        // when it was queued, the stream's last other operation ended (a kernel; a wait, when its event was
                        // reached), or the previous transfer was due, whichever is last, so a late wake-up of this thread (the park below overshoots by up to a scheduler tick
                        // on a busy machine) is not added to every transfer.
                        long start = Math.max(queued, Math.max(engineFreeNs, otherOpEndNs));
                        engineFreeNs = start + estimate;
                        ByteBuffer src = from.bytes().duplicate();
                        src.limit((int) (fromOffset + bytes)).position((int) fromOffset);
                        ByteBuffer dst = to.bytes().duplicate();
                        dst.position((int) toOffset);
                        dst.put(src);
                        // the engine's bandwidth: wait out the rest of the transfer time without spinning
                        long end = engineFreeNs;
                        for (long left = end - System.nanoTime(); left > 0; left = end - System.nanoTime()) {
                            LockSupport.parkNanos(left);
                        }
                        ran.ran(start, end);
                    }
                } catch (RuntimeException | Error e) {
                    failure = e;
                } finally {
                    pending.addAndGet(-estimate);
                }
            });
        }

        @Override
        public void waitFor(Event event) {
            if (!(event instanceof CpuEvent)) {
                throw new IllegalArgumentException("a CPU stream can only wait for events of a CPU device, got " + event);
            }
            CpuEvent e = (CpuEvent) event;
            if (marks != null) {
                marks.waitFor(e.sourceOp);
            }
            enqueue(() -> {
                try {
                    e.done.join();
                } catch (CompletionException ex) {
                    if (failure == null) {
                        failure = ex.getCause();
                    }
                }
                // the wait ended when the event was reached, not when this thread noticed (it may have been parked)
                otherOpEndNs = Math.max(otherOpEndNs, e.reachedNs);
            });
        }

        @Override
        public Event record() {
            if (marks == null) {
                return recordAfter(-1);
            }
            synchronized (this) {
                return recordAfter(marks.last());
            }
        }

        /** Enqueues an event that follows the timeline's operation {@code sourceOp} (-1: none). */
        private Event recordAfter(long sourceOp) {
            CpuEvent e = new CpuEvent(sourceOp);
            enqueue(() -> {
                e.reachedNs = System.nanoTime();
                if (failure == null) {
                    e.done.complete(null);
                } else {
                    e.done.completeExceptionally(failure);
                }
            });
            return e;
        }

        @Override
        public long pendingNs() {
            return pending.get();
        }

        @Override
        public String toString() {
            return name;
        }
    }

    /** Reports when an operation ran (to the timeline, or nowhere). */
    private interface Ran {
        void ran(long startNanoTime, long endNanoTime);
    }

    private static final Ran NOT_RECORDED = (start, end) -> { };
}
