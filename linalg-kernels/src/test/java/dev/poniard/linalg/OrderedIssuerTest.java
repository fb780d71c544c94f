package dev.poniard.linalg;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

/** {@link SpmdTasks.OrderedIssuer}: collectives start in program order, at most a window at a time. */
@Timeout(10)
class OrderedIssuerTest {
    @Test
    void shouldStartInIndexOrderWithinTheWindow() {
        SpmdTasks.OrderedIssuer issuer = new SpmdTasks.OrderedIssuer(2);
        long[] idx = new long[5];
        for (int k = 0; k < idx.length; k++) {
            idx[k] = issuer.reserve();
        }
        List<Long> started = new ArrayList<>();
        List<CompletableFuture<Long>> ops = new ArrayList<>();
        List<CompletableFuture<Long>> results = new ArrayList<>();
        for (int k = 0; k < idx.length; k++) {
            ops.add(new CompletableFuture<>());
        }
        // Tasks arrive out of program order: 3, 1, 0, 4, 2.
        for (int k : new int[] {3, 1, 0, 4, 2}) {
            long i = idx[k];
            CompletableFuture<Long> f = issuer.issue(i, () -> {
                started.add(i);
                return ops.get((int) i);
            });
            results.add(f);
        }
        assertEquals(List.of(0L, 1L), started, "only the window's first two start, in order");
        ops.get(1).complete(1L);
        assertEquals(List.of(0L, 1L, 2L), started);
        ops.get(0).complete(0L);
        ops.get(2).complete(2L);
        assertEquals(List.of(0L, 1L, 2L, 3L, 4L), started);
        assertFalse(results.get(0).isDone(), "3 is still in flight");
        ops.get(3).complete(3L);
        ops.get(4).completeExceptionally(new IllegalStateException("lost"));
        assertEquals(3L, results.get(0).join());
        assertTrue(results.get(3).isCompletedExceptionally(), "4's failure reaches its task");
    }
}
