package dev.poniard.samples.cli;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.poniard.scheduler.Scheduler;
import dev.poniard.scheduler.TaskOptions;
import java.io.PrintWriter;
import java.io.StringWriter;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;

/** Per-rank trace names, the {@code --trace} argument a launcher looks for, and the merge it runs afterwards. */
class TraceFilesTest {
    @Test
    void shouldNameEachRanksTraceAfterTheRequestedFile() {
        assertEquals(Path.of("out/t-rank1.json"), TraceFiles.perRank(Path.of("out/t.json"), 1));
        assertEquals(Path.of("t-rank0.json"), TraceFiles.perRank(Path.of("t"), 0));
    }

    @Test
    void shouldFindTheTraceArgumentOfASubCommandInEitherSpelling() {
        assertEquals(Path.of("a.json"), TraceFiles.traceArgument(List.of("train", "--trace", "a.json", "--epochs", "1")));
        assertEquals(Path.of("b.json"), TraceFiles.traceArgument(List.of("linalg", "lu", "--trace=b.json")));
        assertNull(TraceFiles.traceArgument(List.of("train", "--epochs", "1")));
    }

    @Test
    @Timeout(60)
    void shouldMergeTheRanksTracesOnlyWhenEveryRankWroteOne(@TempDir Path dir) throws Exception {
        Path trace = dir.resolve("job.json");
        StringWriter said = new StringWriter();
        for (int rank = 0; rank < 2; rank++) {
            try (Scheduler s = Scheduler.launch(new Scheduler.Context().workers(1).trace(true))) {
                s.spawn(TaskOptions.named("work-of-rank-" + rank), () -> 1).join();
                s.trace().ofRank(rank).writeChromeJson(TraceFiles.perRank(trace, rank));
            }
            if (rank == 0) {
                TraceFiles.mergeRanks(trace, 2, new PrintWriter(said, true));
                assertFalse(Files.exists(trace), "merged with rank 1's trace missing");
            }
        }
        TraceFiles.mergeRanks(trace, 2, new PrintWriter(said, true));
        String merged = Files.readString(trace);
        assertTrue(merged.contains("work-of-rank-0") && merged.contains("work-of-rank-1"), merged);
        assertTrue(said.toString().contains("timeline of all 2 ranks written to " + trace), said.toString());
    }
}
