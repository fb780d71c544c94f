package dev.poniard.moe;

import dev.poniard.scheduler.Scheduler;
import dev.poniard.scheduler.Scope;
import dev.poniard.scheduler.TaskHandle;
import dev.poniard.scheduler.TaskOptions;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Objects;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * Runs the expert work of MoE layers as (expert, token-chunk) tasks on a Poniard {@link Scheduler}, or inline on the
 * calling thread.
 *
 * <p><b>Implementation overview.</b> Each step's routing fixes how many tokens every expert got, and only then is
 * the work cut ({@link #plan}): with A assigned rows in all and P workers, the chunk size is
 * c = max(minChunk, ⌈A / (P · chunksPerWorker)⌉) and an expert with m rows becomes ⌈m / c⌉ near-equal chunks, so a
 * hot expert is split and a cold one stays whole (an expert with no rows has no task). Every chunk is one task for
 * the forward and one for the backward, with priority = its row count (largest first, LPT) and a cost hint
 * proportional to its rows; the scheduler places each where it should finish first and idle workers steal, which
 * is what evens out Zipf-skewed routing. Chunks of one expert write disjoint rows of the output and input-gradient
 * arrays and return their weight-gradient partials; one reduction task per expert sums them in chunk order. So the
 * result is a pure function of the chunk plan — bitwise identical whichever worker ran what, and identical to
 * running the same plan inline — and the plan depends only on the token counts and the configured width, not on
 * timing. Native math must run one thread per worker ({@link MoeNativeMath}), which {@link #launch} installs as the
 * scheduler's worker-start hook.
 */
public final class ExpertExecutor implements AutoCloseable {
    private static final Logger LOG = LoggerFactory.getLogger(ExpertExecutor.class);
    /** Rough single-core cost of one token row through a d × d_ff expert, forward: 4·d·d_ff flops at ~20 GFLOP/s. */
    private static final double NS_PER_FLOP = 0.05;

    private final Scheduler scheduler;
    private final boolean owned;

    private ExpertExecutor(Scheduler scheduler, boolean owned) {
        this.scheduler = scheduler;
        this.owned = owned;
    }

    /** Runs every task on the calling thread, in plan order: the sequential reference. */
    public static ExpertExecutor inline() {
        return new ExpertExecutor(null, false);
    }

    /** Launches and owns a scheduler with {@code workers} workers, native math one thread each. */
    public static ExpertExecutor launch(int workers, String name) {
        if (workers < 1) {
            throw new IllegalArgumentException("workers must be >= 1, got " + workers);
        }
        Scheduler s = Scheduler.launch(new Scheduler.Context().name(name).workers(workers)
                .workerStart(MoeNativeMath::oneThreadPerWorker));
        return new ExpertExecutor(s, true);
    }

    /** Uses a scheduler owned by the caller; {@link #close} leaves it running. */
    public static ExpertExecutor on(Scheduler scheduler) {
        return new ExpertExecutor(Objects.requireNonNull(scheduler, "scheduler"), false);
    }

    /** The scheduler, or null when inline. */
    public Scheduler scheduler() {
        return scheduler;
    }

    /** Workers that run tasks: the scheduler's processors, 1 inline. */
    public int workers() {
        return scheduler == null ? 1 : scheduler.processorCount();
    }

    /**
     * Cuts each job into chunks for {@code width} workers (see the class overview).
     *
     * @param width the planning width: the same width gives the same chunks, whichever executor runs them
     */
    public static Plan plan(List<ExpertJob> jobs, int width, int minChunk, int chunksPerWorker) {
        if (width < 1 || minChunk < 1 || chunksPerWorker < 1) {
            throw new IllegalArgumentException("width, minChunk and chunksPerWorker must be >= 1, got " + width + ", "
                    + minChunk + ", " + chunksPerWorker);
        }
        long total = 0;
        for (ExpertJob j : jobs) {
            total += j.rows();
        }
        int size = (int) Math.max(minChunk, (total + (long) width * chunksPerWorker - 1) / ((long) width * chunksPerWorker));
        return plan(jobs, size);
    }

    /** Cuts each job into ⌈rows / chunkRows⌉ near-equal chunks ({@code Integer.MAX_VALUE}: one chunk per job). */
    public static Plan plan(List<ExpertJob> jobs, int chunkRows) {
        List<Chunk> chunks = new ArrayList<>();
        for (int j = 0; j < jobs.size(); j++) {
            int m = jobs.get(j).rows();
            if (m == 0) {
                continue;
            }
            int pieces = (int) ((m + (long) chunkRows - 1) / chunkRows);
            for (int p = 0; p < pieces; p++) {
                int start = (int) ((long) m * p / pieces);
                int end = (int) ((long) m * (p + 1) / pieces);
                chunks.add(new Chunk(j, start, end));
            }
        }
        return new Plan(List.copyOf(jobs), chunks);
    }

    /** Runs every chunk's forward; returns when all are done. */
    public void forward(Plan plan, boolean training) {
        List<TaskHandle<?>> handles = new ArrayList<>();
        for (int c = 0; c < plan.chunks.size(); c++) {
            int ci = c;
            Chunk ch = plan.chunks.get(c);
            ExpertJob job = plan.jobs.get(ch.job);
            handles.add(run(options("fwd", job, ch, 1, null), () -> {
                long t0 = System.nanoTime();
                ExpertKernels.Cache cache = ExpertKernels.forward(job, ch.start, ch.end, training);
                if (training) {
                    plan.caches[ci] = cache;
                } else {
                    cache.close();
                }
                plan.forwardNs[ci] = System.nanoTime() - t0;
                return null;
            }));
        }
        joinAll(handles);
    }

    /** Runs every chunk's backward, then each job's reduction of its chunks' weight gradients. */
    public void backward(Plan plan) {
        List<List<TaskHandle<?>>> perJob = new ArrayList<>();
        for (int j = 0; j < plan.jobs.size(); j++) {
            perJob.add(new ArrayList<>());
        }
        for (int c = 0; c < plan.chunks.size(); c++) {
            int ci = c;
            Chunk ch = plan.chunks.get(c);
            ExpertJob job = plan.jobs.get(ch.job);
            if (plan.caches[ci] == null) {
                throw new IllegalStateException("chunk " + ci + " of " + job.name + " has no forward cache: backward needs "
                        + "a training forward of the same plan first, and consumes it");
            }
            perJob.get(ch.job).add(run(options("bwd", job, ch, 2, null), () -> backwardChunk(plan, ci)));
        }
        joinAll(reductions(plan, perJob));
    }

    /**
     * Forward then backward of every chunk with no barrier between the passes (each chunk's backward waits only for
     * its own forward; the upstream gradients must be set on the jobs), then the reductions: one MoE layer's expert
     * work as the benchmark and the simulator's MoE family model it.
     *
     * @param pinned when true, chunk tasks of job j may run only on worker j mod P (the static baseline)
     */
    public void forwardBackward(Plan plan, boolean pinned) {
        List<List<TaskHandle<?>>> perJob = new ArrayList<>();
        for (int j = 0; j < plan.jobs.size(); j++) {
            perJob.add(new ArrayList<>());
        }
        int p = workers();
        for (int c = 0; c < plan.chunks.size(); c++) {
            int ci = c;
            Chunk ch = plan.chunks.get(c);
            ExpertJob job = plan.jobs.get(ch.job);
            Scope scope = pinned && scheduler != null ? Scope.processors(ch.job % p) : null;
            TaskHandle<?> f = run(options("fwd", job, ch, 1, scope), () -> {
                long t0 = System.nanoTime();
                plan.caches[ci] = ExpertKernels.forward(job, ch.start, ch.end, true);
                plan.forwardNs[ci] = System.nanoTime() - t0;
                return null;
            });
            perJob.get(ch.job).add(after(options("bwd", job, ch, 2, scope), f, () -> backwardChunk(plan, ci)));
        }
        joinAll(reductions(plan, perJob));
    }

    private Object backwardChunk(Plan plan, int ci) {
        Chunk ch = plan.chunks.get(ci);
        long t0 = System.nanoTime();
        plan.partials[ci] = ExpertKernels.backward(plan.jobs.get(ch.job), ch.start, ch.end, plan.caches[ci]);
        plan.caches[ci] = null;
        plan.backwardNs[ci] = System.nanoTime() - t0;
        return null;
    }

    private List<TaskHandle<?>> reductions(Plan plan, List<List<TaskHandle<?>>> perJob) {
        List<TaskHandle<?>> out = new ArrayList<>();
        int p = workers();
        for (int j = 0; j < plan.jobs.size(); j++) {
            List<TaskHandle<?>> deps = perJob.get(j);
            if (deps.isEmpty()) {
                continue;
            }
            int jj = j;
            ExpertJob job = plan.jobs.get(j);
            TaskOptions opts = TaskOptions.named("moe-reduce").priority(Integer.MAX_VALUE);
            out.add(afterAll(opts, deps, () -> {
                long t0 = System.nanoTime();
                List<ExpertKernels.Partial> parts = new ArrayList<>();
                for (int c = 0; c < plan.chunks.size(); c++) {
                    if (plan.chunks.get(c).job == jj) {
                        parts.add(plan.partials[c]);
                        plan.partials[c] = null;
                    }
                }
                ExpertKernels.reduce(job, parts.toArray(new ExpertKernels.Partial[0]));
                plan.reduceNs[jj] = System.nanoTime() - t0;
                return null;
            }));
        }
        return out;
    }

    private TaskOptions options(String phase, ExpertJob job, Chunk ch, int passes, Scope scope) {
        int rows = ch.end - ch.start;
        long flops = 4L * job.w1.rows() * job.w1.columns() * rows * passes;
        TaskOptions o = TaskOptions.named("moe-" + phase).priority(rows)
                .costHint(Duration.ofNanos(Math.max(1, (long) (flops * NS_PER_FLOP))));
        return scope == null ? o : o.scope(scope);
    }

    private TaskHandle<?> run(TaskOptions options, dev.poniard.scheduler.Fn.F0<Object> body) {
        if (scheduler == null) {
            runInline(body);
            return null;
        }
        return scheduler.spawn(options, body);
    }

    private TaskHandle<?> after(TaskOptions options, TaskHandle<?> dep, dev.poniard.scheduler.Fn.F0<Object> body) {
        if (scheduler == null) {
            runInline(body);
            return null;
        }
        return scheduler.spawn(options, (Object ignored) -> body.call(), dep);
    }

    private TaskHandle<?> afterAll(TaskOptions options, List<TaskHandle<?>> deps, dev.poniard.scheduler.Fn.F0<Object> body) {
        if (scheduler == null) {
            runInline(body);
            return null;
        }
        return scheduler.spawnN(options, args -> body.call(), deps.toArray());
    }

    private static void runInline(dev.poniard.scheduler.Fn.F0<Object> body) {
        try {
            body.call();
        } catch (RuntimeException | Error e) {
            throw e;
        } catch (Exception e) {
            throw new IllegalStateException(e);
        }
    }

    private static void joinAll(List<TaskHandle<?>> handles) {
        for (TaskHandle<?> h : handles) {
            if (h != null) {
                h.join();
            }
        }
    }

    @Override
    public void close() {
        if (owned && scheduler != null) {
            LOG.debug("closing expert scheduler {}", scheduler);
            scheduler.close();
        }
    }

    @Override
    public String toString() {
        return scheduler == null ? "ExpertExecutor(inline)" : "ExpertExecutor(" + scheduler + (owned ? ", owned)" : ")");
    }

    /** A chunk: rows [start, end) of job {@code job}. */
    public record Chunk(int job, int start, int end) {
        public int rows() {
            return end - start;
        }
    }

    /** One step's jobs cut into chunks, with the chunks' caches, partials and measured task times. */
    public static final class Plan {
        final List<ExpertJob> jobs;
        final List<Chunk> chunks;
        final ExpertKernels.Cache[] caches;
        final ExpertKernels.Partial[] partials;
        final long[] forwardNs;
        final long[] backwardNs;
        final long[] reduceNs;

        Plan(List<ExpertJob> jobs, List<Chunk> chunks) {
            this.jobs = jobs;
            this.chunks = List.copyOf(chunks);
            this.caches = new ExpertKernels.Cache[chunks.size()];
            this.partials = new ExpertKernels.Partial[chunks.size()];
            this.forwardNs = new long[chunks.size()];
            this.backwardNs = new long[chunks.size()];
            this.reduceNs = new long[jobs.size()];
        }

        public List<Chunk> chunks() {
            return chunks;
        }

        public List<ExpertJob> jobs() {
            return jobs;
        }

        /** Every task's measured duration (forward, backward and reduction tasks), in nanoseconds. */
        public long[] taskNs() {
            long[] all = new long[forwardNs.length * 2 + reduceNs.length];
            System.arraycopy(forwardNs, 0, all, 0, forwardNs.length);
            System.arraycopy(backwardNs, 0, all, forwardNs.length, backwardNs.length);
            System.arraycopy(reduceNs, 0, all, forwardNs.length * 2, reduceNs.length);
            return all;
        }

        /** Frees the per-chunk caches and partials still held (a forward without backward, a failed step). */
        public void release() {
            for (int c = 0; c < caches.length; c++) {
                if (caches[c] != null) {
                    caches[c].close();
                    caches[c] = null;
                }
                if (partials[c] != null) {
                    partials[c].close();
                    partials[c] = null;
                }
            }
        }
    }
}
