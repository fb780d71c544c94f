package dev.poniard.scheduler;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertInstanceOf;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.ByteArrayOutputStream;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Random;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.RejectedExecutionException;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.atomic.AtomicReference;
import java.util.stream.Stream;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.MethodSource;

@Timeout(value = 60, unit = TimeUnit.SECONDS, threadMode = Timeout.ThreadMode.SEPARATE_THREAD)
class SchedulerTest {

    static Stream<String> policies() {
        return Stream.of("eft", "ws", "fifo");
    }

    private static Scheduler launch(String policy) {
        return Scheduler.launch(new Scheduler.Context().workers(2).policy(PlacementPolicy.named(policy)));
    }

    @Test
    void shouldComputeTheReadmeExample() {
        try (Scheduler s = launch("eft")) {
            TaskHandle<Integer> a = s.spawn(() -> 20);
            TaskHandle<Integer> b = s.spawn((Integer x) -> x + 1, a);
            TaskHandle<Integer> c = s.spawn((Integer x, Integer y) -> x * y, a, b);
            assertEquals(420, c.join());
            assertEquals(TaskState.DONE, c.state());
        }
    }

    /**
     * Regression: with every worker parked, a task queued by a non-worker thread must wake one. The FIFO policy's
     * shared queue has the index -1, which is also "not a worker", and was once taken for a worker queueing
     * work for itself, so nobody was woken.
     */
    @ParameterizedTest
    @MethodSource("policies")
    @Timeout(30)
    void shouldWakeParkedWorkersForATaskSpawnedOutsideThePool(String policy) throws Exception {
        try (Scheduler s = Scheduler.launch(new Scheduler.Context().name("parked-" + policy).workers(2)
                .policy(PlacementPolicy.named(policy)))) {
            for (int round = 0; round < 3; round++) {
                awaitWorkersParked("parked-" + policy + "-cpu-", 2);
                assertEquals(round, s.spawn(() -> 0).get(10, TimeUnit.SECONDS) + round);
            }
        }
    }

    private static void awaitWorkersParked(String prefix, int n) {
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(20);
        while (System.nanoTime() < deadline) {
            long parked = Thread.getAllStackTraces().keySet().stream()
                    .filter(t -> t.getName().startsWith(prefix) && t.getState() == Thread.State.WAITING).count();
            if (parked == n) {
                return;
            }
            java.util.concurrent.locks.LockSupport.parkNanos(1_000_000);
        }
        throw new AssertionError("workers " + prefix + "* did not park within 20 s");
    }

    @Test
    void shouldRecordCounterSamplesFromTasksAsChromeCounterEvents() throws Exception {
        try (Scheduler s = Scheduler.launch(new Scheduler.Context().name("counters").workers(1).trace(true))) {
            assertEquals(null, Scheduler.current(), "the test thread runs no task");
            s.spawn(() -> {
                Scheduler.current().traceCounter("load", java.util.Map.of("tokens_e0", 3.0, "tokens_e1", 5.0));
                return 0;
            }).join();
            s.traceCounter("outside", java.util.Map.of("x", 1.0));
            Trace t = s.trace();
            assertEquals(List.of("load", "outside"), t.counters().stream().map(Trace.CounterRecord::name).toList());
            assertEquals(5.0, t.counters().get(0).values().get("tokens_e1"));
            ByteArrayOutputStream out = new ByteArrayOutputStream();
            t.writeChromeJson(out);
            String json = out.toString(StandardCharsets.UTF_8);
            assertTrue(json.contains("\"ph\":\"C\",\"name\":\"load\""), json);
        }
        try (Scheduler quiet = Scheduler.launch(new Scheduler.Context().name("untraced").workers(1))) {
            quiet.traceCounter("ignored", java.util.Map.of("x", 1.0)); // no trace: nothing recorded, no failure
        }
    }

