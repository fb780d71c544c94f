package dev.poniard.scheduler;

import java.util.ArrayList;
import java.util.concurrent.ConcurrentLinkedQueue;

/** Collects a record of every settled task while tracing is on; any thread may add. */
final class TraceRecorder {
    private final ConcurrentLinkedQueue<Trace.TaskRecord> records = new ConcurrentLinkedQueue<>();
    private final ConcurrentLinkedQueue<Trace.CounterRecord> counters = new ConcurrentLinkedQueue<>();
    private volatile long originNs;
    /** The wall clock at {@code originNs}, so that traces of several processes line up when merged. */
    private volatile long originEpochNs;

    TraceRecorder() {
        restart();
    }

    private void restart() {
        originNs = System.nanoTime();
        java.time.Instant now = java.time.Instant.now();
        originEpochNs = now.getEpochSecond() * 1_000_000_000L + now.getNano();
    }

    void settled(TaskNode<?> t) {
        boolean ran = t.processor >= 0;
        records.add(new Trace.TaskRecord(t.id, t.name(), t.processor,
                ran ? t.startNs - originNs : -1, ran ? t.endNs - originNs : -1,
                t.state(), t.depIds == null ? new long[0] : t.depIds));
    }

    void counter(String name, java.util.Map<String, Double> values) {
        counters.add(new Trace.CounterRecord(name, System.nanoTime() - originNs, java.util.Map.copyOf(values)));
    }

    void clear() {
        records.clear();
        counters.clear();
        restart();
    }

    Trace snapshot(String[] processorNames, String schedulerName) {
        return new Trace(schedulerName, processorNames, new ArrayList<>(records), new ArrayList<>(counters),
                originEpochNs, 1, "scheduler " + schedulerName);
    }
}
