package dev.poniard.samples.cli;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import dev.poniard.scheduler.stream.cuda.CudaDevices;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;
import java.util.concurrent.TimeUnit;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import org.junit.jupiter.api.Assumptions;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

/** {@code ./poniard linalg OP --device cpu|gpu}: the operations as stream DAGs on one device, or a device per rank. */
@Timeout(value = 180, unit = TimeUnit.SECONDS, threadMode = Timeout.ThreadMode.SEPARATE_THREAD)
class LinalgDeviceCommandTest {
    @ParameterizedTest(name = "{0}")
    @ValueSource(strings = {"gemm", "cholesky", "lu", "qr"})
    void shouldRunTheOperationOnTheEmulatedDeviceAndCheckItsResidual(String op) {
        CliRun run = CliRun.of("linalg", op, "--n", "300", "--tile", "64", "--device", "cpu");
        assertEquals(0, run.code(), run.out() + run.err());
        Matcher m = Pattern.compile(op + " n=300 tile=64 on cpu-device \\(3 compute streams\\): .* GFLOP/s, scaled "
                + "residual (\\S+)").matcher(run.out());
        assertTrue(m.find(), run.out());
        assertTrue(Double.parseDouble(m.group(1)) < 10, m.group());
    }

    @ParameterizedTest(name = "{0}")
    @ValueSource(strings = {"gemm", "cholesky", "lu", "qr"})
    void shouldRunTheOperationOverTwoRankProcessesEachOnItsEmulatedDevice(String op) {
        CliRun run = CliRun.of("linalg", op, "--n", "300", "--tile", "64", "--ranks", "2", "--device", "cpu");
        assertEquals(0, run.code(), run.out() + run.err());
        Matcher m = Pattern.compile("\\[rank 0\\] " + op + " n=300 tile=64 ranks=2 \\(.*\\) on a device each "
                + "\\(cpu-device on rank 0\\): .* scaled residual (\\S+)").matcher(run.out());
        assertTrue(m.find(), run.out());
        assertTrue(Double.parseDouble(m.group(1)) < 10, m.group());
    }

    @Test
    void shouldRefuseWhatTheDevicePathDoesNotRun() {
        CliRun run = CliRun.of("linalg", "solve", "--n", "100", "--device", "cpu");
        assertEquals(2, run.code());
        assertTrue(run.err().contains("--device cpu runs gemm, cholesky, lu or qr") && run.err().contains("got solve"),
                run.err());
    }

    @Test
    void shouldWriteTheTimelineOfTheDeviceStreams(@TempDir Path dir) throws Exception {
        Path file = dir.resolve("chol.json");
        CliRun run = CliRun.of("linalg", "cholesky", "--n", "300", "--tile", "64", "--device", "cpu", "--trace",
                file.toString());
        assertEquals(0, run.code(), run.out() + run.err());
        assertTrue(run.out().contains("timeline of cpu-device's streams written to " + file), run.out());
        Map<String, List<String>> ops = opsByLane(file).get("device cpu-device");
        assertEquals(List.of("cpu-device-compute-0", "cpu-device-compute-1", "cpu-device-compute-2", "cpu-device-h2d",
                "cpu-device-d2h"), List.copyOf(ops.keySet()));
        List<String> compute = new ArrayList<>();
        for (int i = 0; i < 3; i++) {
            compute.addAll(ops.get("cpu-device-compute-" + i));
        }
        // 5 x 5 tiles: 10 TRSMs, 10 SYRKs and 10 GEMMs of the timed run (the warm-up's are cleared)
        assertEquals(10, compute.stream().filter(o -> o.startsWith("dtrsm")).count(), compute.toString());
        assertEquals(10, compute.stream().filter(o -> o.startsWith("dgemm")).count(), compute.toString());
        assertTrue(ops.get("cpu-device-h2d").stream().anyMatch(o -> o.startsWith("copy ")), ops.toString());
        assertTrue(ops.get("cpu-device-d2h").stream().anyMatch(o -> o.startsWith("copy ")), ops.toString());
    }

    @Test
    void shouldMergeTheRanksDeviceTimelines(@TempDir Path dir) throws Exception {
        Path file = dir.resolve("lu.json");
        CliRun run = CliRun.of("linalg", "lu", "--n", "300", "--tile", "64", "--ranks", "2", "--device", "cpu",
                "--trace", file.toString());
        assertEquals(0, run.code(), run.out() + run.err());
        Map<String, Map<String, List<String>>> processes = opsByLane(file);
        assertEquals(List.of("rank 0 · device cpu-device", "rank 1 · device cpu-device"),
                processes.keySet().stream().sorted().toList());
        for (Map<String, List<String>> lanes : processes.values()) {
            assertTrue(lanes.get("cpu-device-compute-0").size() + lanes.get("cpu-device-compute-1").size()
                    + lanes.get("cpu-device-compute-2").size() > 0, lanes.toString());
        }
    }

    /** Per process of a Chrome trace, its lanes in order, each with the names of its intervals. */
    private static Map<String, Map<String, List<String>>> opsByLane(Path file) throws Exception {
        JsonNode events = new ObjectMapper().readTree(file.toFile()).path("traceEvents");
        Map<Integer, String> process = new HashMap<>();
        Map<Integer, Map<Integer, String>> laneNames = new HashMap<>();
        for (JsonNode e : events) {
            int pid = e.path("pid").asInt();
            if (e.path("name").asText().equals("process_name")) {
                process.put(pid, e.path("args").path("name").asText());
            } else if (e.path("name").asText().equals("thread_name")) {
                laneNames.computeIfAbsent(pid, k -> new TreeMap<>()).put(e.path("tid").asInt(),
                        e.path("args").path("name").asText());
            }
        }
        Map<String, Map<String, List<String>>> result = new LinkedHashMap<>();
        for (Map.Entry<Integer, String> p : process.entrySet()) {
            Map<String, List<String>> lanes = new LinkedHashMap<>();
            laneNames.getOrDefault(p.getKey(), Map.of()).values().forEach(l -> lanes.put(l, new ArrayList<>()));
            result.put(p.getValue(), lanes);
        }
        for (JsonNode e : events) {
            if (e.path("ph").asText().equals("X")) {
                int pid = e.path("pid").asInt();
                String lane = laneNames.get(pid).get(e.path("tid").asInt());
                result.get(process.get(pid)).get(lane).add(e.path("name").asText());
            }
        }
        return result;
    }

    @Test
    void shouldSayThereIsNoGpuAndWhatToRunInstead() {
        Assumptions.assumeFalse(CudaDevices.detect().available(), "this host has a GPU");
        for (String ranks : new String[] {"1", "2"}) { // with 2, before any rank process starts
            CliRun run = CliRun.of("linalg", "cholesky", "--n", "100", "--device", "gpu", "--ranks", ranks);
            assertEquals(2, run.code());
            assertTrue(run.err().contains("--device gpu: no CUDA GPU here") && run.err().contains("--device cpu"),
                    run.err());
            assertTrue(!run.out().contains("[rank"), run.out());
        }
    }
}
