package dev.poniard.samples.cli;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.concurrent.TimeUnit;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;

@Timeout(value = 120, unit = TimeUnit.SECONDS, threadMode = Timeout.ThreadMode.SEPARATE_THREAD)
class TrainCommandTest {
    private static CliRun run(String... args) {
        return CliRun.of(args);
    }

    @Test
    void shouldTrainTheDefaultSampleEndToEnd() {
        CliRun r = run("train", "--train-size", "600", "--test-size", "300", "--epochs", "1", "--batch", "16", "--no-progress");
        System.out.println(r.out() + r.err());
        assertEquals(0, r.code(), r.err());
        Matcher m = Pattern.compile("test accuracy: (\\d\\.\\d{4}) \\(300 images\\)").matcher(r.out());
        assertTrue(m.find(), "no accuracy line in:\n" + r.out());
        double acc = Double.parseDouble(m.group(1));
        assertTrue(acc > 0.6, "one epoch on 600 images should beat chance (0.1) clearly, got " + acc);
        assertTrue(r.out().contains("600 training / 300 test images, 2 workers x 16"), r.out());
        assertTrue(r.out().contains("trained 19 steps (0 skipped)"), r.out()); // 600 / 32 = 18.75: 18 full steps and 1 short one
        assertTrue(!r.out().contains("steady state"), "one epoch has no steady state to report:\n" + r.out());
    }

    @Test
    void shouldWriteATraceWhenAsked() throws Exception {
        var file = Files.createTempFile("poniard-train", ".json");
        try {
            CliRun r = run("train", "--train-size", "128", "--test-size", "64", "--epochs", "1", "--no-progress",
                    "--trace", file.toString());
            assertEquals(0, r.code(), r.err());
            String json = Files.readString(file);
            assertTrue(json.contains("\"name\":\"grad#") && json.contains("\"name\":\"grad-sum#")
                            && json.contains("\"name\":\"update#"),
                    "trace should name the step's tasks: " + json.substring(0, Math.min(400, json.length())));
        } finally {
            Files.deleteIfExists(file);
        }
    }

    private static String accuracyLine(String out) {
        Matcher m = Pattern.compile("test accuracy: .*").matcher(out);
        assertTrue(m.find(), "no accuracy line in:\n" + out);
        return m.group();
    }

    @Test
    void shouldResumeFromACheckpointAsIfNeverInterrupted(@TempDir Path dir) throws Exception {
        String[] common = {"train", "--train-size", "256", "--test-size", "200", "--batch", "16", "--no-progress"};
        CliRun straight = run(concat(common, "--epochs", "2"));
        assertEquals(0, straight.code(), straight.err());
        assertTrue(straight.out().matches("(?s).*steady state after the first epoch: [0-9]+ samples/s.*"), straight.out());

        CliRun first = run(concat(common, "--epochs", "1", "--checkpoint", dir.toString(), "--checkpoint-every", "3"));
        assertEquals(0, first.code(), first.err());
        CliRun second = run(concat(common, "--epochs", "2", "--checkpoint", dir.toString(), "--resume"));
        System.out.println(second.out());
        assertEquals(0, second.code(), second.err());
        assertTrue(second.out().contains("resumed from " + dir.resolve("ckpt-000000000008.poniard") + ": epoch 2, step 0"),
                second.out());
        assertEquals(accuracyLine(straight.out()), accuracyLine(second.out()), "resumed run must end where the uninterrupted one does");

        Path latest = dir.resolve("ckpt-000000000016.poniard");
        byte[] b = Files.readAllBytes(latest);
        b[b.length - 40] ^= 1;
        Files.write(latest, b);
        CliRun corrupt = run(concat(common, "--epochs", "3", "--checkpoint", dir.toString(), "--resume"));
        assertEquals(1, corrupt.code());
        assertTrue(corrupt.err().contains("checksum mismatch"), corrupt.err());
    }

    private static String[] concat(String[] a, String... b) {
        String[] r = java.util.Arrays.copyOf(a, a.length + b.length);
        System.arraycopy(b, 0, r, a.length, b.length);
        return r;
    }

    @Test
    void shouldSayHowToInstallFashionMnistWhenItIsMissing() {
        CliRun r = run("train", "--sample", "fashion-cnn", "--no-progress", "--data-dir", "/nonexistent/fashion-mnist");
        assertEquals(1, r.code());
        assertTrue(r.err().contains("apt-get install dataset-fashion-mnist"), r.err());
    }

    /** The shipped MNIST subset, laid out as Debian's Fashion-MNIST directory (the same IDX format). */
    private static Path fakeFashionDir(Path dir) throws Exception {
        for (String[] f : new String[][] {{"images-idx3", "train"}, {"labels-idx1", "train"}, {"images-idx3", "t10k"},
                {"labels-idx1", "t10k"}}) {
            try (var in = TrainCommandTest.class.getClassLoader().getResourceAsStream("data/mnist-10k-" + f[0] + "-ubyte.gz")) {
                Files.copy(in, dir.resolve(f[1] + "-" + f[0] + "-ubyte.gz"));
            }
        }
        return dir;
    }

    @Test
    void shouldTrainTheMoeSampleAgainstItsDenseTwin(@TempDir Path dir) throws Exception {
        Path trace = dir.resolve("moe.json");
        CliRun r = run("train", "--sample", "fashion-moe", "--data-dir", fakeFashionDir(dir).toString(), "--train-size",
                "1024", "--test-size", "200", "--epochs", "2", "--batch", "32", "--no-progress", "--trace", trace.toString());
        System.out.println(r.out() + r.err());
        assertEquals(0, r.code(), r.err());
        assertTrue(r.out().contains("model moe: 138002 parameters") && r.out().contains("model dense: 38026 parameters"),
                r.out());
        Matcher routing = Pattern.compile("routing of moe on the test set: tokens per expert \\[([0-9, ]+)], max/mean ([0-9.]+),"
                + " dead experts (\\d+)").matcher(r.out());
        assertTrue(routing.find(), r.out());
        long tokens = java.util.Arrays.stream(routing.group(1).split(", ")).mapToLong(Long::parseLong).sum();
        assertEquals(200L * 16 * 2, tokens, "every test token goes to two experts (dropless)");
        Matcher acc = Pattern.compile("test accuracy by model: moe (\\d\\.\\d{4}), dense (\\d\\.\\d{4})").matcher(r.out());
        assertTrue(acc.find(), r.out());
        String moeTrace = Files.readString(dir.resolve("moe.moe.json"));
        assertTrue(moeTrace.contains("\"ph\":\"C\",\"name\":\"moe layer 1\"") && moeTrace.contains("\"max_over_mean\""),
                "the MoE model's trace should carry the routing metrics as a counter track");
        assertTrue(Double.parseDouble(acc.group(1)) > 0.3 && Double.parseDouble(acc.group(2)) > 0.3,
                "both models should beat chance (0.1) clearly after two epochs: " + acc.group());
    }

    @Test
    void shouldRejectAnUnknownSample() {
        CliRun r = run("train", "--sample", "imagenet");
        assertEquals(2, r.code());
        assertTrue(r.err().contains("unknown sample 'imagenet'; available: mnist-mlp, mnist-samediff, mnist-pipeline, fashion-cnn, fashion-moe"), r.err());
    }
}
