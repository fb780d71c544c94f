package dev.poniard.moe;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.poniard.scheduler.comm.launch.Launcher;
import java.util.List;
import java.util.Queue;
import java.util.concurrent.ConcurrentLinkedQueue;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import org.junit.jupiter.api.Tag;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

/** Expert parallelism across 2 real rank processes started by the {@link Launcher} (Aeron IPC between JVMs). */
@Tag("slow")
@Timeout(240)
class ExpertParallelProcessTest {
    @Test
    void shouldTrainIdenticallyOnTwoLaunchedRanks() {
        Queue<String> lines = new ConcurrentLinkedQueue<>();
        Launcher.Context ctx = new Launcher.Context().ranks(2)
                .command(Launcher.javaCommand(ExpertParallelWorker.class.getName(), List.of("4")))
                .output(line -> {
                    lines.add(line);
                    System.out.println(line);
                });
        try (Launcher l = Launcher.launch(ctx)) {
            assertEquals(0, l.waitFor(), String.join("\n", lines));
        }
        Pattern ok = Pattern.compile("\\[rank (\\d)] OK rank (\\d) hash (-?\\d+) diff (\\S+)");
        String[] hashes = new String[2];
        for (String line : lines) {
            Matcher m = ok.matcher(line);
            if (m.matches()) {
                int r = Integer.parseInt(m.group(2));
                hashes[r] = m.group(3);
                double diff = Double.parseDouble(m.group(4));
                assertTrue(diff <= 1e-6, "rank " + r + " differs from one process by " + diff);
            }
        }
        assertTrue(hashes[0] != null && hashes[1] != null, String.join("\n", lines));
        assertEquals(hashes[0], hashes[1], "the ranks' parameters must be bit-identical");
    }
}
