package dev.poniard.scheduler;

import com.fasterxml.jackson.core.JsonEncoding;
import com.fasterxml.jackson.core.JsonFactory;
import com.fasterxml.jackson.core.JsonGenerator;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.io.IOException;
import java.io.OutputStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Collections;
import java.util.HashMap;
import java.util.List;
import java.util.Map;

/**
 * A recorded run: one record per settled task. Writes Chrome trace-event JSON (open it in Perfetto or
 * chrome://tracing: one lane per processor, arrows for dependencies) and computes the critical path. The
 * traces of several ranks ({@link #ofRank}) merge into one timeline ({@link #mergeChromeJson}), aligned by
 * the wall-clock time each one started at.
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

    /** The JSON field, under {@code otherData}, holding the wall-clock time of a trace's time zero. */
    static final String ORIGIN_FIELD = "originEpochNs";

    private final String schedulerName;
    private final String[] processorNames;
    private final List<TaskRecord> records;
    private final List<CounterRecord> counters;
    private final long originEpochNs;
    private final int pid;
    private final String processName;

    /** A trace of a run on the named processors (the simulator builds its traces this way). */
    public static Trace of(String runName, String[] processorNames, List<TaskRecord> records) {
        return new Trace(runName, processorNames, records, List.of(), 0, 1, "scheduler " + runName);
    }

    /**
     * A trace recorded outside a scheduler, e.g. a device's streams ({@code stream.DeviceTimeline}): one lane per
     * name in {@code laneNames}, its time zero at wall-clock {@code originEpochNs} (so that it merges with the ranks'
     * traces), shown as the process {@code processName}.
     */
    public static Trace recorded(String processName, String[] laneNames, List<TaskRecord> records, long originEpochNs) {
        return new Trace(processName, laneNames, records, List.of(), originEpochNs, 1, processName);
    }

    Trace(String schedulerName, String[] processorNames, List<TaskRecord> records, List<CounterRecord> counters,
          long originEpochNs, int pid, String processName) {
        this.schedulerName = schedulerName;
        this.processorNames = processorNames.clone();
        this.records = Collections.unmodifiableList(records);
        this.counters = Collections.unmodifiableList(counters);
        this.originEpochNs = originEpochNs;
        this.pid = pid;
        this.processName = processName;
    }

    /** This trace as rank {@code rank}'s: its own process in a merged timeline, named after the rank. */
    public Trace ofRank(int rank) {
        if (rank < 0) {
            throw new IllegalArgumentException("rank must be >= 0, got " + rank);
        }
        return new Trace(schedulerName, processorNames, records, counters, originEpochNs, rank + 1,
                "rank " + rank + " · " + processName);
    }

    /** Wall-clock time (ns since the epoch) of the trace's time zero; 0 if unknown (simulated runs). */
    public long originEpochNs() {
        return originEpochNs;
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
            g.writeNumberField("pid", pid);
            g.writeObjectFieldStart("args");
            g.writeStringField("name", processName);
            g.writeEndObject();
            g.writeEndObject();
            for (int i = 0; i < processorNames.length; i++) {
                g.writeStartObject();
                g.writeStringField("ph", "M");
                g.writeStringField("name", "thread_name");
                g.writeNumberField("pid", pid);
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
                g.writeNumberField("pid", pid);
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
                g.writeNumberField("pid", pid);
                g.writeNumberField("ts", c.timeNs / 1000.0);
                g.writeObjectFieldStart("args");
                for (Map.Entry<String, Double> e : c.values.entrySet()) {
                    g.writeNumberField(e.getKey(), e.getValue());
                }
                g.writeEndObject();
                g.writeEndObject();
            }
            g.writeEndArray();
            g.writeObjectFieldStart("otherData");
            g.writeNumberField(ORIGIN_FIELD, originEpochNs);
            g.writeEndObject();
            g.writeEndObject();
        }
    }

    /**
     * Merges Chrome traces written by {@link #writeChromeJson} (one per rank) into one timeline: each input
     * becomes its own process (inputs that share a pid are renumbered), its times are shifted by the difference
     * of its start from the earliest start (wall clock: exact to microseconds on one host, to the clock sync
     * between hosts), and its dependency arrows keep to their own process.
     */
    public static void mergeChromeJson(List<Path> inputs, Path output) throws IOException {
        if (inputs.isEmpty()) {
            throw new IllegalArgumentException("no trace to merge");
        }
        ObjectMapper json = new ObjectMapper();
        List<JsonNode> traces = new ArrayList<>();
        long first = Long.MAX_VALUE;
        boolean aligned = true;
        for (Path in : inputs) {
            JsonNode t;
            try {
                t = json.readTree(in.toFile());
            } catch (IOException e) {
                throw new IOException("cannot read trace " + in + ": " + e.getMessage(), e);
            }
            if (t == null || !t.path("traceEvents").isArray()) {
                throw new IOException(in + " is not a Chrome trace (no traceEvents array)");
            }
            long origin = t.path("otherData").path(ORIGIN_FIELD).asLong(0);
            aligned &= origin > 0;
            first = Math.min(first, origin);
            traces.add(t);
        }
        ObjectNode merged = json.createObjectNode();
        merged.put("displayTimeUnit", "ns");
        ArrayNode events = merged.putArray("traceEvents");
        java.util.Set<Long> pids = new java.util.HashSet<>();
        for (int i = 0; i < traces.size(); i++) {
            JsonNode t = traces.get(i);
            double shiftUs = aligned ? (t.path("otherData").path(ORIGIN_FIELD).asLong() - first) / 1000.0 : 0;
            long filePid = -1;
            long newPid = -1;
            for (JsonNode e : t.get("traceEvents")) {
                ObjectNode ev = ((ObjectNode) e).deepCopy();
                if (ev.has("pid")) {
                    long p = ev.get("pid").asLong();
                    if (filePid < 0) {
                        filePid = p;
                        newPid = p;
                        while (!pids.add(newPid)) {
                            newPid++;
                        }
                    }
                    ev.put("pid", p == filePid ? newPid : p);
                }
                if (ev.has("ts")) {
                    ev.put("ts", ev.get("ts").asDouble() + shiftUs);
                }
                if (ev.has("id") && ev.get("id").canConvertToLong()) {
                    ev.put("id", ((long) i << 40) + ev.get("id").asLong()); // arrows of different inputs never join
                }
                events.add(ev);
            }
        }
        merged.putObject("otherData").put(ORIGIN_FIELD, aligned ? first : 0);
        Path parent = output.toAbsolutePath().getParent();
        if (parent != null) {
            Files.createDirectories(parent);
        }
        json.writeValue(output.toFile(), merged);
    }

    private void writeFlow(JsonGenerator g, String ph, long id, int tid, long tsNs) throws IOException {
        g.writeStartObject();
        g.writeStringField("ph", ph);
        g.writeStringField("name", "dep");
        g.writeStringField("cat", "dependency");
        g.writeNumberField("id", id);
        g.writeNumberField("pid", pid);
        g.writeNumberField("tid", tid);
        g.writeNumberField("ts", tsNs / 1000.0);
        if (ph.equals("f")) {
            g.writeStringField("bp", "e");
        }
        g.writeEndObject();
    }
}
