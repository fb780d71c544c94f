package dev.poniard.bridge;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.time.Duration;
import java.util.concurrent.Semaphore;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

@Timeout(value = 60, unit = TimeUnit.SECONDS, threadMode = Timeout.ThreadMode.SEPARATE_THREAD)
class NativeMemoryGuardTest {
    @Test
    void shouldCollectWhileTheResidentSizeIsAboveTheLimitAndStopWhenClosed() throws Exception {
        Semaphore checks = new Semaphore(0);
        NativeMemoryGuard guard = NativeMemoryGuard.start(new NativeMemoryGuard.Context().limitBytes(1)
                .period(Duration.ofMillis(10)).minInterval(Duration.ZERO).afterCheck(checks::release));
        try {
            // Any process is above one byte: every other check collects, and the next one trims.
            assertTrue(checks.tryAcquire(4, 30, TimeUnit.SECONDS), "the guard did not check four times");
            assertTrue(guard.collections() >= 2, "collections: " + guard.collections());
        } finally {
            guard.close();
        }
        // close() joins the guard's thread, so nothing runs after it.
        assertFalse(Thread.getAllStackTraces().keySet().stream()
                .anyMatch(t -> t.getName().equals("poniard-native-memory-guard") && t.isAlive()));
    }

    @Test
    void shouldNotCollectBelowTheLimit() throws Exception {
        Semaphore checks = new Semaphore(0);
        try (NativeMemoryGuard guard = NativeMemoryGuard.start(new NativeMemoryGuard.Context().limitBytes(Long.MAX_VALUE)
                .period(Duration.ofMillis(10)).minInterval(Duration.ZERO).afterCheck(checks::release))) {
            assertTrue(checks.tryAcquire(5, 30, TimeUnit.SECONDS), "the guard did not check five times");
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
