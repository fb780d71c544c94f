package dev.poniard.samples.cli;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.HashSet;
import java.util.Set;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;

@Timeout(value = 120, unit = TimeUnit.SECONDS)
class CliTest {

    private static CliRun run(String... args) {
        return CliRun.of(args);
    }

    @Test
    void shouldListTheCommandsInHelp() {
        CliRun r = run("--help");
        assertEquals(0, r.code());
        assertTrue(r.out().contains("bench") && r.out().contains("demo"), r.out());
    }

    @Test
    void shouldDropSameDiffsGradientChatterAndPassEveryOtherLine() {
        java.io.ByteArrayOutputStream bytes = new java.io.ByteArrayOutputStream();
        try (PoniardCli.SameDiffNoiseFilter out = new PoniardCli.SameDiffNoiseFilter(
                new java.io.PrintStream(bytes, true, java.nio.charset.StandardCharsets.UTF_8))) {
            out.println("Added differentiated op xw_plus_b_3");
            out.println("trained 625 steps");
            out.println("Added differentiated op? no: a different line");
            out.print("partial ");
            out.println((String) null);
        }
        assertEquals(String.join(System.lineSeparator(), "trained 625 steps",
                "Added differentiated op? no: a different line", "partial null", ""),
                bytes.toString(java.nio.charset.StandardCharsets.UTF_8));
    }

    @Test
    void shouldNameTheAvailableSuitesForAnUnknownOne() {
        CliRun r = run("bench", "nonsense");
        assertNotEquals(0, r.code());
        assertTrue(r.err().contains("unknown suite 'nonsense'") && r.err().contains("scheduler"), r.err());
    }

    @Test
    void shouldWriteEverySchedulerCaseAsJson(@TempDir Path dir) throws Exception {
        Path json = dir.resolve("out.json");
        CliRun r = run("bench", "scheduler", "--quick", "--json", json.toString());
        assertEquals(0, r.code(), r.err());
        JsonNode root = new ObjectMapper().readTree(Files.readString(json));
        assertEquals("scheduler", root.get("suite").asText());
        assertTrue(root.get("env").get("cores").asInt() >= 1);
        Set<String> cases = new HashSet<>();
        for (JsonNode row : root.get("results")) {
            cases.add(row.get("case").asText());
            for (String field : new String[] {"metric", "unit", "value", "baseline", "baseline_value", "ratio"}) {
                assertTrue(row.has(field), field + " missing in " + row);
            }
            double expectedRatio = row.get("metric").asText().equals("us_per_task")
                    || row.get("metric").asText().equals("makespan_over_lower_bound")
                    ? row.get("baseline_value").asDouble() / row.get("value").asDouble()
                    : row.get("value").asDouble() / row.get("baseline_value").asDouble();
            assertEquals(expectedRatio, row.get("ratio").asDouble(), 1e-9, row.toString());
        }
        assertEquals(Set.of("independent_1m", "chain_100k", "random_dag_100k", "fan_out_in", "imbalanced_work"), cases);
    }

    @Test
    void shouldRunTheDemoAndWriteItsTrace(@TempDir Path dir) throws Exception {
        Path trace = dir.resolve("demo.json");
        CliRun r = run("demo", "--n", "200", "--tile", "64", "--workers", "2", "--trace", trace.toString());
        assertEquals(0, r.code(), r.out() + r.err());
        assertTrue(r.out().contains("64 tasks"), r.out());
        assertTrue(r.out().contains("critical path"), r.out());
        assertTrue(new ObjectMapper().readTree(trace.toFile()).get("traceEvents").size() > 64);
    }
}