    /** A random DAG evaluated by the scheduler must equal its sequential evaluation. */
    @ParameterizedTest
    @MethodSource("policies")
    void shouldEvaluateRandomDagsLikeSequentialEvaluation(String policy) {
        long seed = System.nanoTime();
        System.out.println("seed " + seed);
        Random rnd = new Random(seed);
        try (Scheduler s = launch(policy)) {
            for (int round = 0; round < 20; round++) {
                int n = 200 + rnd.nextInt(800);
                int[][] inputs = new int[n][];
                long[] expected = new long[n];
                List<TaskHandle<Long>> handles = new ArrayList<>(n);
                for (int i = 0; i < n; i++) {
                    int k = i == 0 ? 0 : rnd.nextInt(Math.min(i, 4) + 1);
                    inputs[i] = new int[k];
                    Object[] args = new Object[k + 1];
                    long exp = i;
                    args[0] = (long) i;
                    for (int j = 0; j < k; j++) {
                        inputs[i][j] = rnd.nextInt(i);
                        args[j + 1] = handles.get(inputs[i][j]);
                        exp = combine(exp, expected[inputs[i][j]]);
                    }
                    expected[i] = exp;
                    handles.add(s.spawnN(a -> {
                        long v = (Long) a[0];
                        for (int j = 1; j < a.length; j++) {
                            v = combine(v, (Long) a[j]);
                        }
                        return v;
                    }, args));
                }
                for (int i = n - 1; i >= 0; i--) {
                    assertEquals(expected[i], handles.get(i).join(), "seed " + seed + ", round " + round + ", task " + i);
                }
            }
        } catch (AssertionError e) {
            System.err.println("shouldEvaluateRandomDagsLikeSequentialEvaluation failed with seed " + seed);
            throw e;
        }
    }

    private static long combine(long a, long b) {
        return a * 31 + (b ^ (b >>> 7));
    }

    /** Random In/Out/InOut programs over a few chunks must leave the chunks as program order would. */
    @ParameterizedTest
    @MethodSource("policies")
    void shouldOrderDataDepsRegionLikeProgramOrder(String policy) {
        long seed = System.nanoTime();
        System.out.println("seed " + seed);
        Random rnd = new Random(seed);
        try (Scheduler s = launch(policy)) {
            for (int round = 0; round < 20; round++) {
                int chunks = 1 + rnd.nextInt(5);
                long[][] par = new long[chunks][1];
                long[][] seq = new long[chunks][1];
                List<TaskHandle<Long>> reads = new ArrayList<>();
                List<Long> expectedReads = new ArrayList<>();
                try (DataDeps region = s.dataDeps()) {
                    for (int op = 0; op < 300; op++) {
                        int c = rnd.nextInt(chunks);
                        int d = rnd.nextInt(chunks);
                        long k = rnd.nextInt(1000);
                        switch (rnd.nextInt(3)) {
                            case 0: // read c
                                expectedReads.add(seq[c][0]);
                                reads.add(region.spawn(a -> ((long[]) a[0])[0], DataDeps.in(par[c])));
                                break;
                            case 1: // overwrite d from c
                                seq[d][0] = seq[c][0] * 3 + k;
                                region.spawn(a -> {
                                    ((long[]) a[1])[0] = ((long[]) a[0])[0] * 3 + k;
                                    return null;
                                }, DataDeps.in(par[c]), DataDeps.out(par[d]));
                                break;
                            default: // update c in place
                                seq[c][0] = combine(seq[c][0], k);
                                region.spawn(a -> {
                                    long[] x = (long[]) a[0];
                                    x[0] = combine(x[0], k);
                                    return null;
                                }, DataDeps.inout(par[c]));
                        }
                    }
                }
                for (int c = 0; c < chunks; c++) {
                    assertArrayEquals(seq[c], par[c], "seed " + seed + ", round " + round + ", chunk " + c);
                }
                for (int i = 0; i < reads.size(); i++) {
                    assertEquals(expectedReads.get(i), reads.get(i).join(), "seed " + seed + ", read " + i);
                }
            }
        } catch (AssertionError e) {
            System.err.println("shouldOrderDataDepsRegionLikeProgramOrder failed with seed " + seed);
            throw e;
        }
    }

    @Test
    void shouldIdentifyChunksByIdentityNotByValue() {
        try (Scheduler s = launch("eft")) {
            double[] a = new double[4];
            double[] b = new double[4]; // equal contents, a different chunk
            AtomicInteger concurrent = new AtomicInteger();
            AtomicInteger maxConcurrent = new AtomicInteger();
            CountDownLatch bothStarted = new CountDownLatch(2);
            try (DataDeps region = s.dataDeps()) {
                for (double[] chunk : new double[][] {a, b}) {
                    region.spawn(args -> {
                        maxConcurrent.accumulateAndGet(concurrent.incrementAndGet(), Math::max);
                        bothStarted.countDown();
                        bothStarted.await(10, TimeUnit.SECONDS);
                        concurrent.decrementAndGet();
                        return null;
                    }, DataDeps.out(chunk));
                }
            }
            assertEquals(2, maxConcurrent.get(), "writers of two distinct equal-valued chunks must run concurrently");
        }
    }

