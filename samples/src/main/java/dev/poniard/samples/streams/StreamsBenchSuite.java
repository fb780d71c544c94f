package dev.poniard.samples.streams;

import dev.poniard.samples.bench.BenchOptions;
import dev.poniard.samples.bench.BenchResult;
import dev.poniard.samples.bench.BenchSuite;
import dev.poniard.scheduler.stream.Buffer;
import dev.poniard.scheduler.stream.Device;
import dev.poniard.scheduler.stream.StreamScheduler;
import dev.poniard.scheduler.stream.StreamScheduler.Access;
import dev.poniard.scheduler.stream.cpu.CpuDevice;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Random;
import java.util.function.Consumer;

/**
 * {@code ./poniard bench streams}: multi-stream scheduling against one stream, on the same device in the
 * same run (issue #4). Each row's value is the overlap efficiency E = (T_serial − T) / (T_serial − T_bound),
 * where T_bound is the busiest engine's total time, and its ratio the speedup over one stream. The CPU
 * emulation runs everywhere ({@code cpu_} cases): copy engines at an emulated 2 GB/s, kernels of fixed
 * duration, two kernels at once (two cores).
 */
public final class StreamsBenchSuite implements BenchSuite {
    private static final double COPY_BYTES_PER_S = 2e9;
    private static final int CHUNK_BYTES = 2 << 20;          // 1 ms per copy at 2 GB/s
    private static final long KERNEL_NS = 1_000_000;
    private static final int CAPACITY = 2;

    @Override
    public String name() {
        return "streams";
    }

    @Override
    public String description() {
        return "copy/compute overlap of the multi-stream scheduler vs one stream (CPU emulation; GPU where present)";
    }

    /** One workload: enqueues its operations on a scheduler; knows its engines' total busy times. */
    private interface Pattern {
        void enqueue(StreamScheduler s, Pool pool);

        /** Nominal busy time of the busiest engine, in nanoseconds. */
        double boundNs();

        /** Nominal time of all operations one after another, in nanoseconds. */
        double serialNs();
    }

    /** Device buffers and pinned buffers acquired once per case (no allocation while timing). */
    private static final class Pool {
        final List<Buffer> host = new ArrayList<>(), dev = new ArrayList<>();

        Pool(Device d, int n) {
            for (int i = 0; i < n; i++) {
                host.add(d.staging().acquire(CHUNK_BYTES));
                dev.add(d.memory().acquire(CHUNK_BYTES));
            }
        }

        void close() {
            host.forEach(Buffer::close);
            dev.forEach(Buffer::close);
        }
    }

    @Override
    public List<BenchResult> run(BenchOptions options, Consumer<BenchResult> progress) {
        int n = options.quick() ? 12 : 16;
        int reps = options.quick() ? 3 : 5;
        List<BenchResult> results = new ArrayList<>();
        CpuDevice.Context ctx = new CpuDevice.Context().name("bench").computeStreams(3).computeCapacity(CAPACITY)
                .copyBytesPerSecond(COPY_BYTES_PER_S).memoryBytes(256L << 20).stagingBytes(256L << 20);
        try (CpuDevice device = CpuDevice.launch(ctx)) {
            for (String name : List.of("independent_kernels", "copy_compute_pipeline", "bidirectional_copies", "mixed_dag")) {
                Pattern p = pattern(name, n);
                Pool pool = new Pool(device, 2 * n);
                try {
                    double multi = median(reps, () -> time(new StreamScheduler(device), p, pool));
                    double single = median(reps, () -> time(new StreamScheduler(device, true), p, pool));
                    double e = (single - multi) / (single - p.boundNs());
                    BenchResult r = new BenchResult("cpu_" + name, "overlap_efficiency", "E", e, "1 stream",
                            single / 1e6, single / multi);
                    results.add(r);
                    progress.accept(r);
                } finally {
                    pool.close();
                }
            }
        }
        return results;
    }

    private static double time(StreamScheduler s, Pattern p, Pool pool) {
        long t0 = System.nanoTime();
        p.enqueue(s, pool);
        s.synchronize();
        return System.nanoTime() - t0;
    }

