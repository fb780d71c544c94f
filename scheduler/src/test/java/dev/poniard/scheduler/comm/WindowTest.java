package dev.poniard.scheduler.comm;

import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

import java.io.File;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

@Timeout(60)
class WindowTest {
    private static LocalCluster cluster;
    /** Ranks with their own media drivers: windows go over Aeron (UDP) as between hosts. */
    private static LocalCluster hosts;

    @BeforeAll
    static void start() {
        cluster = LocalCluster.launch(3);
        hosts = LocalCluster.launchAsSeparateHosts(3, ctx -> ctx.alpha(2e-5).beta(1e-9).gamma(5e-10));
    }

    @AfterAll
    static void stop() {
        cluster.close();
        hosts.close();
    }

    static java.util.stream.Stream<LocalCluster> clusters() {
        return java.util.stream.Stream.of(cluster, hosts);
    }

    @org.junit.jupiter.params.ParameterizedTest(autoCloseArguments = false)
    @org.junit.jupiter.params.provider.MethodSource("clusters")
    void shouldPutAndGetAcrossRanksWithFences(LocalCluster cluster) {
        cluster.run(c -> {
            try (Window w = Window.allocate(c, 1 << 20)) {
                final int n = c.size();
                final ByteBuffer src = ByteBuffer.allocateDirect(1000).order(ByteOrder.nativeOrder());
                for (int i = 0; i < 250; i++) {
                    src.putInt(i * 4, c.rank() * 1_000_000 + i);
                }
                // Each rank writes its block into slot "rank" of the next rank's window.
                w.put(src, (c.rank() + 1) % n, c.rank() * 1000L);
                w.fence();
                final int from = (c.rank() - 1 + n) % n;
                final ByteBuffer mine = w.buffer();
                for (int i = 0; i < 250; i++) {
                    assertEquals(from * 1_000_000 + i, mine.getInt(from * 1000 + i * 4));
                }
                final ByteBuffer got = ByteBuffer.allocateDirect(1000).order(ByteOrder.nativeOrder());
                w.get(got, (c.rank() + 1) % n, c.rank() * 1000L);
                assertEquals(src.rewind(), got.rewind());
                w.fence();
            }
            return null;
        });
    }

    @org.junit.jupiter.params.ParameterizedTest(autoCloseArguments = false)
    @org.junit.jupiter.params.provider.MethodSource("clusters")
    void shouldAccumulateAtomicallyUnderContention(LocalCluster cluster) {
        cluster.run(c -> {
            try (Window w = Window.allocate(c, 64)) {
                final ByteBuffer one = ByteBuffer.allocateDirect(16).order(ByteOrder.nativeOrder());
                one.putLong(0, 1).putLong(8, c.rank());
                for (int i = 0; i < 500; i++) {
                    w.accumulate(one, 0, 0, DataType.INT64, ReduceOp.SUM);
                }
                w.fence();
                if (c.rank() == 0) {
                    assertEquals(500L * c.size(), w.buffer().getLong(0));
                    assertEquals(500L * (0 + 1 + 2), w.buffer().getLong(8));
                }
                // Passive target: a read-modify-write under the exclusive lock.
                for (int i = 0; i < 200; i++) {
                    w.lock(1, true);
                    final ByteBuffer v = ByteBuffer.allocateDirect(8).order(ByteOrder.nativeOrder());
                    w.get(v, 1, 16);
                    v.putLong(0, v.getLong(0) + 1);
                    w.put(v, 1, 16);
                    w.unlock(1, true);
                }
                w.fence();
                if (c.rank() == 1) {
                    assertEquals(200L * c.size(), w.buffer().getLong(16));
                }
                assertThrows(IllegalArgumentException.class, () -> w.put(ByteBuffer.allocateDirect(8), 0, 60));
            }
            return null;
        });
        final File[] left = new File("/dev/shm").listFiles((d, name) -> name.startsWith("poniard-") && name.contains("-win-"));
        assertTrue(left == null || left.length == 0, "window files left behind");
    }
}
