package dev.poniard.scheduler.sim;

import dev.poniard.scheduler.Trace;
import java.util.Locale;

/**
 * What a simulated run did: makespan, per-device busy time and peak memory, bytes moved inside nodes and
 * between nodes, the number of events simulated, and the run as a trace in the same format as real runs.
 */
public final class SimResult {
    private final double makespanNs;
    private final double[] busyNs;
    private final long[] peakMemoryBytes;
    private final long intraNodeBytes;
    private final long interNodeBytes;
    private final long events;
    private final double wallNs;
    private final Trace trace;

    SimResult(double makespanNs, double[] busyNs, long[] peakMemoryBytes, long intraNodeBytes, long interNodeBytes,
              long events, double wallNs, Trace trace) {
        this.makespanNs = makespanNs;
        this.busyNs = busyNs;
        this.peakMemoryBytes = peakMemoryBytes;
        this.intraNodeBytes = intraNodeBytes;
        this.interNodeBytes = interNodeBytes;
        this.events = events;
        this.wallNs = wallNs;
        this.trace = trace;
    }

    /** Virtual time from the start to the last task's end, in nanoseconds. */
    public double makespanNs() {
        return makespanNs;
    }

    public int devices() {
        return busyNs.length;
    }

    public double busyNs(int device) {
        return busyNs[device];
    }

    public double totalBusyNs() {
        double s = 0;
        for (double b : busyNs) {
            s += b;
        }
        return s;
    }

    /** Share of the makespan device {@code d} spent computing. */
    public double utilization(int device) {
        return makespanNs == 0 ? 0 : busyNs[device] / makespanNs;
    }

    public double meanUtilization() {
        return makespanNs == 0 ? 0 : totalBusyNs() / (makespanNs * busyNs.length);
    }

    public long peakMemoryBytes(int device) {
        return peakMemoryBytes[device];
    }

    public long maxPeakMemoryBytes() {
        long m = 0;
        for (long p : peakMemoryBytes) {
            m = Math.max(m, p);
        }
        return m;
    }

    public long intraNodeBytes() {
        return intraNodeBytes;
    }

    public long interNodeBytes() {
        return interNodeBytes;
    }

    /** Scheduling events simulated (task starts, completions, transfers, collectives). */
    public long events() {
        return events;
    }

    /** Events simulated per second of real time. */
    public double eventsPerSecond() {
        return wallNs == 0 ? 0 : events / (wallNs / 1e9);
    }

    /** The run as a trace (virtual nanoseconds), or null when the simulator did not record one. */
    public Trace trace() {
        return trace;
    }

    @Override
    public String toString() {
        return String.format(Locale.ROOT, "makespan %.3f ms, mean utilization %.1f%%, %,d B intra-node, %,d B inter-node, "
                        + "peak memory %,d B, %,d events (%.2f M/s)", makespanNs / 1e6, 100 * meanUtilization(),
                intraNodeBytes, interNodeBytes, maxPeakMemoryBytes(), events, eventsPerSecond() / 1e6);
    }
}