    @ParameterizedTest
    @MethodSource("policies")
    void shouldFailEveryDependentWithTheCauseAndTheFailingTaskName(String policy) {
        try (Scheduler s = launch(policy)) {
            TaskHandle<Integer> bad = s.spawn(TaskOptions.named("load"), () -> {
                throw new java.io.IOException("disk on fire");
            });
            TaskHandle<Integer> mid = s.spawn(TaskOptions.named("parse"), (Integer x) -> x + 1, bad);
            TaskHandle<Integer> end = s.spawn(TaskOptions.named("train"), (Integer x) -> x * 2, mid);
            TaskFailedException e = assertThrows(TaskFailedException.class, end::join);
            assertTrue(e.failedTask().startsWith("load#"), e.failedTask());
            assertInstanceOf(java.io.IOException.class, e.getCause());
            assertEquals("disk on fire", e.getCause().getMessage());
            assertTrue(e.getMessage().contains("upstream task load#"), e.getMessage());
            assertEquals(TaskState.FAILED, mid.state());
            ExecutionException ee = assertThrows(ExecutionException.class, bad::get);
            assertInstanceOf(java.io.IOException.class, ee.getCause());
            // the scheduler still serves other work
            assertEquals(7, s.spawn(() -> 7).join());
        }
    }

    @Test
    void shouldFailAlongAChainOfAHundredThousandWithoutOverflowingTheStack() {
        try (Scheduler s = launch("eft")) {
            CountDownLatch release = new CountDownLatch(1);
            TaskHandle<Integer> head = s.spawn(() -> {
                release.await();
                throw new IllegalStateException("head failed");
            });
            TaskHandle<Integer> h = head;
            for (int i = 0; i < 100_000; i++) {
                h = s.spawn((Integer x) -> x + 1, h);
            }
            release.countDown();
            TaskFailedException e = assertThrows(TaskFailedException.class, h::join);
            assertEquals("head failed", e.getCause().getMessage());
        }
    }

    @Test
    void shouldReportErrorsAndKeepServing() {
        AtomicReference<Throwable> reported = new AtomicReference<>();
        try (Scheduler s = Scheduler.launch(new Scheduler.Context().workers(2)
                .errorHandler((task, err) -> reported.set(err)))) {
            TaskHandle<Object> oom = s.spawn(() -> {
                throw new OutOfMemoryError("simulated");
            });
            TaskFailedException e = assertThrows(TaskFailedException.class, oom::join);
            assertInstanceOf(OutOfMemoryError.class, e.getCause());
            assertInstanceOf(OutOfMemoryError.class, reported.get());
            List<TaskHandle<Integer>> more = new ArrayList<>();
            for (int i = 0; i < 100; i++) {
                int v = i;
                more.add(s.spawn(() -> v));
            }
            for (int i = 0; i < 100; i++) {
                assertEquals(i, more.get(i).join());
            }
        }
    }

    @Test
    void shouldCancelNotYetStartedDependents() {
        try (Scheduler s = launch("eft")) {
            CountDownLatch gate = new CountDownLatch(1);
            TaskHandle<Integer> slow = s.spawn(() -> {
                gate.await();
                return 1;
            });
            TaskHandle<Integer> pending = s.spawn(TaskOptions.named("pending"), (Integer x) -> x + 1, slow);
            TaskHandle<Integer> downstream = s.spawn((Integer x) -> x + 1, pending);
            assertTrue(pending.cancel());
            assertEquals(TaskState.CANCELLED, pending.state());
            assertEquals(TaskState.CANCELLED, downstream.state());
            TaskCancelledException e = assertThrows(TaskCancelledException.class, downstream::join);
            assertTrue(e.getMessage().contains("pending#"), e.getMessage());
            gate.countDown();
            assertEquals(1, slow.join());
            assertTrue(!slow.cancel(), "a finished task cannot be cancelled");
        }
    }

