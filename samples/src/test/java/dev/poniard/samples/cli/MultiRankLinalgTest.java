package dev.poniard.samples.cli;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.poniard.samples.linalg.LinalgRank;
import dev.poniard.scheduler.comm.launch.Launcher;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.Queue;
import java.util.concurrent.ConcurrentLinkedQueue;
import java.util.concurrent.TimeUnit;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;

/** {@code ./poniard linalg ... --ranks 2} and the two-process bench rank program, as real rank processes. */
@Timeout(value = 180, unit = TimeUnit.SECONDS, threadMode = Timeout.ThreadMode.SEPARATE_THREAD)
class MultiRankLinalgTest {
    @Test
    void shouldFactorCholeskyOverTwoRankProcessesAndWriteATimelinePerRankAndOneOfBoth(@TempDir Path dir) throws Exception {
        Path trace = dir.resolve("chol.json");
        CliRun run = CliRun.of("linalg", "cholesky", "--n", "300", "--tile", "64", "--ranks", "2", "--trace", trace.toString());
        assertEquals(0, run.code(), run.out() + run.err());
        Matcher m = Pattern.compile("\\[rank 0\\] cholesky n=300 tile=64 ranks=2 \\(reflectedCyclic2d\\(2x1.* scaled residual (\\S+)").matcher(run.out());
        assertTrue(m.find(), run.out());
        assertTrue(Double.parseDouble(m.group(1)) < 10, m.group());
        for (int r = 0; r < 2; r++) {
            Path file = TraceFiles.perRank(trace, r);
            assertTrue(Files.size(file) > 0, "no trace for rank " + r);
            assertTrue(Files.readString(file).contains("potrf_f64_64"), "rank " + r + "'s trace has no potrf task");
        }
        // and one timeline of both ranks, a process each
        String merged = Files.readString(trace);
        assertTrue(merged.contains("rank 0 · scheduler") && merged.contains("rank 1 · scheduler"), "merged: " + run.out());
        assertTrue(run.out().contains("timeline of all 2 ranks written to"), run.out());
    }

    @Test
    void shouldFactorLuAndQrOverTwoRankProcesses() {
        for (String op : new String[] {"lu", "qr"}) {
            CliRun run = CliRun.of("linalg", op, "--n", "200", "--tile", "64", "--ranks", "2");
            assertEquals(0, run.code(), run.out() + run.err());
            Matcher m = Pattern.compile("\\[rank 0\\] " + op + " n=200 tile=64 ranks=2 \\(blockCyclic2d\\(1x2.* scaled residual (\\S+)")
                    .matcher(run.out());
            assertTrue(m.find(), run.out());
            assertTrue(Double.parseDouble(m.group(1)) < 10, m.group());
        }
    }

    @Test
    void shouldFactorLuAndQrOverTwoRankProcessesOnAGridThatSplitsTileColumns() {
        // A 2x1 grid puts the tiles of every tile column on both ranks: lu and qr factor a copy by columns
        // and copy the factors back, and the residual is checked on what comes back.
        for (String op : new String[] {"lu", "qr"}) {
            CliRun run = CliRun.of("linalg", op, "--n", "200", "--tile", "64", "--ranks", "2", "--grid", "2x1");
            assertEquals(0, run.code(), run.out() + run.err());
            Matcher m = Pattern.compile("\\[rank 0\\] " + op + " n=200 tile=64 ranks=2 \\(blockCyclic2d\\(2x1.* scaled residual (\\S+)")
                    .matcher(run.out());
            assertTrue(m.find(), run.out());
            assertTrue(Double.parseDouble(m.group(1)) < 10, m.group());
        }
    }

    @Test
    void shouldSolveOverTwoRankProcessesOnAGridThatSplitsTileColumns() {
        // A 2x1 grid puts the tiles of every tile column on both ranks: solve factors a copy redistributed by columns.
        CliRun run = CliRun.of("linalg", "solve", "--n", "200", "--tile", "64", "--ranks", "2", "--grid", "2x1",
                "--strategy", "COLLECTIVE");
        assertEquals(0, run.code(), run.out() + run.err());
        Matcher m = Pattern.compile("\\[rank 0\\] solve n=200 tile=64 ranks=2 \\(blockCyclic2d\\(2x1.*COLLECTIVE.* scaled residual (\\S+)")
                .matcher(run.out());
        assertTrue(m.find(), run.out());
        assertTrue(Double.parseDouble(m.group(1)) < 10, m.group());
    }

    @Test
    void shouldMultiplyTwoPointFiveDOverTwoRankProcessesWithAReplicationFactor() {
        // 1x1x2: both ranks hold all of A, B and C; each multiplies over half of k and rank 0 adds the halves.
        CliRun run = CliRun.of("linalg", "gemm", "--n", "200", "--tile", "64", "--ranks", "2", "--grid", "1x1x2");
        assertEquals(0, run.code(), run.out() + run.err());
        Matcher m = Pattern.compile("\\[rank 0\\] gemm n=200 tile=64 ranks=2 \\(replicated25d\\(1x1x2\\).* scaled residual (\\S+)")
                .matcher(run.out());
        assertTrue(m.find(), run.out());
        assertTrue(Double.parseDouble(m.group(1)) < 10, m.group());
    }

    @Test
    void shouldRefuseAReplicationFactorForAnOperationOtherThanGemm() {
        CliRun run = CliRun.of("linalg", "cholesky", "--n", "200", "--tile", "64", "--ranks", "2", "--grid", "1x1x2");
        assertTrue(run.code() != 0, run.out() + run.err());
        assertTrue(run.err().contains("is for gemm only"), run.err());
    }

    @Test
    void shouldSolveInOneProcessWithACheckedResidual() {
        CliRun run = CliRun.of("linalg", "solve", "--n", "150", "--tile", "64", "--workers", "1");
        assertEquals(0, run.code(), run.out() + run.err());
        Matcher m = Pattern.compile("solve n=150 tile=64 workers=1: .* scaled residual (\\S+)").matcher(run.out());
        assertTrue(m.find(), run.out());
        assertTrue(Double.parseDouble(m.group(1)) < 10, m.group());
    }

    @Test
    void shouldReportEveryTwoProcessBenchCaseWithACheckedResidual() {
        Queue<String> lines = new ConcurrentLinkedQueue<>();
        Launcher.Context ctx = new Launcher.Context().ranks(2)
                .command(Launcher.javaCommand(LinalgRank.class.getName(), List.of("256", "64", "1")))
                .output(lines::add);
        try (Launcher l = Launcher.launch(ctx)) {
            assertEquals(0, l.waitFor(), String.join("\n", lines));
        }
        for (String name : List.of("gemm_4096_f64_2proc", "cholesky_4096_f64_2proc", "gemm_4096_f64_2proc_p2p",
                "gemm_4096_f64_2proc_collective", "gemm_4096_f64_2proc_rma", "gemm_4096_f64_2proc_25d")) {
            String line = lines.stream().filter(s -> s.startsWith("[rank 0] LINALG|" + name + "|")).findFirst()
                    .orElseThrow(() -> new AssertionError("no result for " + name + " in:\n" + String.join("\n", lines)));
            String[] f = line.substring(line.indexOf('|') + 1).split("\\|");
            assertTrue(Double.parseDouble(f[1]) > 0, line);
            assertEquals("64", f[2], line);
            assertTrue(Double.parseDouble(f[3]) < 10, line);
        }
    }
}
