package dev.poniard.scheduler;

import java.util.ArrayList;
import java.util.concurrent.ConcurrentLinkedQueue;

/** Collects a record of every settled task while tracing is on; any thread may add. */
final class TraceRecorder {
    private final ConcurrentLinkedQueue<Trace.TaskRecord> records = new ConcurrentLinkedQueue<>();
    private final ConcurrentLinkedQueue<Trace.CounterRecord> counters = new ConcurrentLinkedQueue<>();
    private volatile long originNs = System.nanoTime();

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
        originNs = System.nanoTime();
    }

    Trace snapshot(String[] processorNames, String schedulerName) {
        return new Trace(schedulerName, processorNames, new ArrayList<>(records), new ArrayList<>(counters));
    }
}
