package dev.poniard.samples.cli;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import dev.poniard.scheduler.comm.launch.Launcher;
import java.io.File;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.HashSet;
import java.util.List;
import java.util.Queue;
import java.util.Set;
import java.util.concurrent.ConcurrentLinkedQueue;
import java.util.concurrent.TimeUnit;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import java.util.stream.Stream;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;

/** {@code ./poniard launch -n 2 -- train --sample mnist-pipeline}: one pipeline stage per rank process. */
@Timeout(value = 180, unit = TimeUnit.SECONDS, threadMode = Timeout.ThreadMode.SEPARATE_THREAD)
class MultiRankPipelineTest {
    private static final List<String> ARGS = List.of("--sample", "mnist-pipeline", "--train-size", "640", "--test-size",
            "300", "--epochs", "1", "--batch", "32", "--micro-batches", "4");

    private static String group(String text, String regex) {
        Matcher m = Pattern.compile(regex).matcher(text);
        assertTrue(m.find(), "no match for " + regex + " in:\n" + text);
        return m.group(1);
    }

    @Test
    void shouldTrainAStagePerRankProcessToTheResultOfOneProcessAndWriteEachRanksTimeline(@TempDir Path dir)
            throws Exception {
        Path trace = dir.resolve("pipeline.json");
        Queue<String> lines = new ConcurrentLinkedQueue<>();
        Launcher.Context ctx = new Launcher.Context().ranks(2)
                .command(Launcher.javaCommand(PoniardCli.class.getName(), Stream.concat(Stream.of("train", "--no-progress"),
                        Stream.concat(ARGS.stream(), Stream.of("--trace", trace.toString()))).toList()))
                .output(line -> {
                    lines.add(line);
                    System.out.println(line);
                });
        try (Launcher l = Launcher.launch(ctx)) {
            assertEquals(0, l.waitFor(), String.join("\n", lines));
            l.close();
            for (Process p : l.processes()) {
                assertFalse(p.isAlive(), "a rank process is still alive");
            }
            File[] left = new File("/dev/shm").listFiles((d, name) -> name.startsWith("poniard-" + l.launchId()));
            assertTrue(left == null || left.length == 0, "left in /dev/shm: " + Arrays.toString(left));
        }
        String out = String.join("\n", lines);
        assertTrue(out.contains("[rank 0] train mnist-pipeline: 640 training / 300 test images, 2 stages on 2 ranks, 32"
                + " examples per step in 4 micro-batches"), out);
        assertTrue(out.contains("stage 0 on rank 0") && out.contains("stage 1 on rank 1"), out);
        assertTrue(out.contains("[rank 0] trained 20 steps (0 skipped)"), out);
        double accuracy = Double.parseDouble(group(out, "\\[rank 0] test accuracy: (\\d\\.\\d{4})"));
        assertTrue(accuracy > 0.6, "20 steps should beat chance (0.1) clearly: " + accuracy);
        assertEquals(group(out, "\\[rank 0] rank 0 parameters crc32 ([0-9a-f]{8})"),
                group(out, "\\[rank 1] rank 1 parameters crc32 ([0-9a-f]{8})"), "after gathering, both ranks hold the model");

        for (int r = 0; r < 2; r++) {
            Path file = dir.resolve("pipeline-rank" + r + ".json");
            assertTrue(Files.isRegularFile(file), "no trace for rank " + r + ": " + out);
            JsonNode events = new ObjectMapper().readTree(file.toFile()).get("traceEvents");
            Set<String> names = new HashSet<>();
            for (JsonNode e : events) {
                if ("X".equals(e.path("ph").asText())) {
                    String name = e.get("name").asText();
                    names.add(name.contains("#") ? name.substring(0, name.indexOf('#')) : name);
                }
            }
            for (int m = 0; m < 4; m++) {
                assertTrue(names.contains("F s" + r + " m" + m) && names.contains("B s" + r + " m" + m),
                        "rank " + r + "'s trace lacks its stage's tasks for micro-batch " + m + ": " + names);
                assertFalse(names.contains("F s" + (1 - r) + " m" + m), "rank " + r + " ran the other rank's stage");
            }
        }

        // The same stages, micro-batches and batches in one process (2 stages on 2 workers) compute the same numbers.
        CliRun one = CliRun.of(Stream.concat(Stream.of("train", "--no-progress", "--workers", "2"), ARGS.stream())
                .toArray(String[]::new));
        assertEquals(0, one.code(), one.err());
        assertTrue(one.out().contains("2 stages on 2 workers"), one.out());
        assertEquals(group(one.out(), "epoch 1: last loss (\\d+\\.\\d{4})"), group(out, "\\[rank 0] epoch 1: last loss (\\d+\\.\\d{4})"));
        assertEquals(group(one.out(), "test accuracy: (\\d\\.\\d{4})"), String.format(java.util.Locale.ROOT, "%.4f", accuracy));
    }

    @Test
    void shouldRecutTheStagesByMeasuredTimesOnRequest() {
        CliRun run = CliRun.of(Stream.concat(Stream.of("train", "--no-progress", "--workers", "2", "--rebalance-every",
                "4"), ARGS.stream()).toArray(String[]::new));
        assertEquals(0, run.code(), run.out() + run.err());
        assertTrue(Pattern.compile("stages re-cut \\d+ times by their measured times; now stage 0: \\d+ ops")
                .matcher(run.out()).find(), run.out());
        assertTrue(Double.parseDouble(group(run.out(), "test accuracy: (\\d\\.\\d{4})")) > 0.6, run.out());
        run = CliRun.of("train", "--sample", "mnist-pipeline", "--rebalance-every", "-1");
        assertEquals(2, run.code(), run.out() + run.err());
        assertTrue(run.err().contains("--rebalance-every >= 0"), run.err());
    }

    @Test
    void shouldRefuseAnUnknownScheduleNamingIt() {
        CliRun run = CliRun.of("train", "--sample", "mnist-pipeline", "--schedule", "zigzag");
        assertEquals(2, run.code(), run.out() + run.err());
        assertTrue(run.err().contains("--schedule must be 1f1b or gpipe, got 'zigzag'"), run.err());
    }
}
