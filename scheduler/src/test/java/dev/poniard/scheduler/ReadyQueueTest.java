package dev.poniard.scheduler;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertSame;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.ArrayList;
import java.util.List;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;

/** The queue's ordering and stealing rules, single-threaded (the scheduler is only used to mint tasks). */
class ReadyQueueTest {
    private final Scheduler scheduler = Scheduler.launch(new Scheduler.Context().workers(2));

    @AfterEach
    void close() {
        scheduler.close();
    }

    private TaskNode<Object> task(TaskOptions options, double rank) {
        TaskNode<Object> t = scheduler.newTask(options, (Fn.F0<Object>) () -> null, TaskNode.F0, TaskNode.NO_ARGS);
        t.rank = rank;
        t.estimateNs = 1_000;
        return t;
    }

    @Test
    void shouldPollByPriorityThenRankThenSpawnOrder() {
        ReadyQueue<TaskNode<?>> q = new ReadyQueue<>(true);
        TaskNode<Object> plain1 = task(TaskOptions.DEFAULT, 0);
        TaskNode<Object> plain2 = task(TaskOptions.DEFAULT, 0);
        TaskNode<Object> ranked = task(TaskOptions.DEFAULT, 5e6);
        TaskNode<Object> urgent = task(TaskOptions.DEFAULT.priority(3), 0);
        TaskNode<Object> late = task(TaskOptions.DEFAULT.priority(-1), 9e9);
        for (TaskNode<Object> t : List.of(late, plain1, ranked, plain2, urgent)) {
            q.push(t);
        }
        List<TaskNode<?>> order = new ArrayList<>();
        for (TaskNode<?> t; (t = q.poll()) != null; ) {
            order.add(t);
        }
        assertEquals(List.of(urgent, ranked, plain1, plain2, late), order);
        assertTrue(q.isEmpty());
    }

    @Test
    void shouldIgnorePrioritiesWhenNotPrioritized() {
        ReadyQueue<TaskNode<?>> q = new ReadyQueue<>(false);
        TaskNode<Object> a = task(TaskOptions.DEFAULT, 0);
        TaskNode<Object> b = task(TaskOptions.DEFAULT.priority(9), 0);
        q.push(a);
        q.push(b);
        assertSame(a, q.poll());
        assertSame(b, q.poll());
    }

    @Test
    void shouldStealOnlyWhatTheThiefsScopeAllows() {
        ReadyQueue<TaskNode<?>> q = new ReadyQueue<>(true);
        Processor cpu0 = scheduler.processor(0);
        Processor cpu1 = scheduler.processor(1);
        TaskNode<Object> onlyOn0 = task(TaskOptions.DEFAULT.scope(Scope.processors(0)), 0);
        q.push(onlyOn0);
        assertTrue(!q.hasStealable(), "a task scoped to its owner is not stealable");
        assertNull(q.steal(cpu1, 64));
        TaskNode<Object> any = task(TaskOptions.DEFAULT, 0);
        q.push(any);
        assertSame(any, q.steal(cpu1, 64));
        assertSame(onlyOn0, q.steal(cpu0, 64));
    }

    @Test
    void shouldTrackQueuedWorkAcrossPushAndPull() {
        ReadyQueue<TaskNode<?>> q = new ReadyQueue<>(true);
        TaskNode<Object> a = task(TaskOptions.DEFAULT, 0);
        TaskNode<Object> b = task(TaskOptions.DEFAULT.priority(1), 0);
        q.push(a);
        q.push(b);
        assertEquals(2_000, q.queuedWorkNs());
        TaskNode<?> first = q.poll();
        q.pulled(first.estimateNs);
        assertEquals(1_000, q.queuedWorkNs());
        assertEquals(1, q.drain().size());
        assertEquals(0, q.queuedWorkNs());
    }
}
