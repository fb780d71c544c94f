package dev.poniard.scheduler;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.HashSet;
import java.util.List;
import java.util.Set;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** Traces of several ranks merge into one timeline: a process per rank, aligned by wall clock. */
class TraceMergeTest {
    private static final long ORIGIN = 1_700_000_000_000_000_000L;

    /** Two tasks on one processor, b after a (an arrow a -> b), starting {@code startNs} after the trace's origin. */
    private static Trace twoTasks(long originEpochNs, long startNs) {
        List<Trace.TaskRecord> records = List.of(
                new Trace.TaskRecord(1, "a#1", 0, startNs, startNs + 1_000, TaskState.DONE, new long[0]),
                new Trace.TaskRecord(2, "b#2", 0, startNs + 2_000, startNs + 3_000, TaskState.DONE, new long[] {1}));
        return new Trace("s", new String[] {"cpu-0"}, records, List.of(), originEpochNs, 1, "scheduler s");
    }

    @Test
    void shouldGiveEachRankItsProcessAndShiftItsTimesByItsLaterStart(@TempDir Path dir) throws IOException {
        Path r0 = dir.resolve("t-rank0.json");
        Path r1 = dir.resolve("t-rank1.json");
        twoTasks(ORIGIN, 0).ofRank(0).writeChromeJson(r0);
        twoTasks(ORIGIN + 5_000_000, 0).ofRank(1).writeChromeJson(r1); // started 5 ms later
        Path merged = dir.resolve("t.json");
        Trace.mergeChromeJson(List.of(r0, r1), merged);

        JsonNode root = new ObjectMapper().readTree(merged.toFile());
        assertEquals(ORIGIN, root.get("otherData").get(Trace.ORIGIN_FIELD).asLong());
        Set<String> processes = new HashSet<>();
        Set<Long> flowIds = new HashSet<>();
        int flows = 0;
        for (JsonNode e : root.get("traceEvents")) {
            String ph = e.get("ph").asText();
            if (ph.equals("M") && e.get("name").asText().equals("process_name")) {
                processes.add(e.get("pid").asLong() + " " + e.get("args").get("name").asText());
            } else if (ph.equals("X") && e.get("name").asText().equals("a#1")) {
                double expected = e.get("pid").asLong() == 2 ? 5_000 : 0;
                assertEquals(expected, e.get("ts").asDouble(), 1e-6, "task a of pid " + e.get("pid"));
            } else if (ph.equals("s")) {
                flows++;
                flowIds.add(e.get("id").asLong());
            }
        }
        assertEquals(Set.of("1 rank 0 · scheduler s", "2 rank 1 · scheduler s"), processes);
        assertEquals(2, flows);
        assertEquals(2, flowIds.size(), "each rank's arrow keeps its own id");
    }

    @Test
    void shouldRenumberInputsThatShareAProcessId(@TempDir Path dir) throws IOException {
        Path a = dir.resolve("a.json");
        Path b = dir.resolve("b.json");
        twoTasks(ORIGIN, 0).writeChromeJson(a);
        twoTasks(ORIGIN, 0).writeChromeJson(b);
        Path merged = dir.resolve("m.json");
        Trace.mergeChromeJson(List.of(a, b), merged);
        Set<Long> pids = new HashSet<>();
        for (JsonNode e : new ObjectMapper().readTree(merged.toFile()).get("traceEvents")) {
            pids.add(e.get("pid").asLong());
        }
        assertEquals(Set.of(1L, 2L), pids);
    }

    @Test
    void shouldNameAFileThatIsNotATrace(@TempDir Path dir) throws IOException {
        Path bad = dir.resolve("bad.json");
        Files.writeString(bad, "{\"hello\": 1}");
        IOException e = assertThrows(IOException.class, () -> Trace.mergeChromeJson(List.of(bad), dir.resolve("m.json")));
        assertTrue(e.getMessage().contains("bad.json") && e.getMessage().contains("traceEvents"), e.getMessage());
    }
}
