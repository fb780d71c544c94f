package dev.poniard.samples.cli;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.poniard.scheduler.comm.launch.Launcher;
import dev.poniard.trainer.Checkpoints;
import java.io.File;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.List;
import java.util.Optional;
import java.util.Queue;
import java.util.concurrent.ConcurrentLinkedQueue;
import java.util.concurrent.TimeUnit;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import java.util.stream.Stream;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;

/** {@code ./poniard train} as two rank processes started by the {@link Launcher}, gradients all-reduced over Aeron. */
@Timeout(value = 180, unit = TimeUnit.SECONDS, threadMode = Timeout.ThreadMode.SEPARATE_THREAD)
class MultiRankTrainTest {
    private static Launcher.Context ranks(int n, Queue<String> lines, String... args) {
        return new Launcher.Context().ranks(n)
                .command(Launcher.javaCommand(PoniardCli.class.getName(), Stream.concat(Stream.of("train", "--no-progress"),
                        Arrays.stream(args)).toList()))
                .output(line -> {
                    lines.add(line);
                    System.out.println(line);
                });
    }

    private static String group(String text, String regex) {
        Matcher m = Pattern.compile(regex).matcher(text);
        assertTrue(m.find(), "no match for " + regex + " in:\n" + text);
        return m.group(1);
    }

    private static void assertNothingLeft(Launcher l) {
        for (Process p : l.processes()) {
            assertFalse(p.isAlive(), "a rank process is still alive");
        }
        File[] left = new File("/dev/shm").listFiles((d, name) -> name.startsWith("poniard-" + l.launchId()));
        assertTrue(left == null || left.length == 0, "left in /dev/shm: " + Arrays.toString(left));
    }

    /**
     * Trains 640 images for one epoch on two rank processes (1 worker each, 16 examples per worker) and checks what
     * every such run must show: it succeeds, leaves nothing behind, takes 640 / (2 x 16) = 20 steps, and ends with
     * bit-identical parameters on both ranks. Returns the output, lines prefixed by rank.
     */
    private static String trainOnTwoRanks(String... extra) {
        String[] args = Stream.concat(Stream.of("--train-size", "640", "--test-size", "300", "--epochs", "1", "--batch",
                "16", "--workers", "1"), Arrays.stream(extra)).toArray(String[]::new);
        Queue<String> lines = new ConcurrentLinkedQueue<>();
        try (Launcher l = Launcher.launch(ranks(2, lines, args))) {
            assertEquals(0, l.waitFor(), String.join("\n", lines));
            l.close();
            assertNothingLeft(l);
        }
        String out = String.join("\n", lines);
        assertTrue(out.contains("[rank 0] trained 20 steps (0 skipped)"), out);
        assertEquals(group(out, "\\[rank 0] rank 0 parameters crc32 ([0-9a-f]{8})"),
                group(out, "\\[rank 1] rank 1 parameters crc32 ([0-9a-f]{8})"), "the ranks' replicas must be bit-identical");
        return out;
    }

    @Test
    void shouldTrainTwoRanksToIdenticalParametersAndTheAccuracyOfOneProcess() {
        String out = trainOnTwoRanks();
        assertTrue(out.contains("[rank 0] train mnist-mlp: 640 training / 300 test images, 2 ranks x 1 workers x 16"), out);
        double twoRanks = Double.parseDouble(group(out, "\\[rank 0] test accuracy: (\\d\\.\\d{4})"));

        // The same global batches on one process with two workers: equal up to float rounding of the sums.
        CliRun one = CliRun.of("train", "--no-progress", "--train-size", "640", "--test-size", "300", "--epochs", "1",
                "--batch", "16", "--workers", "2");
        assertEquals(0, one.code(), one.err());
        double oneProcess = Double.parseDouble(group(one.out(), "test accuracy: (\\d\\.\\d{4})"));
        assertEquals(oneProcess, twoRanks, 0.0101, "two ranks must train as one process with two workers");
        assertTrue(twoRanks > 0.6, "one epoch should beat chance (0.1) clearly: " + twoRanks);
    }

    @Test
    void shouldTrainASameDiffGraphOnTwoRanksAsOneProcessDoes() {
        String out = trainOnTwoRanks("--sample", "mnist-samediff");
        String twoRanks = group(out, "\\[rank 0] epoch 1: last loss (\\d\\.\\d{4})");
        CliRun one = CliRun.of("train", "--no-progress", "--sample", "mnist-samediff", "--train-size", "640", "--test-size",
                "300", "--epochs", "1", "--batch", "16", "--workers", "2");
        assertEquals(0, one.code(), one.err());
        // the same global batches: equal up to float rounding of the sums (and of the printed 4 decimals)
        assertEquals(Double.parseDouble(group(one.out(), "epoch 1: last loss (\\d\\.\\d{4})")), Double.parseDouble(twoRanks),
                2e-4, "two ranks must follow the loss curve of one process with two workers");
    }

    @Test
    void shouldStopTheSurvivorNamingAKilledRankAndKeepTheCheckpoint(@TempDir Path dir) throws Exception {
        Queue<String> lines = new ConcurrentLinkedQueue<>();
        try (Launcher l = Launcher.launch(ranks(2, lines, "--epochs", "50", "--batch", "16", "--workers", "1",
                "--checkpoint", dir.toString(), "--checkpoint-every", "20").stopOnFailure(false))) {
            Checkpoints ckpts = Checkpoints.open(new Checkpoints.Context().directory(dir));
            long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(120);
            while (ckpts.latest().isEmpty() && System.nanoTime() < deadline && l.processes().get(1).isAlive()) {
                Thread.onSpinWait();
                java.util.concurrent.locks.LockSupport.parkNanos(20_000_000);
            }
            assertTrue(ckpts.latest().isPresent(), "no checkpoint was written:\n" + String.join("\n", lines));
            long killedAt = System.nanoTime();
            l.processes().get(1).destroyForcibly();
            assertNotEquals(-1, l.waitFor(30, TimeUnit.SECONDS), "rank 0 did not stop:\n" + String.join("\n", lines));
            double secs = (System.nanoTime() - killedAt) / 1e9;
            int code0 = l.processes().get(0).exitValue();
            String out = String.join("\n", lines);
            assertEquals(1, code0, out);
            assertTrue(out.contains("[rank 0] poniard train: ") && out.contains("rank 1"), "rank 0 must name rank 1:\n" + out);
            assertTrue(secs < 15, "rank 0 took " + secs + " s to stop");
            l.close();
            assertNothingLeft(l);
            Optional<Path> latest = ckpts.latest();
            assertTrue(latest.isPresent());
            Checkpoints.Info info = Checkpoints.info(latest.get()); // verifies the checksum
            assertEquals(2, info.worldSize());
            List<Path> partial;
            try (Stream<Path> files = Files.list(dir)) {
                partial = files.filter(p -> !p.getFileName().toString().endsWith(".poniard")).toList();
            }
            assertEquals(List.of(), partial, "no temporary files may be left");
        }
    }
}