    @Test
    @Timeout(30)
    void shouldSeeNoBacklogOnAWorkerThatHasTakenEverythingItQueued() throws Exception {
        // A worker publishes the pulls from its own queue in batches; counting the unpublished ones as backlog made
        // EFT hand a worker's successor tasks to an idle core (chains bounced between cores). Seen from the worker
        // itself, once it has taken all its queued tasks, its backlog must be empty.
        try (Scheduler s = Scheduler.launch(new Scheduler.Context().workers(1))) {
            TaskOptions tiny = TaskOptions.named("tiny").costHint(Duration.ofNanos(100));
            CountDownLatch go = new CountDownLatch(1);
            s.spawn(tiny, () -> {
                go.await();
                return 0;
            });
            for (int i = 0; i < 3; i++) {
                s.spawn(tiny, () -> 1); // queued behind the gate on the only worker
            }
            PlacementPolicy.ReadyTask next = new PlacementPolicy.ReadyTask() {
                @Override
                public Scope scope() {
                    return Scope.any();
                }

                @Override
                public int priority() {
                    return 0;
                }

                @Override
                public long estimateNs() {
                    return 7;
                }
            };
            TaskHandle<long[]> seen = s.spawn(tiny, () -> new long[] {s.estimatedFinishNs(next, 0),
                s.nothingAhead(next, 0) ? 1 : 0});
            go.countDown();
            assertArrayEquals(new long[] {7, 1}, seen.join());
            // Another thread sees the worker's batched pulls only once published, so it may not take that shortcut.
            assertTrue(!s.nothingAhead(next, 0));
        }
    }

    @Test
    @Timeout(30)
    void shouldAcceptATypedArrayOfHandlesAsTheInputsOfSpawnN() {
        try (Scheduler s = Scheduler.launch(new Scheduler.Context().workers(2))) {
            @SuppressWarnings("unchecked")
            TaskHandle<Integer>[] parts = new TaskHandle[] {s.spawn(() -> 2), s.spawn(() -> 3)};
            // The task resolves its inputs in place: a TaskHandle[] passed as the varargs array must not be it.
            assertEquals(5, s.spawnN(a -> (Integer) a[0] + (Integer) a[1], (Object[]) parts).join());
            assertInstanceOf(TaskHandle.class, parts[0]);
        }
    }

    @Test
    void shouldFailATaskThatOutlivesItsTimeoutAndKeepServing() {
        try (Scheduler s = Scheduler.launch(new Scheduler.Context().workers(1))) {
            CountDownLatch never = new CountDownLatch(1);
            TaskHandle<Integer> stuck = s.spawn(TaskOptions.named("stuck").timeout(Duration.ofMillis(50)), () -> {
                never.await(); // interrupted by the timeout
                return 1;
            });
            TaskFailedException e = assertThrows(TaskFailedException.class, stuck::join);
            assertInstanceOf(TaskTimeoutException.class, e.getCause());
            // even with one processor, later work runs
            assertEquals(3, s.spawn(() -> 3).join());
        }
    }

    @Test
    void shouldTimeOutAGetWithoutFailingTheTask() throws Exception {
        try (Scheduler s = launch("eft")) {
            CountDownLatch gate = new CountDownLatch(1);
            TaskHandle<Integer> t = s.spawn(() -> {
                gate.await();
                return 5;
            });
            assertThrows(TimeoutException.class, () -> t.get(20, TimeUnit.MILLISECONDS));
            gate.countDown();
            assertEquals(5, t.get(10, TimeUnit.SECONDS));
        }
    }

    /** Tasks that spawn and join children must not deadlock even on one or two processors. */
    @ParameterizedTest
    @MethodSource("policies")
    void shouldNotDeadlockOnNestedSpawnAndJoin(String policy) {
        for (int workers : new int[] {1, 2}) {
            try (Scheduler s = Scheduler.launch(new Scheduler.Context().workers(workers)
                    .policy(PlacementPolicy.named(policy)))) {
                assertEquals(fib(20), s.spawn(() -> fibTask(s, 20)).join(), policy + " with " + workers + " workers");
            }
        }
    }

    private static long fibTask(Scheduler s, int n) {
        if (n < 12) {
            return fib(n);
        }
        TaskHandle<Long> a = s.spawn(() -> fibTask(s, n - 1));
        TaskHandle<Long> b = s.spawn(() -> fibTask(s, n - 2));
        return b.join() + a.join();
    }

    private static long fib(int n) {
        return n < 2 ? n : fib(n - 1) + fib(n - 2);
    }

