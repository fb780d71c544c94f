package dev.poniard.samples.bench;

import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.SerializationFeature;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Instant;
import java.util.List;
import java.util.Locale;

/**
 * The console table and the {@code --json} file of a benchmark run (DESIGN §3), shared by
 * {@code ./poniard bench} and the stand-alone benchmark mains that travel in the GPU bundle without the
 * rest of the command line.
 */
public final class BenchReport {
    private BenchReport() {
    }

    public static String header() {
        return String.format(Locale.ROOT, "%-40s %-26s %14s  %-34s %14s %8s", "case", "metric", "value", "baseline",
                "baseline value", "ratio");
    }

    public static String row(BenchResult r) {
        return String.format(Locale.ROOT, "%-40s %-26s %14s  %-34s %14s %8s", r.caseName(), r.metric() + " (" + r.unit() + ")",
                fmt(r.value()), r.baseline() == null ? "-" : r.baseline(), fmt(r.baselineValue()), fmt(r.ratio()));
    }

    /** A figure as the report prints it: 3 decimals, 1 from 100 up, "-" for NaN. */
    public static String fmt(double v) {
        if (Double.isNaN(v)) {
            return "-";
        }
        return Math.abs(v) >= 100 ? String.format(Locale.ROOT, "%.1f", v) : String.format(Locale.ROOT, "%.3f", v);
    }

    public static void writeJson(String suite, List<BenchResult> results, Path file) throws java.io.IOException {
        ObjectMapper mapper = new ObjectMapper().enable(SerializationFeature.INDENT_OUTPUT);
        ObjectNode root = mapper.createObjectNode();
        root.put("suite", suite);
        ObjectNode env = root.putObject("env");
        env.put("timestamp", Instant.now().toString());
        env.put("java", System.getProperty("java.version"));
        env.put("vm", System.getProperty("java.vm.name"));
        env.put("os", System.getProperty("os.name") + " " + System.getProperty("os.version"));
        env.put("arch", System.getProperty("os.arch"));
        env.put("cores", Runtime.getRuntime().availableProcessors());
        env.put("max_heap_mib", Runtime.getRuntime().maxMemory() >> 20);
        ArrayNode rows = root.putArray("results");
        for (BenchResult r : results) {
            ObjectNode o = rows.addObject();
            o.put("case", r.caseName());
            o.put("metric", r.metric());
            o.put("unit", r.unit());
            putNumber(o, "value", r.value());
            if (r.baseline() == null) {
                o.putNull("baseline");
            } else {
                o.put("baseline", r.baseline());
            }
            putNumber(o, "baseline_value", r.baselineValue());
            putNumber(o, "ratio", r.ratio());
        }
        Path parent = file.toAbsolutePath().getParent();
        if (parent != null) {
            Files.createDirectories(parent);
        }
        mapper.writeValue(file.toFile(), root);
    }

    private static void putNumber(ObjectNode o, String field, double v) {
        if (Double.isNaN(v) || Double.isInfinite(v)) {
            o.putNull(field);
        } else {
            o.put(field, v);
        }
    }
}
