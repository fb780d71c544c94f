package dev.poniard.scheduler;

import com.fasterxml.jackson.core.JsonEncoding;
import com.fasterxml.jackson.core.JsonFactory;
import com.fasterxml.jackson.core.JsonGenerator;
import java.io.IOException;
import java.io.OutputStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Collections;
import java.util.HashMap;
import java.util.List;
import java.util.Map;

/**
 * A recorded run: one record per settled task. Writes Chrome trace-event JSON (open it in Perfetto or
 * chrome://tracing: one lane per processor, arrows for dependencies) and computes the critical path.
 */
public final class Trace {
    /**
     * One task of the run. Times are nanoseconds since the trace started; -1 for a task that never ran.
     */
    public record TaskRecord(long id, String name, int processor, long startNs, long endNs, TaskState state,
                             long[] dependencies) {
        public long durationNs() {
            return startNs < 0 ? 0 : endNs - startNs;
        }
    }

    /** A sample of named values at one time (a Chrome counter track), e.g. a MoE layer's routing metrics. */
    public record CounterRecord(String name, long timeNs, Map<String, Double> values) {
    }

    private final String schedulerName;
    private final String[] processorNames;
    private final List<TaskRecord> records;
    private final List<CounterRecord> counters;

    /** A trace of a run on the named processors (the simulator builds its traces this way). */
    public static Trace of(String runName, String[] processorNames, List<TaskRecord> records) {
        return new Trace(runName, processorNames, records, List.of());
    }

    Trace(String schedulerName, String[] processorNames, List<TaskRecord> records, List<CounterRecord> counters) {
        this.schedulerName = schedulerName;
        this.processorNames = processorNames.clone();
        this.records = Collections.unmodifiableList(records);
        this.counters = Collections.unmodifiableList(counters);
    }

    public List<TaskRecord> records() {
        return records;
    }

    /** Counter samples recorded with {@link Scheduler#traceCounter}, in recording order. */
    public List<CounterRecord> counters() {
        return counters;
    }

    /** From the first task start to the last task end, in nanoseconds (0 if nothing ran). */
    public long makespanNs() {
        long first = Long.MAX_VALUE, last = Long.MIN_VALUE;
        for (TaskRecord r : records) {
            if (r.startNs >= 0) {
                first = Math.min(first, r.startNs);
                last = Math.max(last, r.endNs);
            }
        }
        return first == Long.MAX_VALUE ? 0 : last - first;
    }

    /**
     * Length of the longest dependency chain by measured durations, in nanoseconds: no schedule on any
     * number of processors can beat it.
     */
    public long criticalPathNs() {
        // A dependency always settles before its dependents, but records may interleave across threads:
        // sort by end time so each record is processed after the records it depends on.
        TaskRecord[] sorted = records.toArray(new TaskRecord[0]);
        java.util.Arrays.sort(sorted, (a, b) -> Long.compare(a.endNs, b.endNs));
        Map<Long, Long> longest = new HashMap<>(sorted.length * 2);
        long best = 0;
        for (TaskRecord r : sorted) {
            long before = 0;
            for (long d : r.dependencies) {
                Long v = longest.get(d);
                if (v != null && v > before) {
                    before = v;
                }
            }
            long total = before + r.durationNs();
            longest.put(r.id, total);
            best = Math.max(best, total);
        }
        return best;
    }

    /** Writes the trace as Chrome trace-event JSON. */
    public void writeChromeJson(Path file) throws IOException {
        Path parent = file.toAbsolutePath().getParent();
        if (parent != null) {
            Files.createDirectories(parent);
        }
        try (OutputStream out = Files.newOutputStream(file)) {
            writeChromeJson(out);
        }
    }

    public void writeChromeJson(OutputStream out) throws IOException {
        Map<Long, TaskRecord> byId = new HashMap<>(records.size() * 2);
        for (TaskRecord r : records) {
            byId.put(r.id, r);
        }
        try (JsonGenerator g = new JsonFactory().createGenerator(out, JsonEncoding.UTF8)) {
            g.writeStartObject();
            g.writeStringField("displayTimeUnit", "ns");
            g.writeArrayFieldStart("traceEvents");
            g.writeStartObject();
            g.writeStringField("ph", "M");
            g.writeStringField("name", "process_name");
            g.writeNumberField("pid", 1);
            g.writeObjectFieldStart("args");
            g.writeStringField("name", "scheduler " + schedulerName);
            g.writeEndObject();
            g.writeEndObject();
            for (int i = 0; i < processorNames.length; i++) {
                g.writeStartObject();
                g.writeStringField("ph", "M");
                g.writeStringField("name", "thread_name");
                g.writeNumberField("pid", 1);
                g.writeNumberField("tid", i);
                g.writeObjectFieldStart("args");
                g.writeStringField("name", processorNames[i]);
                g.writeEndObject();
                g.writeEndObject();
            }
            long flow = 0;
            for (TaskRecord r : records) {
                if (r.startNs < 0) {
                    continue;
                }
                g.writeStartObject();
                g.writeStringField("ph", "X");
                g.writeStringField("name", r.name);
                g.writeStringField("cat", r.state.name().toLowerCase());
                g.writeNumberField("pid", 1);
                g.writeNumberField("tid", r.processor);
                g.writeNumberField("ts", r.startNs / 1000.0);
                g.writeNumberField("dur", r.durationNs() / 1000.0);
                g.writeObjectFieldStart("args");
                g.writeNumberField("id", r.id);
                g.writeStringField("state", r.state.name());
                g.writeArrayFieldStart("deps");
                for (long d : r.dependencies) {
                    g.writeNumber(d);
                }
                g.writeEndArray();
                g.writeEndObject();
                g.writeEndObject();
                for (long d : r.dependencies) {
                    TaskRecord src = byId.get(d);
                    if (src == null || src.startNs < 0) {
                        continue;
                    }
                    flow++;
                    writeFlow(g, "s", flow, src.processor, src.endNs);
                    writeFlow(g, "f", flow, r.processor, r.startNs);
                }
            }
            for (CounterRecord c : counters) {
                g.writeStartObject();
                g.writeStringField("ph", "C");
                g.writeStringField("name", c.name);
                g.writeNumberField("pid", 1);
                g.writeNumberField("ts", c.timeNs / 1000.0);
                g.writeObjectFieldStart("args");
                for (Map.Entry<String, Double> e : c.values.entrySet()) {
                    g.writeNumberField(e.getKey(), e.getValue());
                }
                g.writeEndObject();
                g.writeEndObject();
            }
            g.writeEndArray();
            g.writeEndObject();
        }
    }

    private static void writeFlow(JsonGenerator g, String ph, long id, int tid, long tsNs) throws IOException {
        g.writeStartObject();
        g.writeStringField("ph", ph);
        g.writeStringField("name", "dep");
        g.writeStringField("cat", "dependency");
        g.writeNumberField("id", id);
        g.writeNumberField("pid", 1);
        g.writeNumberField("tid", tid);
        g.writeNumberField("ts", tsNs / 1000.0);
        if (ph.equals("f")) {
            g.writeStringField("bp", "e");
        }
        g.writeEndObject();
    }
}