    @Test
    void shouldHandTheProcessorToASpareWhileATaskWaitsOnWorkQueuedBehindIt() {
        // One processor: the outer task waits for x, which needs y, which is queued behind the outer task.
        try (Scheduler s = Scheduler.launch(new Scheduler.Context().workers(1))) {
            CountDownLatch outerStarted = new CountDownLatch(1);
            CountDownLatch ySpawned = new CountDownLatch(1);
            AtomicReference<TaskHandle<Integer>> x = new AtomicReference<>();
            TaskHandle<Integer> outer = s.spawn(() -> {
                outerStarted.countDown();
                ySpawned.await();
                return x.get().join() + 1;
            });
            assertTrue(await(outerStarted));
            TaskHandle<Integer> y = s.spawn(() -> 40);
            x.set(s.spawn((Integer v) -> v + 1, y));
            ySpawned.countDown();
            assertEquals(42, outer.join());
        }
    }

    @ParameterizedTest
    @MethodSource("policies")
    void shouldRunScopedTasksOnlyWhereTheirScopeAllows(String policy) {
        try (Scheduler s = launch(policy)) {
            List<TaskHandle<String>> hs = new ArrayList<>();
            for (int i = 0; i < 200; i++) {
                hs.add(s.spawn(TaskOptions.DEFAULT.scope(Scope.processors(1)), () -> Thread.currentThread().getName()));
            }
            for (TaskHandle<String> h : hs) {
                assertTrue(h.join().endsWith("cpu-1") || h.join().contains("spare"), h.join());
            }
            assertThrows(IllegalArgumentException.class,
                    () -> s.spawn(TaskOptions.DEFAULT.scope(Scope.processors(7)), () -> 1));
        }
    }

    @Test
    void shouldRunHigherPriorityAndLongerCriticalPathsFirst() {
        try (Scheduler s = Scheduler.launch(new Scheduler.Context().workers(1))) {
            CountDownLatch gate = new CountDownLatch(1);
            CountDownLatch started = new CountDownLatch(1);
            s.spawn(() -> {
                started.countDown();
                gate.await();
                return 0;
            });
            assertTrue(await(started));
            List<Integer> order = java.util.Collections.synchronizedList(new ArrayList<>());
            List<TaskHandle<Boolean>> hs = new ArrayList<>();
            int[] priorities = {0, 5, -3, 9, 5, 1};
            for (int i = 0; i < priorities.length; i++) {
                int id = i;
                hs.add(s.spawn(TaskOptions.DEFAULT.priority(priorities[i]), () -> order.add(id)));
            }
            gate.countDown();
            hs.forEach(TaskHandle::join);
            assertEquals(List.of(3, 1, 4, 5, 0, 2), order);
        }
    }

    private static boolean await(CountDownLatch l) {
        try {
            return l.await(10, TimeUnit.SECONDS);
        } catch (InterruptedException e) {
            throw new AssertionError(e);
        }
    }

    @Test
    void shouldLoseNoTaskAmongAMillion() {
        try (Scheduler s = launch("eft")) {
            AtomicInteger ran = new AtomicInteger();
            TaskHandle<?> last = null;
            for (int i = 0; i < 1_000_000; i++) {
                last = s.spawn(ran::incrementAndGet);
            }
            last.join();
            long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(30);
            while (s.settledTasks() < 1_000_000 && System.nanoTime() < deadline) {
                Thread.onSpinWait();
            }
            assertEquals(1_000_000, s.settledTasks());
            assertEquals(1_000_000, ran.get());
        }
    }

    @Test
    void shouldRejectWaitingOnATaskOfAnOpenRegion() {
        try (Scheduler s = launch("eft")) {
            DataDeps region = s.dataDeps();
            TaskHandle<Integer> t = region.spawn(a -> 1);
            assertThrows(IllegalStateException.class, t::join);
            region.close();
            assertEquals(1, t.join());
        }
    }

    @Test
    void shouldThrowTheFirstFailureOfARegionAfterAllTasksSettle() {
        try (Scheduler s = launch("eft")) {
            long[] chunk = new long[1];
            AtomicInteger independentRan = new AtomicInteger();
            DataDeps region = s.dataDeps();
            region.spawn(TaskOptions.named("writer"), a -> {
                throw new ArithmeticException("bad tile");
            }, DataDeps.out(chunk));
            TaskHandle<Object> reader = region.spawn(a -> null, DataDeps.in(chunk));
            region.spawn(a -> independentRan.incrementAndGet(), DataDeps.inout(new long[1]));
            TaskFailedException e = assertThrows(TaskFailedException.class, region::close);
            assertInstanceOf(ArithmeticException.class, e.getCause());
            assertEquals(TaskState.FAILED, reader.state());
            assertEquals(1, independentRan.get());
        }
    }

