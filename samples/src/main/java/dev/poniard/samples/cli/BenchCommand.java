package dev.poniard.samples.cli;

import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.SerializationFeature;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import dev.poniard.samples.bench.BenchOptions;
import dev.poniard.samples.bench.BenchResult;
import dev.poniard.samples.bench.BenchSuite;
import dev.poniard.samples.bench.SchedulerBenchSuite;
import dev.poniard.samples.comm.CommBenchSuite;
import dev.poniard.samples.linalg.LinalgBenchSuite;
import dev.poniard.samples.moe.MoeBenchSuite;
import dev.poniard.samples.streams.StreamsBenchSuite;
import dev.poniard.samples.sim.SimBenchSuite;
import dev.poniard.samples.trainer.TrainerBenchSuite;
import java.io.PrintWriter;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Instant;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.concurrent.Callable;
import picocli.CommandLine;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;
import picocli.CommandLine.Parameters;

/** {@code ./poniard bench <suite> [--quick] [--json FILE]}: runs a benchmark suite against its baselines. */
@Command(name = "bench", mixinStandardHelpOptions = true,
        description = {"Runs a benchmark suite; every case runs Poniard and its baseline side by side.",
                "ratio = ours over the baseline in the metric's better direction (> 1: Poniard is better)."})
public final class BenchCommand implements Callable<Integer> {
    /** Suites by name, in the order `--help` lists them. */
    static Map<String, BenchSuite> suites() {
        Map<String, BenchSuite> m = new LinkedHashMap<>();
        for (BenchSuite s : List.<BenchSuite>of(new SchedulerBenchSuite(), new CommBenchSuite(), new LinalgBenchSuite(), new StreamsBenchSuite(), new TrainerBenchSuite(),
                new MoeBenchSuite(), new SimBenchSuite(), new dev.poniard.samples.pipeline.PipelineBenchSuite())) {
            m.put(s.name(), s);
        }
        return m;
    }

    @Parameters(index = "0", paramLabel = "SUITE", description = "Suite to run: ${COMPLETION-CANDIDATES}",
            completionCandidates = SuiteNames.class)
    String suite;

    @Option(names = "--quick", description = "Smaller sizes and fewer repetitions (CI, a first look).")
    boolean quick;

    @Option(names = "--json", paramLabel = "FILE", description = "Also write the results as JSON to FILE.")
    Path json;

    @Option(names = "--ranks", paramLabel = "N", defaultValue = "2",
            description = "Ranks for suites that start their own processes (default: ${DEFAULT-VALUE}).")
    int ranks;

    @CommandLine.Spec
    CommandLine.Model.CommandSpec spec;

    static final class SuiteNames extends ArrayList<String> {
        private static final long serialVersionUID = 1L;

        SuiteNames() {
            super(suites().keySet());
        }
    }

    @Override
    public Integer call() throws Exception {
        Map<String, BenchSuite> all = suites();
        BenchSuite s = all.get(suite);
        if (s == null) {
            throw new CommandLine.ParameterException(spec.commandLine(),
                    "unknown suite '" + suite + "'; available: " + String.join(", ", all.keySet()));
        }
        if (ranks < 1) {
            throw new CommandLine.ParameterException(spec.commandLine(), "--ranks must be >= 1, got " + ranks);
        }
        PrintWriter out = spec.commandLine().getOut();
        out.printf(Locale.ROOT, "bench %s%s: %s%n", s.name(), quick ? " (quick)" : "", s.description());
        out.println(header());
        out.flush();
        List<BenchResult> results = s.run(new BenchOptions(quick, ranks), r -> {
            out.println(row(r));
            out.flush();
        });
        if (json != null) {
            writeJson(s.name(), results, json);
            out.println("wrote " + json);
        }
        return 0;
    }

    static String header() {
        return String.format(Locale.ROOT, "%-40s %-26s %14s  %-34s %14s %8s", "case", "metric", "value", "baseline",
                "baseline value", "ratio");
    }

    static String row(BenchResult r) {
        return String.format(Locale.ROOT, "%-40s %-26s %14s  %-34s %14s %8s", r.caseName(), r.metric() + " (" + r.unit() + ")",
                fmt(r.value()), r.baseline() == null ? "-" : r.baseline(), fmt(r.baselineValue()), fmt(r.ratio()));
    }

    private static String fmt(double v) {
        if (Double.isNaN(v)) {
            return "-";
        }
        return Math.abs(v) >= 100 ? String.format(Locale.ROOT, "%.1f", v) : String.format(Locale.ROOT, "%.3f", v);
    }

    static void writeJson(String suite, List<BenchResult> results, Path file) throws java.io.IOException {
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
