package dev.poniard.scheduler;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.concurrent.atomic.AtomicLong;
import java.util.concurrent.ConcurrentLinkedQueue;

/**
 * The ready tasks of one processor (or the shared queue of the FIFO policy). The scheduler and the cluster
 * simulator share this class, so simulated runs order work exactly as real ones do.
 *
 * <p><b>Implementation overview.</b> Tasks are ordered by (user priority desc, critical-path rank desc,
 * spawn order asc). Most tasks are <em>plain</em> — priority 0, no rank, any processor — and go to a
 * lock-free multi-producer multi-consumer FIFO (the JDK's Michael–Scott {@code ConcurrentLinkedQueue}), so the thread that pushes and the
 * threads that poll or steal never wait for each other. Prioritised, ranked or scoped tasks go to a
 * binary heap under this object's monitor. Plain tasks all share the key (0, 0) and leave the FIFO in
 * spawn order, so comparing the heap's top with the FIFO's head gives the global order (exact when
 * quiet, approximate only among tasks pushed concurrently). A task cancelled or claimed inline by a
 * joiner stays queued and is skipped when polled (lazy deletion).
 *
 * <p>The EFT policy reads the estimated work queued here on every dispatch. Pushers add to one counter,
 * pollers to another (each padded to its own cache line), so neither side writes a line the other writes;
 * a processor polling its own queue publishes what it took in small batches (see
 * {@link CpuProcessor#tookOwn}), so the backlog others read lags by at most a few microseconds of work.
 */
public final class ReadyQueue<T extends Schedulable> {
    private final boolean prioritized;
    private final ConcurrentLinkedQueue<T> fifo = new ConcurrentLinkedQueue<>();
    private final PaddedCounter pushedNs = new PaddedCounter();
    private final PaddedCounter pulledNs = new PaddedCounter();
    @SuppressWarnings("unchecked")
    private T[] heap = (T[]) new Schedulable[64];
    private volatile int heapSize;
    /** Heap tasks with {@link Scope#any()}; guarded by this. */
    private volatile int heapStealable;

    public ReadyQueue(boolean prioritized) {
        this.prioritized = prioritized;
    }

    public void push(T t) {
        pushedNs.add(t.estimateNs());
        Scope scope = t.scope();
        if (scope.isAny() && (!prioritized || (t.priority() == 0 && t.rank() == 0))) {
            fifo.offer(t);
            return;
        }
        synchronized (this) {
            heapInsert(t);
            if (scope.isAny()) {
                heapStealable = heapStealable + 1;
            }
        }
    }

    public boolean isEmpty() {
        return heapSize == 0 && fifo.isEmpty();
    }

    /** Whether a processor other than the owner may find something to take here. */
    public boolean hasStealable() {
        return heapStealable > 0 || !fifo.isEmpty();
    }

    /** Estimated work queued here (approximate, see the overview). */
    public long queuedWorkNs() {
        return pushedNs.get() - pulledNs.get();
    }

    /** Records work taken from this queue; callers of {@link #poll} and {@link #steal} account for it. */
    public void pulled(long estimateNs) {
        pulledNs.add(estimateNs);
    }

    /** The first task in order, or null; the caller accounts for its estimate with {@link #pulled}. */
    public T poll() {
        if (heapSize > 0) {
            synchronized (this) {
                if (heapSize > 0) {
                    T f = fifo.peek();
                    if (f == null || before(heap[0], f)) {
                        return heapRemoveAt(0);
                    }
                }
            }
        }
        return fifo.poll();
    }

    /**
     * The first task in order that {@code thief} may run, looking at most {@code scanLimit} tasks deep into
     * the heap; null if none. FIFO tasks may run anywhere. The caller accounts with {@link #pulled}.
     */
    public T steal(Processor thief, int scanLimit) {
        if (heapSize > 0) {
            synchronized (this) {
                int hi = -1;
                for (int i = 0; i < heapSize && i < scanLimit; i++) {
                    if (heap[i].scope().allows(thief) && (hi < 0 || before(heap[i], heap[hi]))) {
                        hi = i;
                    }
                }
                if (hi >= 0) {
                    T f = fifo.peek();
                    if (f == null || before(heap[hi], f)) {
                        return heapRemoveAt(hi);
                    }
                }
            }
        }
        return fifo.poll();
    }

    /** Empties the queue, returning what it held (used when the scheduler closes). */
    public List<T> drain() {
        List<T> all = new ArrayList<>();
        synchronized (this) {
            while (heapSize > 0) {
                all.add(removed(heapRemoveAt(heapSize - 1)));
            }
        }
        for (T t; (t = fifo.poll()) != null; ) {
            all.add(removed(t));
        }
        return all;
    }

    private T removed(T t) {
        pulledNs.add(t.estimateNs());
        return t;
    }

    /** An atomic long alone on its cache line(s): pushers and pollers must not false-share. */
    @SuppressWarnings("unused")
    static final class PaddedCounter {
        private long p01, p02, p03, p04, p05, p06, p07;
        private final AtomicLong value = new AtomicLong();
        private long p11, p12, p13, p14, p15, p16, p17;

        void add(long v) {
            value.addAndGet(v);
        }

        long get() {
            return value.get();
        }
    }

    /** Whether {@code a} runs before {@code b}. */
    static boolean before(Schedulable a, Schedulable b) {
        int pa = a.priority(), pb = b.priority();
        if (pa != pb) {
            return pa > pb;
        }
        double ra = a.rank(), rb = b.rank();
        if (ra != rb) {
            return ra > rb;
        }
        return a.id() < b.id();
    }

    private void heapInsert(T t) {
        if (heapSize == heap.length) {
            heap = Arrays.copyOf(heap, heapSize * 2);
        }
        int i = heapSize;
        while (i > 0) {
            int parent = (i - 1) >>> 1;
            if (!before(t, heap[parent])) {
                break;
            }
            heap[i] = heap[parent];
            i = parent;
        }
        heap[i] = t;
        heapSize = heapSize + 1;
    }

    private T heapRemoveAt(int i) {
        T removed = heap[i];
        int size = heapSize - 1;
        T last = heap[size];
        heap[size] = null;
        if (i < size) {
            // sift the last element down from i, then up (it may belong above i when i is not the root)
            int k = i;
            for (;;) {
                int c = 2 * k + 1;
                if (c >= size) {
                    break;
                }
                if (c + 1 < size && before(heap[c + 1], heap[c])) {
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
        heapSize = size;
        if (removed.scope().isAny()) {
            heapStealable = heapStealable - 1;
        }
        return removed;
    }
}