    @Test
    void shouldRejectSpawnAfterCloseAndCancelQueuedWork() {
        Scheduler s = Scheduler.launch(new Scheduler.Context().workers(1).closeTimeout(Duration.ofSeconds(5)));
        CountDownLatch gate = new CountDownLatch(1);
        CountDownLatch started = new CountDownLatch(1);
        TaskHandle<Integer> running = s.spawn(() -> {
            started.countDown();
            gate.await(5, TimeUnit.SECONDS);
            return 1;
        });
        assertTrue(await(started));
        TaskHandle<Integer> queued = s.spawn(() -> 2);
        Thread closer = new Thread(s::close);
        closer.start();
        gate.countDown();
        try {
            closer.join(10_000);
        } catch (InterruptedException e) {
            throw new AssertionError(e);
        }
        assertEquals(1, running.join());
        assertTrue(queued.isDone());
        assertThrows(RejectedExecutionException.class, () -> s.spawn(() -> 3));
    }

    @Test
    void shouldWriteAChromeTraceAndASummary() throws Exception {
        try (Scheduler s = Scheduler.launch(new Scheduler.Context().workers(2).trace(true))) {
            TaskHandle<Long> a = s.spawn(TaskOptions.named("a"), () -> busy(2_000_000));
            TaskHandle<Long> b = s.spawn(TaskOptions.named("b"), (Long x) -> x + busy(2_000_000), a);
            TaskHandle<Long> c = s.spawn(TaskOptions.named("c"), () -> busy(1_000_000));
            s.spawn(TaskOptions.named("d"), (Long x, Long y) -> x + y, b, c).join();
            RunSummary summary = s.summary();
            assertEquals(4, summary.tasks());
            assertTrue(summary.criticalPathNs() >= 4_000_000, summary.toString());
            assertTrue(summary.criticalPathNs() <= summary.makespanNs(), summary.toString());
            ByteArrayOutputStream out = new ByteArrayOutputStream();
            s.trace().writeChromeJson(out);
            com.fasterxml.jackson.databind.JsonNode root = new com.fasterxml.jackson.databind.ObjectMapper()
                    .readTree(out.toString(StandardCharsets.UTF_8));
            int complete = 0, flowStarts = 0;
            for (com.fasterxml.jackson.databind.JsonNode e : root.get("traceEvents")) {
                if (e.get("ph").asText().equals("X")) {
                    complete++;
                } else if (e.get("ph").asText().equals("s")) {
                    flowStarts++;
                }
            }
            assertEquals(4, complete);
            assertEquals(3, flowStarts, "a->b, b->d, c->d");
            assertTrue(summary.toString().contains("critical path"), summary.toString());
        }
    }

    private static long busy(long ns) {
        long end = System.nanoTime() + ns;
        long x = 0;
        while (System.nanoTime() < end) {
            x++;
        }
        return x > 0 ? 1 : 0;
    }

    @Test
    void shouldLearnTaskCostsPerSignature() {
        try (Scheduler s = launch("eft")) {
            TaskOptions opts = TaskOptions.named("sleepy");
            for (int i = 0; i < 5; i++) {
                s.spawn(opts, () -> busy(1_000_000)).join();
            }
            long est = s.costModel().estimateNs("sleepy", Processor.Kind.CPU, -1);
            assertTrue(est >= 900_000 && est < 50_000_000, "estimate " + est);
            assertEquals(5, s.costModel().observations("sleepy", Processor.Kind.CPU));
        }
    }

