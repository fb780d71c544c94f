package dev.poniard.scheduler;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertInstanceOf;
import static org.junit.jupiter.api.Assertions.assertSame;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.time.Duration;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

/** Tasks that complete when the operation they start completes ({@link Scheduler#spawnAsync}). */
@Timeout(30)
class AsyncTaskTest {
    private static Scheduler oneWorker() {
        return Scheduler.launch(new Scheduler.Context().name("async").workers(1));
    }

    @Test
    void shouldCompleteWhenTheStageCompletesAndFreeTheWorkerMeanwhile() throws Exception {
        try (Scheduler s = oneWorker()) {
            CompletableFuture<Integer> arrival = new CompletableFuture<>();
            TaskHandle<Integer> recv = s.spawnAsync(TaskOptions.named("recv"), args -> arrival);
            TaskHandle<Integer> use = s.spawn((Integer x) -> x * 2, recv);
            // The only worker is free while the operation is in flight: other work runs.
            assertEquals(7, s.spawn(() -> 7).get(10, TimeUnit.SECONDS));
            assertEquals(TaskState.RUNNING, recv.state());
            assertEquals(TaskState.PENDING, use.state());
            arrival.complete(21); // completed by a thread outside the pool, as a transport's would be
            assertEquals(42, use.get(10, TimeUnit.SECONDS));
            assertEquals(21, recv.join());
        }
    }

    @Test
    void shouldFailDependentsWithTheStagesFailure() {
        try (Scheduler s = oneWorker()) {
            IllegalStateException lost = new IllegalStateException("rank 1 was lost");
            TaskHandle<Integer> recv = s.spawnAsync(TaskOptions.named("recv"),
                    args -> CompletableFuture.<Integer>supplyAsync(() -> {
                        throw lost;
                    }));
            TaskHandle<Integer> use = s.spawn((Integer x) -> x, recv);
            TaskFailedException e = assertThrows(TaskFailedException.class, use::join);
            assertSame(lost, e.getCause());
            assertTrue(e.failedTask().startsWith("recv"), e.failedTask());
        }
    }

    @Test
    void shouldTimeOutTheWholeOperation() {
        try (Scheduler s = oneWorker()) {
            TaskHandle<Integer> never = s.spawnAsync(TaskOptions.named("never").timeout(Duration.ofMillis(100)),
                    args -> new CompletableFuture<Integer>());
            TaskFailedException e = assertThrows(TaskFailedException.class, never::join);
            assertInstanceOf(TaskTimeoutException.class, e.getCause());
        }
    }

    @Test
    void shouldRefuseAFunctionThatReturnsNoStage() {
        try (Scheduler s = oneWorker()) {
            TaskHandle<Object> bad = s.spawnAsync(TaskOptions.named("bad"), args -> null);
            TaskFailedException e = assertThrows(TaskFailedException.class, bad::join);
            assertTrue(e.getCause().getMessage().contains("instead of a CompletionStage"), e.getCause().getMessage());
        }
    }

    @Test
    void shouldHoldARegionsChunkUntilTheOperationCompletes() throws Exception {
        try (Scheduler s = oneWorker()) {
            long[] chunk = new long[1];
            CompletableFuture<Void> written = new CompletableFuture<>();
            TaskHandle<Long> read;
            Thread writer = new Thread(() -> {
                chunk[0] = 5; // the "network" fills the chunk, then completes the operation
                written.complete(null);
            });
            try (DataDeps region = s.dataDeps()) {
                region.spawnAsync(TaskOptions.named("recv"), a -> {
                    writer.start();
                    return written;
                }, DataDeps.out(chunk));
                read = region.spawn(a -> ((long[]) a[0])[0] + 1, DataDeps.in(chunk));
            }
            assertEquals(6L, read.join());
            writer.join();
        }
    }
}
