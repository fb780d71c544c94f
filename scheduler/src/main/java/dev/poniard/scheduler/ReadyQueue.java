package dev.poniard.scheduler;

import java.util.ArrayDeque;
import java.util.Arrays;
import java.util.Iterator;

/**
 * The ready tasks of one processor (or the shared queue of the FIFO policy).
 *
 * <p><b>Implementation overview.</b> Tasks are ordered by (user priority desc, critical-path rank desc,
 * spawn order asc). Most tasks are <em>plain</em> (priority 0, no rank): they go to a FIFO deque,
 * O(1) both ways; prioritised or ranked tasks go to a binary heap. Since plain tasks all share the key
 * (0, 0) and the deque is in sequence order, comparing the heap's top with the deque's head yields the
 * exact global order. One monitor guards both; {@link #size} and {@link #stealable} are volatile so that
 * idle processors check for work without locking. A task cancelled or claimed inline by a joiner stays
 * queued and is skipped when polled (lazy deletion). {@code queuedWorkNs} sums the estimates of queued
 * tasks for the EFT policy.
 */
final class ReadyQueue {
    private final boolean prioritized;
    private final ArrayDeque<TaskNode<?>> fifo = new ArrayDeque<>(256);
    private TaskNode<?>[] heap = new TaskNode<?>[64];
    private int heapSize;

    volatile int size;
    /** Queued tasks with {@link Scope#any()}: what a thief may take without scanning. */
    volatile int stealable;
    volatile long queuedWorkNs;

    ReadyQueue(boolean prioritized) {
        this.prioritized = prioritized;
    }

    synchronized void push(TaskNode<?> t) {
        if (!prioritized || (t.options.priority() == 0 && t.rank == 0)) {
            fifo.addLast(t);
        } else {
            heapInsert(t);
        }
        size = size + 1;
        if (t.options.scope().isAny()) {
            stealable = stealable + 1;
        }
        queuedWorkNs = queuedWorkNs + t.estimateNs;
    }

    /** The first task in order, or null. */
    synchronized TaskNode<?> poll() {
        TaskNode<?> f = fifo.peekFirst();
        TaskNode<?> h = heapSize > 0 ? heap[0] : null;
        TaskNode<?> t;
        if (h != null && (f == null || before(h, f))) {
            t = heapRemoveAt(0);
        } else if (f != null) {
            t = fifo.pollFirst();
        } else {
            return null;
        }
        removed(t);
        return t;
    }

    /**
     * The first task in order that {@code thief} may run, looking at most {@code scanLimit} tasks deep into
     * each structure; null if none.
     */
    synchronized TaskNode<?> steal(Processor thief, int scanLimit) {
        if (size == 0) {
            return null;
        }
        int hi = -1;
        for (int i = 0; i < heapSize && i < scanLimit; i++) {
            if (heap[i].options.scope().allows(thief) && (hi < 0 || before(heap[i], heap[hi]))) {
                hi = i;
            }
        }
        TaskNode<?> f = null;
        int n = 0;
        for (Iterator<TaskNode<?>> it = fifo.iterator(); it.hasNext() && n < scanLimit; n++) {
            TaskNode<?> c = it.next();
            if (c.options.scope().allows(thief)) {
                f = c;
                break;
            }
        }
        TaskNode<?> t;
        if (hi >= 0 && (f == null || before(heap[hi], f))) {
            t = heapRemoveAt(hi);
        } else if (f != null) {
            t = f;
            if (fifo.peekFirst() == f) {
                fifo.pollFirst();
            } else {
                fifo.removeFirstOccurrence(f);
            }
        } else {
            return null;
        }
        removed(t);
        return t;
    }

    /** Empties the queue, returning what it held (used when the scheduler closes). */
    synchronized TaskNode<?>[] drain() {
        TaskNode<?>[] all = new TaskNode<?>[fifo.size() + heapSize];
        int i = 0;
        for (TaskNode<?> t : fifo) {
            all[i++] = t;
        }
        System.arraycopy(heap, 0, all, i, heapSize);
        fifo.clear();
        Arrays.fill(heap, 0, heapSize, null);
        heapSize = 0;
        size = 0;
        stealable = 0;
        queuedWorkNs = 0;
        return all;
    }

    private void removed(TaskNode<?> t) {
        size = size - 1;
        if (t.options.scope().isAny()) {
            stealable = stealable - 1;
        }
        queuedWorkNs = queuedWorkNs - t.estimateNs;
    }

    /** Whether {@code a} runs before {@code b}. */
    static boolean before(TaskNode<?> a, TaskNode<?> b) {
        int pa = a.options.priority(), pb = b.options.priority();
        if (pa != pb) {
            return pa > pb;
        }
        if (a.rank != b.rank) {
            return a.rank > b.rank;
        }
        return a.id < b.id;
    }

    private void heapInsert(TaskNode<?> t) {
        if (heapSize == heap.length) {
            heap = Arrays.copyOf(heap, heapSize * 2);
        }
        int i = heapSize++;
        while (i > 0) {
            int parent = (i - 1) >>> 1;
            if (!before(t, heap[parent])) {
                break;
            }
            heap[i] = heap[parent];
            i = parent;
        }
        heap[i] = t;
    }

    private TaskNode<?> heapRemoveAt(int i) {
        TaskNode<?> removed = heap[i];
        TaskNode<?> last = heap[--heapSize];
        heap[heapSize] = null;
        if (i < heapSize) {
            // sift the last element down from i, then up (it may belong above i when i is not the root)
            int k = i;
            for (;;) {
                int c = 2 * k + 1;
                if (c >= heapSize) {
                    break;
                }
                if (c + 1 < heapSize && before(heap[c + 1], heap[c])) {
                    c++;
                }
                if (!before(heap[c], last)) {
                    break;
                }
                heap[k] = heap[c];
                k = c;
            }
            while (k > 0) {
                int parent = (k - 1) >>> 1;
                if (!before(last, heap[parent])) {
                    break;
                }
                heap[k] = heap[parent];
                k = parent;
            }
            heap[k] = last;
        }
        return removed;
    }
}