    /**
     * A successor made ready while its predecessor completes is run next by the same thread without being queued.
     * A completion callback may block until that successor is done: the successor must go back to the queue first,
     * where the other worker takes it, or the callback waits forever.
     */
    @Test
    @Timeout(30)
    void shouldLetAnotherWorkerRunTheSuccessorWhileACompletionCallbackBlocks() throws Exception {
        try (Scheduler s = launch("eft")) {
            CountDownLatch gate = new CountDownLatch(1);
            CountDownLatch successorDone = new CountDownLatch(1);
            CountDownLatch callbackDone = new CountDownLatch(1);
            AtomicBoolean sawSuccessor = new AtomicBoolean();
            TaskHandle<Integer> a = s.spawn(() -> await(gate) ? 1 : -1);
            a.onCompletion(h -> {
                sawSuccessor.set(await(successorDone));
                callbackDone.countDown();
            });
            // linked after the callback, so notified before it: it is made ready first, then the callback blocks
            TaskHandle<Integer> b = s.spawn((Integer x) -> x + 1, a);
            b.onCompletion(h -> successorDone.countDown());
            gate.countDown();
            assertEquals(2, b.get(20, TimeUnit.SECONDS));
            assertTrue(await(callbackDone));
            assertTrue(sawSuccessor.get(), "the successor waited for the blocked callback's thread");
        }
    }

    /**
     * A completing task keeps one successor to run next itself; a second successor must go to the idle worker (and
     * wake it), not wait behind the first: here the two successors can only finish together.
     */
    @Test
    @Timeout(30)
    void shouldHandASecondSuccessorToAnIdleWorker() {
        try (Scheduler s = Scheduler.launch(new Scheduler.Context().name("fork").workers(2))) {
            CountDownLatch gate = new CountDownLatch(1);
            CountDownLatch both = new CountDownLatch(2);
            TaskHandle<Integer> a = s.spawn(() -> await(gate) ? 1 : 0);
            Fn.F1<Integer, Boolean> meet = x -> {
                both.countDown();
                return await(both);
            };
            TaskHandle<Boolean> b = s.spawn(meet, a);
            TaskHandle<Boolean> c = s.spawn(meet, a);
            awaitWorkersParked("fork-cpu-", 2); // one blocked in a, the other idle and parked
            gate.countDown();
            assertTrue(b.join() && c.join(), "the two successors did not run at the same time");
        }
    }

    /** With more workers than tasks at hand, each of a burst of blocking tasks spawned by one task gets a thread. */
    @ParameterizedTest
    @MethodSource("policies")
    @Timeout(30)
    void shouldRecruitEveryIdleWorkerForABurstSpawnedByOneTask(String policy) {
        int n = 4;
        try (Scheduler s = Scheduler.launch(new Scheduler.Context().workers(n).policy(PlacementPolicy.named(policy)))) {
            for (int round = 0; round < 5; round++) {
                CountDownLatch allRunning = new CountDownLatch(n);
                int sum = s.spawn(() -> {
                    List<TaskHandle<Integer>> hs = new ArrayList<>();
                    for (int i = 0; i < n; i++) {
                        hs.add(s.spawn(() -> {
                            allRunning.countDown();
                            return await(allRunning) ? 1 : 0; // blocks, not busy: every task needs its own thread
                        }));
                    }
                    return hs.stream().mapToInt(TaskHandle::join).sum();
                }).join();
                assertEquals(n, sum, "round " + round + ": not every task ran at once under " + policy);
            }
        }
    }

    /** Tiny tasks are timed one in eight, which must not hide that a signature became slow. */
    @Test
    void shouldNoticeATinyTaskTurningLongAlthoughTinyTasksAreTimedOneInEight() {
        try (Scheduler s = launch("eft")) {
            TaskOptions opts = TaskOptions.named("shifty");
            for (int i = 0; i < 200; i++) {
                s.spawn(opts, () -> 0L).join();
            }
            long observed = s.costModel().observations("shifty", Processor.Kind.CPU);
            assertTrue(s.costModel().estimateNs("shifty", Processor.Kind.CPU, -1) < Scheduler.SAMPLE_ALWAYS_NS);
            assertTrue(observed >= 200 / 8 / 2 && observed < 100, "observations of 200 tiny runs: " + observed);
            for (int i = 0; i < 40; i++) {
                s.spawn(opts, () -> busy(1_000_000)).join();
            }
            long est = s.costModel().estimateNs("shifty", Processor.Kind.CPU, -1);
            assertTrue(est > 500_000, "estimate after 40 runs of 1 ms: " + est);
        }
    }

    @Test
    void shouldRejectBadContextValuesWithTheValueInTheMessage() {
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> new Scheduler.Context().workers(0).conclude());
        assertTrue(e.getMessage().contains("0"), e.getMessage());
        assertThrows(IllegalArgumentException.class, () -> PlacementPolicy.named("lottery"));
        assertThrows(IllegalArgumentException.class, () -> TaskOptions.DEFAULT.timeout(Duration.ZERO));
    }
}
