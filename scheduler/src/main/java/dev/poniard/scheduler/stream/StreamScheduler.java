package dev.poniard.scheduler.stream;

import java.util.ArrayList;
import java.util.IdentityHashMap;
import java.util.List;
import java.util.Objects;

/**
 * Puts device work on streams: copies in on the host-to-device stream, copies out and host steps on the
 * device-to-host stream, kernels and library calls ({@link DeviceCall}) on the least-loaded compute stream —
 * or the high-priority one for critical-path work — and orders work that touches the same buffers with
 * events, never with host-blocking synchronisation.
 *
 * <p><b>Implementation overview.</b> Like a {@code DataDeps} region over buffers: for every buffer the
 * scheduler remembers the event of its last writer and the events of its readers since. Work that reads a
 * buffer waits for the last writer; work that writes it waits for the last writer and every reader since
 * (sequential consistency per buffer). Waits on events of the same stream are dropped: a stream already
 * runs in order. Every submission records one event, returned to the caller. With
 * {@link #singleStream} everything goes to one stream — the baseline multi-stream scheduling must beat.
 * Used by one thread at a time.
 */
public final class StreamScheduler {
    /** Whether the work reads or writes a buffer. */
    public record Access(Buffer buffer, boolean writes) {
        public Access {
            Objects.requireNonNull(buffer, "buffer");
        }

        public static Access in(Buffer b) {
            return new Access(b, false);
        }

        public static Access out(Buffer b) {
            return new Access(b, true);
        }
    }

    private record Mark(Stream stream, Event event) {
    }

    private static final class BufferState {
        Mark writer;
        final List<Mark> readers = new ArrayList<>();
    }

    private final Device device;
    private final boolean singleStream;
    private final IdentityHashMap<Buffer, BufferState> buffers = new IdentityHashMap<>();

    /** Multi-stream scheduling on {@code device}. */
    public StreamScheduler(Device device) {
        this(device, false);
    }

    /** @param singleStream put every operation on the first compute stream (the one-stream baseline) */
    public StreamScheduler(Device device, boolean singleStream) {
        this.device = device;
        this.singleStream = singleStream;
    }

    /** Copies {@code bytes} from pinned host memory to device memory. */
    public Event copyIn(Buffer host, Buffer dev, long bytes) {
        Stream s = singleStream ? device.computeStreams().get(0) : device.hostToDevice();
        return submit(s, () -> s.copy(host, 0, dev, 0, bytes), Access.in(host), Access.out(dev));
    }

    /** Copies {@code bytes} from device memory to pinned host memory. */
    public Event copyOut(Buffer dev, Buffer host, long bytes) {
        Stream s = singleStream ? device.computeStreams().get(0) : device.deviceToHost();
        return submit(s, () -> s.copy(dev, 0, host, 0, bytes), Access.in(dev), Access.out(host));
    }

    /**
     * Launches a kernel that touches the given buffers.
     *
     * @param critical on the critical path: runs on the high-priority stream
     */
    public Event launch(Runnable kernel, long estimateNs, boolean critical, Access... accesses) {
        Stream s = computeStream(critical);
        return submit(s, () -> s.launch(kernel, estimateNs), accesses);
    }

    /**
     * Launches a shipped kernel; the buffers it reads and writes come from its parameter modes, and
     * {@code extra} adds accesses the kernel's arguments do not show.
     *
     * @param critical on the critical path: runs on the high-priority stream
     */
    public Event launch(KernelLaunch kernel, long estimateNs, boolean critical, Access... extra) {
        List<Access> acc = new ArrayList<>(kernel.accesses());
        acc.addAll(List.of(extra));
        Stream s = computeStream(critical);
        return submit(s, () -> s.launch(kernel, estimateNs), acc.toArray(new Access[0]));
    }

    /**
     * Launches a library call; the buffers it reads and writes come from {@link DeviceCall#accesses()}, and
     * {@code extra} adds accesses the call does not declare.
     *
     * @param critical on the critical path: runs on the high-priority stream
     */
    public Event launch(DeviceCall call, long estimateNs, boolean critical, Access... extra) {
        List<Access> acc = new ArrayList<>(call.accesses());
        acc.addAll(List.of(extra));
        Stream s = computeStream(critical);
        return submit(s, () -> s.launch(call, estimateNs), acc.toArray(new Access[0]));
    }

    /**
     * Runs host code on pinned host buffers in order with the device work on them
     * ({@link Stream#launchHostFunction}): on the device-to-host stream, which the data it reads has usually
     * just come in on, so no event is needed between the copy out and the host step.
     */
    public Event host(Runnable fn, long estimateNs, Access... accesses) {
        Stream s = singleStream ? device.computeStreams().get(0) : device.deviceToHost();
        return submit(s, () -> s.launchHostFunction(fn, estimateNs), accesses);
    }

    private Stream computeStream(boolean critical) {
        List<Stream> cs = device.computeStreams();
        if (singleStream || critical || cs.size() == 1) {
            return cs.get(0);
        }
        // the least-loaded stream; the high-priority one is kept for critical work
        Stream best = cs.get(1);
        for (int i = 2; i < cs.size(); i++) {
            if (cs.get(i).pendingNs() < best.pendingNs()) {
                best = cs.get(i);
            }
        }
        return best;
    }

    private Event submit(Stream s, Runnable enqueue, Access... accesses) {
        for (Access a : accesses) {
            BufferState st = buffers.get(a.buffer());
            if (st == null) {
                continue;
            }
            waitIfOther(s, st.writer);
            if (a.writes()) {
                for (Mark r : st.readers) {
                    waitIfOther(s, r);
                }
            }
        }
        enqueue.run();
        Event e = s.record();
        Mark m = new Mark(s, e);
        for (Access a : accesses) {
            BufferState st = buffers.computeIfAbsent(a.buffer(), k -> new BufferState());
            if (a.writes()) {
                st.writer = m;
                st.readers.clear();
            } else {
                st.readers.add(m);
            }
        }
        return e;
    }

    private static void waitIfOther(Stream s, Mark m) {
        if (m != null && m.stream() != s && !m.event().isComplete()) {
            s.waitFor(m.event());
        }
    }

    /** Waits for all submitted work (the end of a run). */
    public void synchronize() {
        device.synchronize();
        buffers.clear();
    }
}
