package dev.poniard.bridge;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.time.Duration;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

@Timeout(value = 60, unit = TimeUnit.SECONDS, threadMode = Timeout.ThreadMode.SEPARATE_THREAD)
class NativeMemoryGuardTest {
    @Test
    void shouldCollectWhileTheResidentSizeIsAboveTheLimitAndStopWhenClosed() throws Exception {
        NativeMemoryGuard guard = NativeMemoryGuard.start(new NativeMemoryGuard.Context().limitBytes(1)
                .period(Duration.ofMillis(10)).minInterval(Duration.ofMillis(50)));
        try {
            long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(30);
            while (guard.collections() < 2 && System.nanoTime() < deadline) {
                Thread.sleep(20);
            }
            assertTrue(guard.collections() >= 2, "collections: " + guard.collections());
        } finally {
            guard.close();
        }
        long after = guard.collections();
        Thread.sleep(300);
        assertEquals(after, guard.collections(), "the guard kept collecting after close");
        assertFalse(Thread.getAllStackTraces().keySet().stream()
                .anyMatch(t -> t.getName().equals("poniard-native-memory-guard") && t.isAlive()));
    }

    @Test
    void shouldNotCollectBelowTheLimit() throws Exception {
        try (NativeMemoryGuard guard = NativeMemoryGuard.start(new NativeMemoryGuard.Context()
                .limitBytes(Long.MAX_VALUE).period(Duration.ofMillis(10)).minInterval(Duration.ZERO))) {
            Thread.sleep(200);
            assertEquals(0, guard.collections());
        }
    }

    @Test
    void shouldParseByteCountsAndNameABadOne() {
        assertEquals(8L << 30, NativeMemoryGuard.parseBytes("poniard.maxPhysicalBytes", "8G"));
        assertEquals(512L << 20, NativeMemoryGuard.parseBytes("poniard.maxPhysicalBytes", "512m"));
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> NativeMemoryGuard.parseBytes("poniard.maxPhysicalBytes", "lots"));
        assertTrue(e.getMessage().contains("poniard.maxPhysicalBytes=lots") && e.getMessage().contains("8G"),
                e.getMessage());
        assertThrows(IllegalArgumentException.class, () -> new NativeMemoryGuard.Context().limitBytes(0));
    }
}
