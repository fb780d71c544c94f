package dev.poniard.scheduler.comm;

import dev.poniard.scheduler.comm.launch.Launcher;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

import java.io.File;
import java.util.List;
import java.util.Queue;
import java.util.concurrent.ConcurrentLinkedQueue;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

/** Real rank processes started by the {@link Launcher}: collectives, a SIGKILLed rank, a failing rank. */
@Timeout(120)
class MultiProcessTest {

    private static Launcher.Context launch(int n, String mode, Queue<String> lines, CountDownLatch ready) {
        return new Launcher.Context().ranks(n)
            .command(Launcher.javaCommand(CommWorker.class.getName(), List.of(mode)))
            .output(line -> {
                lines.add(line);
                System.out.println(line);
                if (line.endsWith("READY") && ready != null) {
                    ready.countDown();
                }
            });
    }

    private static void assertNothingLeft(Launcher l) {
        for (Process p : l.processes()) {
            assertFalse(p.isAlive(), "a rank process is still alive");
        }
        final File[] left = new File("/dev/shm").listFiles((d, name) -> name.startsWith("poniard-" + l.launchId()));
        assertTrue(left == null || left.length == 0, "left in /dev/shm: " + java.util.Arrays.toString(left));
    }

    @Test
    void shouldRunCollectivesAcrossFourProcesses() {
        final Queue<String> lines = new ConcurrentLinkedQueue<>();
        try (Launcher l = Launcher.launch(launch(4, "check", lines, null))) {
            assertEquals(0, l.waitFor(), String.join("\n", lines));
            for (int r = 0; r < 4; r++) {
                assertTrue(lines.contains("[rank " + r + "] OK rank " + r + " of 4"), String.join("\n", lines));
            }
            l.close();
            assertNothingLeft(l);
        }
    }

    @ParameterizedTest(name = "killing rank {0}")
    @ValueSource(ints = {2, 0})
    void shouldFailSurvivorsWithinFiveSecondsWhenARankIsKilled(int victim) throws Exception {
        final Queue<String> lines = new ConcurrentLinkedQueue<>();
        final CountDownLatch ready = new CountDownLatch(3);
        try (Launcher l = Launcher.launch(launch(3, "victim", lines, ready).stopOnFailure(false))) {
            assertTrue(ready.await(60, TimeUnit.SECONDS), String.join("\n", lines));
            final long killedAt = System.nanoTime() / 1_000_000;
            l.processes().get(victim).destroyForcibly(); // SIGKILL
            assertTrue(l.waitFor(30, TimeUnit.SECONDS) != -1, "survivors did not exit: " + String.join("\n", lines));
            final Pattern lost = Pattern.compile("\\[rank (\\d)] LOST rank=(\\d) at=(\\d+).*");
            int survivors = 0;
            for (String line : lines) {
                final Matcher m = lost.matcher(line);
                if (m.matches()) {
                    survivors++;
                    assertEquals(victim, Integer.parseInt(m.group(2)), line);
                    final long after = Long.parseLong(m.group(3)) - killedAt;
                    assertTrue(after < 5000, "detected " + after + " ms after the kill: " + line);
                }
            }
            assertEquals(2, survivors, String.join("\n", lines));
            assertEquals(2, lines.stream().filter(s -> s.contains("LATER lost=" + victim)).count(),
                String.join("\n", lines));
            l.close();
            assertNothingLeft(l);
        }
    }

    @Test
    void shouldStopEveryRankWhenOneFails() {
        final Queue<String> lines = new ConcurrentLinkedQueue<>();
        try (Launcher l = Launcher.launch(launch(3, "fail", lines, null).gracePeriodMs(1000))) {
            assertEquals(7, l.waitFor(), String.join("\n", lines));
            l.close();
            assertNothingLeft(l);
        }
    }
}