    private static double median(int reps, java.util.function.DoubleSupplier run) {
        run.getAsDouble(); // warm up
        double[] v = new double[reps];
        for (int i = 0; i < reps; i++) {
            v[i] = run.getAsDouble();
        }
        Arrays.sort(v);
        return v[reps / 2];
    }

    private static void kernel(long ns) {
        long end = System.nanoTime() + ns;
        while (System.nanoTime() < end) {
            Thread.onSpinWait();
        }
    }

    private static double copyNs() {
        return CHUNK_BYTES * 1e9 / COPY_BYTES_PER_S;
    }

    private static Pattern pattern(String name, int n) {
        switch (name) {
            case "independent_kernels":
                return new Pattern() {
                    public void enqueue(StreamScheduler s, Pool pool) {
                        for (int i = 0; i < n; i++) {
                            s.launch(() -> kernel(2 * KERNEL_NS), 2 * KERNEL_NS, false, Access.out(pool.dev.get(i)));
                        }
                    }

                    public double boundNs() {
                        return n * 2.0 * KERNEL_NS / CAPACITY;
                    }

                    public double serialNs() {
                        return n * 2.0 * KERNEL_NS;
                    }
                };
            case "copy_compute_pipeline":
                return new Pattern() {
                    public void enqueue(StreamScheduler s, Pool pool) {
                        for (int i = 0; i < n; i++) {
                            Buffer h = pool.host.get(i), d = pool.dev.get(i);
                            s.copyIn(h, d, CHUNK_BYTES);
                            s.launch(() -> kernel(KERNEL_NS), KERNEL_NS, false, Access.out(d));
                            s.copyOut(d, h, CHUNK_BYTES);
                        }
                    }

                    public double boundNs() {
                        return Math.max(n * copyNs(), n * (double) KERNEL_NS / CAPACITY);
                    }

                    public double serialNs() {
                        return n * (2 * copyNs() + KERNEL_NS);
                    }
                };
            case "bidirectional_copies":
                return new Pattern() {
                    public void enqueue(StreamScheduler s, Pool pool) {
                        for (int i = 0; i < n; i++) {
                            s.copyIn(pool.host.get(i), pool.dev.get(i), CHUNK_BYTES);
                            s.copyOut(pool.dev.get(n + i), pool.host.get(n + i), CHUNK_BYTES);
                        }
                    }

                    public double boundNs() {
                        return n * copyNs();
                    }

                    public double serialNs() {
                        return 2 * n * copyNs();
                    }
                };
            default:
                return mixedDag(n);
        }
    }

    /** A seeded random DAG of copies and kernels over shared buffers. */
    private static Pattern mixedDag(int n) {
        Random rnd = new Random(42);
        int ops = 3 * n;
        int[] kind = new int[ops], buf = new int[ops], other = new int[ops];
        double in = 0, out = 0, compute = 0;
        for (int i = 0; i < ops; i++) {
            kind[i] = rnd.nextInt(3);
            buf[i] = rnd.nextInt(n);
            other[i] = rnd.nextInt(n);
            if (kind[i] == 0) {
                in += copyNs();
            } else if (kind[i] == 1) {
                out += copyNs();
            } else {
                compute += KERNEL_NS;
            }
        }
        double bound = Math.max(Math.max(in, out), compute / CAPACITY);
        double serial = in + out + compute;
        return new Pattern() {
            public void enqueue(StreamScheduler s, Pool pool) {
                for (int i = 0; i < ops; i++) {
                    Buffer d = pool.dev.get(buf[i]);
                    if (kind[i] == 0) {
                        s.copyIn(pool.host.get(buf[i]), d, CHUNK_BYTES);
                    } else if (kind[i] == 1) {
                        s.copyOut(d, pool.host.get(n + buf[i]), CHUNK_BYTES);
                    } else {
                        s.launch(() -> kernel(KERNEL_NS), KERNEL_NS, false, Access.in(pool.dev.get(other[i])),
                                Access.out(d));
                    }
                }
            }

            public double boundNs() {
                return bound;
            }

            public double serialNs() {
                return serial;
            }
        };
    }
}
