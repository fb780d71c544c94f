package dev.poniard.scheduler;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.time.Duration;
import java.util.ArrayList;
import java.util.Collections;
import java.util.List;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

@Timeout(value = 30, unit = TimeUnit.SECONDS)
class DataDepsPriorityTest {

    /** Upward rank = own estimate + the largest rank among successors. */
    @Test
    void shouldGiveRegionTasksTheirUpwardRank() throws Exception {
        try (Scheduler s = Scheduler.launch(new Scheduler.Context().workers(1))) {
            long[] x = new long[1], y = new long[1];
            TaskOptions ms1 = TaskOptions.named("one-ms").costHint(Duration.ofMillis(1));
            TaskOptions ms5 = TaskOptions.named("five-ms").costHint(Duration.ofMillis(5));
            List<TaskHandle<Object>> h = new ArrayList<>();
            try (DataDeps region = s.dataDeps()) {
                h.add(region.spawn(ms1, a -> null, DataDeps.out(x)));          // 0: x
                h.add(region.spawn(ms5, a -> null, DataDeps.inout(x)));        // 1: x after 0
                h.add(region.spawn(ms1, a -> null, DataDeps.in(x), DataDeps.out(y))); // 2: after 1
                h.add(region.spawn(ms1, a -> null, DataDeps.out(new long[1]))); // 3: independent
            }
            double[] rank = new double[4];
            for (int i = 0; i < 4; i++) {
                rank[i] = ((TaskNode<?>) h.get(i)).rank;
            }
            assertEquals(1e6, rank[2], 1);
            assertEquals(6e6, rank[1], 1);
            assertEquals(7e6, rank[0], 1);
            assertEquals(1e6, rank[3], 1);
        }
    }

    /** On one processor, the head of the long chain runs before short independent work queued earlier. */
    @Test
    void shouldRunTheLongestRemainingChainFirst() throws Exception {
        try (Scheduler s = Scheduler.launch(new Scheduler.Context().workers(1))) {
            CountDownLatch gate = new CountDownLatch(1);
            CountDownLatch gateRunning = new CountDownLatch(1);
            s.spawn(() -> {
                gateRunning.countDown();
                gate.await();
                return null;
            });
            assertTrue(gateRunning.await(10, TimeUnit.SECONDS));
            List<String> order = Collections.synchronizedList(new ArrayList<>());
            TaskOptions small = TaskOptions.named("small").costHint(Duration.ofNanos(10_000));
            TaskOptions big = TaskOptions.named("big").costHint(Duration.ofMillis(10));
            long[] chain = new long[1];
            DataDeps region = s.dataDeps();
            for (int i = 0; i < 3; i++) {
                int k = i;
                region.spawn(small, a -> order.add("small" + k), DataDeps.out(new long[1]));
            }
            for (int i = 0; i < 3; i++) {
                int k = i;
                region.spawn(big, a -> order.add("big" + k), DataDeps.inout(chain));
            }
            Thread closer = new Thread(region::close);
            closer.start();
            // the closer blocks in a join once it has submitted every task; then let the processor go
            long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(10);
            while (closer.getState() != Thread.State.WAITING) {
                assertTrue(System.nanoTime() < deadline, "region did not submit");
                Thread.onSpinWait();
            }
            gate.countDown();
            closer.join(10_000);
            assertEquals("big0", order.get(0), order.toString());
        }
    }
}
