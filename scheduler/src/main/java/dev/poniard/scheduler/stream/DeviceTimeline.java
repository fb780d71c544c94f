package dev.poniard.scheduler.stream;

import dev.poniard.scheduler.TaskState;
import dev.poniard.scheduler.Trace;
import java.time.Instant;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.concurrent.ConcurrentLinkedQueue;
import java.util.concurrent.atomic.AtomicLong;

/**
 * What a device ran, stream by stream: one interval per kernel, library call, host function and copy, on the host's
 * clock, each with the operations on other streams it waited for through events. Give one to a device's context
 * ({@code CpuDevice.Context.timeline}, {@code CudaDevice.Context.timeline}) and write it with {@link #toTrace}: a
 * Chrome trace with a lane per stream, where copies overlapping kernels show as intervals side by side and an arrow
 * runs from each operation to the one that waited for it. The CPU emulation adds each operation as it ends; a CUDA
 * device times each one with a pair of events and adds them when it synchronizes. Any thread may add.
 */
public final class DeviceTimeline {
    /**
     * Operation {@code id} on {@code stream}, from {@code startNs} to {@code endNs} after the timeline's time zero; it
     * waited (through events) for the operations {@code after} on other streams.
     */
    public record Interval(long id, long[] after, String stream, String name, long startNs, long endNs) {
        public Interval {
            after = after.clone();
        }

        @Override
        public long[] after() {
            return after.clone();
        }

        @Override
        public String toString() {
            return name + " #" + id + " on " + stream + " [" + startNs + ", " + endNs + "] ns"
                    + (after.length == 0 ? "" : " after " + java.util.Arrays.toString(after));
        }
    }

    /**
     * A stream's side of the timeline's arrows: the id of the last operation enqueued on it (which an event recorded
     * now follows) and the operations that the events it was told to wait for follow. Thread-safe.
     */
    public static final class Marks {
        private long last = -1;
        private final List<Long> waits = new ArrayList<>();

        /** Operation {@code id} is enqueued on the stream: returns what it waits for, and it becomes the last one. */
        public synchronized long[] enqueue(long id) {
            long[] after = waits.stream().mapToLong(Long::longValue).toArray();
            waits.clear();
            last = id;
            return after;
        }

        /** The last operation enqueued on the stream, or -1: what an event recorded on it now follows. */
        public synchronized long last() {
            return last;
        }

        /** The stream was told to wait for an event that follows operation {@code op} (-1: none). */
        public synchronized void waitFor(long op) {
            if (op >= 0 && !waits.contains(op)) {
                waits.add(op);
            }
        }
    }

    private final ConcurrentLinkedQueue<Interval> intervals = new ConcurrentLinkedQueue<>();
    private final AtomicLong dropped = new AtomicLong();
    private final AtomicLong ids = new AtomicLong();
    private volatile long originNs;
    private volatile long originEpochNs;

    public DeviceTimeline() {
        clear();
    }

    /** A new operation id, taken when the operation is enqueued (ids never repeat, also across {@link #clear()}). */
    public long nextId() {
        return ids.getAndIncrement();
    }

    /**
     * Adds operation {@code id} (from {@link #nextId()}), which waited for the operations {@code after} and ran on
     * {@code stream} from {@code startNanoTime} to {@code endNanoTime} (both {@link System#nanoTime()}); one that
     * started before the time zero (before {@link #clear()}) is left out.
     */
    public void add(long id, long[] after, String stream, String name, long startNanoTime, long endNanoTime) {
        long origin = originNs;
        if (startNanoTime >= origin) {
            long end = Math.max(startNanoTime, endNanoTime);
            intervals.add(new Interval(id, after, stream, name, startNanoTime - origin, end - origin));
        }
    }

    /** Counts operations a device ran but could not time (a CUDA device bounds its unresolved event pairs). */
    public void addDropped(long count) {
        dropped.addAndGet(count);
    }

    /** Operations left out of the timeline because the device could not time them. */
    public long dropped() {
        return dropped.get();
    }

    /** Forgets every interval and moves the time zero to now, e.g. after a warm-up run. */
    public void clear() {
        originNs = System.nanoTime();
        Instant now = Instant.now();
        originEpochNs = now.getEpochSecond() * 1_000_000_000L + now.getNano();
        intervals.clear();
        dropped.set(0);
    }

    /** The intervals added so far, in the order they were added. */
    public List<Interval> intervals() {
        return List.copyOf(intervals);
    }

    /**
     * The timeline as a trace (one process named after {@code device}, a lane per stream: compute streams first,
     * then host-to-device and device-to-host copies, then any other stream names seen), ready for
     * {@link Trace#writeChromeJson} and, across ranks, {@link Trace#ofRank}. Call it once the device has
     * synchronized, so that every operation is in.
     */
    public Trace toTrace(Device device) {
        List<String> lanes = new ArrayList<>();
        for (Stream s : device.computeStreams()) {
            lanes.add(s.name());
        }
        lanes.add(device.hostToDevice().name());
        lanes.add(device.deviceToHost().name());
        Map<String, Integer> lane = new HashMap<>();
        for (int i = 0; i < lanes.size(); i++) {
            lane.put(lanes.get(i), i);
        }
        List<Trace.TaskRecord> records = new ArrayList<>();
        for (Interval iv : intervals) {
            Integer l = lane.get(iv.stream());
            if (l == null) {
                l = lanes.size();
                lanes.add(iv.stream());
                lane.put(iv.stream(), l);
            }
            records.add(new Trace.TaskRecord(iv.id(), iv.name(), l, iv.startNs(), iv.endNs(), TaskState.DONE,
                    iv.after()));
        }
        return Trace.recorded("device " + device.name(), lanes.toArray(String[]::new), records, originEpochNs);
    }

    /** The name of a copy of {@code bytes} bytes in a timeline, e.g. {@code copy 2.0 MiB}. */
    public static String copyName(long bytes) {
        if (bytes < 1024) {
            return "copy " + bytes + " B";
        }
        double kib = bytes / 1024.0;
        return kib < 1024 ? String.format(Locale.ROOT, "copy %.1f KiB", kib)
                : String.format(Locale.ROOT, "copy %.1f MiB", kib / 1024);
    }
}
