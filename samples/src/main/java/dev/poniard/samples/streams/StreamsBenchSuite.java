package dev.poniard.samples.streams;

import dev.poniard.linalg.DType;
import dev.poniard.linalg.DistributedMatrix;
import dev.poniard.linalg.device.DeviceTileAlgebra;
import dev.poniard.linalg.tile.TileKernels;
import dev.poniard.samples.bench.BenchOptions;
import dev.poniard.samples.bench.BenchResult;
import dev.poniard.samples.bench.BenchSuite;
import dev.poniard.samples.linalg.Residuals;
import dev.poniard.scheduler.stream.Buffer;
import dev.poniard.scheduler.stream.Device;
import dev.poniard.scheduler.stream.DeviceTimeline;
import dev.poniard.scheduler.stream.KernelLaunch;
import dev.poniard.scheduler.stream.Kernels;
import dev.poniard.scheduler.stream.Stream;
import dev.poniard.scheduler.stream.StreamScheduler;
import dev.poniard.scheduler.stream.StreamScheduler.Access;
import dev.poniard.scheduler.stream.cpu.CpuDevice;
import dev.poniard.scheduler.stream.cuda.CudaDevice;
import dev.poniard.scheduler.stream.cuda.CudaDevices;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Locale;
import java.util.Random;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.function.Consumer;
import java.util.function.Function;

/**
 * {@code ./poniard bench streams}: multi-stream scheduling against one stream, on the same device in the
 * same run (issue #4). Each row's value is the overlap efficiency E = (T_serial − T) / (T_serial − T_bound),
 * where T_serial is the one-stream run measured side by side and T_bound the busiest engine's total time,
 * and its ratio the speedup over one stream.
 *
 * <p>The CPU emulation runs everywhere ({@code cpu_} cases): copy engines at an emulated 2 GB/s, kernels of
 * fixed duration, two kernels at once (two cores). On a CUDA GPU ({@code gpu_} cases) the same four
 * patterns run with 8 MiB pinned copies and the {@code spin_fma} kernel on a small grid (so kernels of
 * different streams can share the GPU); engine times are calibrated first, each operation alone on one
 * stream, and the kernel's iteration count is set so that one kernel takes about as long as one copy in.
 * Without a GPU the {@code gpu_} cases are skipped with the reason.
 *
 * <p>Each pattern has n = 32 chunks (24 with {@code --quick}). A pipeline of n chunks through three equal
 * stages cannot beat n + 2 stage times (filling and draining), so E is at most 1 − 1/n on
 * {@code copy_compute_pipeline}: 0.969 here, where 16 chunks capped it at 0.9375 and the figure measured the
 * fill more than the overlap.
 *
 * <p>Two more cases per device run the device tile algebra ({@link DeviceTileAlgebra}) and report GFLOP/s against
 * the same DAG on one stream, best of the repetitions, residual checked: {@code tile_cholesky} (n = 2048, tile 256
 * on the CPU emulation, 1024 and 128 with {@code --quick}; 8192 and 512 on a GPU, 4096 with {@code --quick}) and
 * {@code tile_gemm} (the same sizes). Measured here: Cholesky 1.50–1.55x at n = 2048 and 1.06x at 1024 with tiles of
 * 128, whose host POTRFs and copies are most of the critical path (at 4 x 4 tiles of 256 one stream was the faster,
 * 0.92x); GEMM 1.58–1.82x. On the CPU emulation (copies
 * at 12 GB/s, two kernels at once) the gain is the second core; on a GPU it is kernels of different streams sharing
 * the GPU and copies under kernels.
 */
public final class StreamsBenchSuite implements BenchSuite {
    private static final double COPY_BYTES_PER_S = 2e9;
    private static final int CHUNK_BYTES = 2 << 20;          // 1 ms per copy at 2 GB/s
    private static final long KERNEL_NS = 1_000_000;
    private static final int CAPACITY = 2;
    private static final List<String> PATTERNS =
            List.of("independent_kernels", "copy_compute_pipeline", "bidirectional_copies", "mixed_dag");

    private final boolean cpu;
    private final boolean gpu;

    /** Both the CPU emulation and, where present, the GPU. */
    public StreamsBenchSuite() {
        this(true, true);
    }

    public StreamsBenchSuite(boolean cpu, boolean gpu) {
        this.cpu = cpu;
        this.gpu = gpu;
    }

    @Override
    public String name() {
        return "streams";
    }

    @Override
    public String description() {
        return "copy/compute overlap of the multi-stream scheduler vs one stream (CPU emulation; GPU where present)";
    }

    /** The device under test: buffer size, calibrated engine times, and how to enqueue a compute task. */
    private interface Workload {
        int chunkBytes();

        double copyInNs();

        double copyOutNs();

        /** One unit of compute. */
        double kernelNs();

        /** Kernels that run at once on the streams non-critical work uses. */
        int capacity();

        /** Enqueues {@code units} units of compute that write {@code out} (and read {@code in} unless null). */
        void kernel(StreamScheduler s, int units, Buffer out, Buffer in);
    }

    /** One workload: enqueues its operations on a scheduler; knows its engines' total busy times. */
    private interface Pattern {
        void enqueue(StreamScheduler s, Pool pool, Workload w);

        /** Nominal busy time of the busiest engine, in nanoseconds. */
        double boundNs(Workload w);
    }

    /** Device buffers and pinned buffers acquired once per case (no allocation while timing). */
    private static final class Pool {
        final List<Buffer> host = new ArrayList<>(), dev = new ArrayList<>();

        Pool(Device d, int n, int bytes) {
            for (int i = 0; i < n; i++) {
                host.add(d.staging().acquire(bytes));
                dev.add(d.memory().acquire(bytes));
            }
        }

        void close() {
            host.forEach(Buffer::close);
            dev.forEach(Buffer::close);
        }
    }

    @Override
    public List<BenchResult> run(BenchOptions options, Consumer<BenchResult> progress) {
        int n = options.quick() ? 24 : 32;
        int reps = options.quick() ? 3 : 5;
        List<BenchResult> results = new ArrayList<>();
        if (cpu) {
            CpuDevice.Context ctx = new CpuDevice.Context().name("bench").computeStreams(3).computeCapacity(CAPACITY)
                    .copyBytesPerSecond(COPY_BYTES_PER_S).memoryBytes(256L << 20).stagingBytes(256L << 20);
            try (CpuDevice device = CpuDevice.launch(ctx)) {
                runCases("cpu_", device, cpuWorkload(), n, reps, results, progress);
            }
            TileKernels.setBlasThreads(1); // an emulated compute stream runs on one core
            int size = options.quick() ? 1024 : 2048;
            Function<DeviceTimeline, Device> linalgDevice = t -> CpuDevice.launch(new CpuDevice.Context()
                    .name("bench-linalg").computeStreams(3).computeCapacity(CAPACITY).memoryBytes(tileBytes(size))
                    .stagingBytes(tileBytes(size)).timeline(t));
            try (Device device = linalgDevice.apply(null)) {
                tileCases("cpu_", device, size, size / 8, reps, results, progress); // 8 x 8 tiles
            }
            if (options.timelines() != null) {
                writeTimelines("cpu_", linalgDevice, size, size / 8, options.timelines());
            }
        }
        if (gpu) {
            CudaDevices.Detection found = CudaDevices.detect();
            if (!found.available()) {
                System.out.println("gpu_ cases skipped: " + found);
                System.out.flush();
            } else {
                int bytes = GpuWorkload.CHUNK_BYTES;
                CudaDevice.Context ctx = new CudaDevice.Context().name("bench-gpu").computeStreams(4)
                        .memoryBytes(4L * n * bytes).stagingBytes(4L * n * bytes);
                try (CudaDevice device = CudaDevice.launch(ctx)) {
                    GpuWorkload w = new GpuWorkload(device, n);
                    System.out.println("gpu: " + device + "; " + w);
                    System.out.flush();
                    runCases("gpu_", device, w, n, reps, results, progress);
                }
                int size = options.quick() ? 4096 : 8192;
                Function<DeviceTimeline, Device> linalgDevice = t -> CudaDevice.launch(new CudaDevice.Context()
                        .name("bench-gpu-linalg").computeStreams(4).memoryBytes(tileBytes(size))
                        .stagingBytes(tileBytes(size)).timeline(t));
                try (Device device = linalgDevice.apply(null)) {
                    tileCases("gpu_", device, size, 512, reps, results, progress);
                }
                if (options.timelines() != null) {
                    writeTimelines("gpu_", linalgDevice, size, 512, options.timelines());
                }
            }
        }
        return results;
    }

    private static void runCases(String prefix, Device device, Workload w, int n, int reps, List<BenchResult> results,
                                 Consumer<BenchResult> progress) {
        for (String name : PATTERNS) {
            Pattern p = pattern(name, n);
            Pool pool = new Pool(device, 2 * n, w.chunkBytes());
            try {
                double multi = median(reps, () -> time(new StreamScheduler(device), p, pool, w));
                double single = median(reps, () -> time(new StreamScheduler(device, true), p, pool, w));
                double e = (single - multi) / (single - p.boundNs(w));
                BenchResult r = new BenchResult(prefix + name, "overlap_efficiency", "E", e, "1 stream",
                        single / 1e6, single / multi);
                results.add(r);
                progress.accept(r);
            } finally {
                pool.close();
            }
        }
    }

    /** Pool bytes for the tile cases at order n: A, B and C of GEMM with room to spare (pools allocate on demand). */
    private static long tileBytes(int n) {
        return 4L * n * n * DType.F64.bytes() + (64L << 20);
    }

    /**
     * {@code tile_cholesky} and {@code tile_gemm} at order n, tile nb: the device algebra on every stream against
     * one stream, alternating, best of {@code reps} after a warm-up of each; a scaled residual of 10 or more fails
     * the bench.
     */
    private static void tileCases(String prefix, Device device, int n, int nb, int reps, List<BenchResult> results,
                                  Consumer<BenchResult> progress) {
        try (DeviceTileAlgebra multi = DeviceTileAlgebra.launch(new DeviceTileAlgebra.Context().device(device));
             DeviceTileAlgebra single = DeviceTileAlgebra.launch(new DeviceTileAlgebra.Context().device(device)
                     .singleStream(true));
             DistributedMatrix spd = DistributedMatrix.spd(DType.F64, n, nb, 1);
             DistributedMatrix a = DistributedMatrix.random(DType.F64, n, n, nb, 2);
             DistributedMatrix b = DistributedMatrix.random(DType.F64, n, n, nb, 3);
             DistributedMatrix c = DistributedMatrix.zeros(DType.F64, n, n, nb)) {
            double[] ad = spd.toColumnMajor();
            double[] chol = best(reps, la -> {
                try (DistributedMatrix f = spd.copy()) {
                    long t0 = System.nanoTime();
                    la.cholesky(f);
                    long dt = System.nanoTime() - t0;
                    check(prefix + "tile_cholesky", Residuals.choleskyResidual(ad, f.toColumnMajor(), n));
                    return dt;
                }
            }, multi, single);
            double[] x = Residuals.vector(n);
            double[] abx = Residuals.matvec(a.toColumnMajor(), n, n, Residuals.matvec(b.toColumnMajor(), n, n, x));
            double scale = a.normFrobenius() * b.normFrobenius() * Residuals.norm(x) * n * DType.F64.epsilon();
            double[] gemm = best(reps, la -> {
                long t0 = System.nanoTime();
                la.gemm(1.0, a, b, 0.0, c);
                long dt = System.nanoTime() - t0;
                check(prefix + "tile_gemm", Residuals.diff(Residuals.matvec(c.toColumnMajor(), n, n, x), abx) / scale);
                return dt;
            }, multi, single);
            double cholFlops = (double) n * n * n / 3;
            double gemmFlops = 2.0 * n * n * n;
            for (BenchResult r : List.of(
                    BenchResult.higherIsBetter(prefix + "tile_cholesky", "gflops", "GFLOP/s", cholFlops / chol[0],
                            "same DAG on 1 stream", cholFlops / chol[1]),
                    BenchResult.higherIsBetter(prefix + "tile_gemm", "gflops", "GFLOP/s", gemmFlops / gemm[0],
                            "same DAG on 1 stream", gemmFlops / gemm[1]))) {
                results.add(r);
                progress.accept(r);
            }
        }
    }

    /**
     * The timelines of the tile cases' multi-stream runs, {@code DIR/PREFIXtile_cholesky.json} and
     * {@code DIR/PREFIXtile_gemm.json}: on a device of their own that records its streams, each operation once to warm
     * up and once recorded (outside the timed runs, which the recording would slow on a GPU).
     */
    static void writeTimelines(String prefix, Function<DeviceTimeline, Device> open, int n, int nb, Path dir) {
        DeviceTimeline timeline = new DeviceTimeline();
        try (Device device = open.apply(timeline);
             DeviceTileAlgebra la = DeviceTileAlgebra.launch(new DeviceTileAlgebra.Context().device(device));
             DistributedMatrix spd = DistributedMatrix.spd(DType.F64, n, nb, 1);
             DistributedMatrix a = DistributedMatrix.random(DType.F64, n, n, nb, 2);
             DistributedMatrix b = DistributedMatrix.random(DType.F64, n, n, nb, 3);
             DistributedMatrix c = DistributedMatrix.zeros(DType.F64, n, n, nb)) {
            Files.createDirectories(dir);
            Map<String, Runnable> ops = new LinkedHashMap<>();
            ops.put("tile_cholesky", () -> {
                try (DistributedMatrix f = spd.copy()) {
                    la.cholesky(f);
                }
            });
            ops.put("tile_gemm", () -> la.gemm(1.0, a, b, 0.0, c));
            for (Map.Entry<String, Runnable> op : ops.entrySet()) {
                op.getValue().run();
                device.synchronize();
                timeline.clear();
                op.getValue().run();
                device.synchronize();
                Path file = dir.resolve(prefix + op.getKey() + ".json");
                timeline.toTrace(device).writeChromeJson(file);
                System.out.println("timeline of " + prefix + op.getKey() + "'s streams written to " + file);
            }
            System.out.flush();
        } catch (IOException e) {
            throw new UncheckedIOException("could not write the timelines to " + dir + ": " + e.getMessage(), e);
        }
    }

    /** Fastest nanoseconds of {@code run} on each algebra, {@code [first, second]}: a warm-up each, then in turns. */
    private static double[] best(int reps, java.util.function.ToLongFunction<DeviceTileAlgebra> run,
                                 DeviceTileAlgebra first, DeviceTileAlgebra second) {
        run.applyAsLong(first);
        run.applyAsLong(second);
        double[] best = {Double.MAX_VALUE, Double.MAX_VALUE};
        for (int r = 0; r < reps; r++) {
            best[0] = Math.min(best[0], run.applyAsLong(first));
            best[1] = Math.min(best[1], run.applyAsLong(second));
        }
        return best;
    }

    private static void check(String what, double residual) {
        if (!(residual < 10)) {
            throw new IllegalStateException(what + ": scaled residual " + residual + " is not below 10; the result is "
                    + "wrong");
        }
    }

    private static double time(StreamScheduler s, Pattern p, Pool pool, Workload w) {
        long t0 = System.nanoTime();
        p.enqueue(s, pool, w);
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

    private static void spin(long ns) {
        long end = System.nanoTime() + ns;
        while (System.nanoTime() < end) {
            Thread.onSpinWait();
        }
    }

    /** The CPU emulation: nominal engine times, kernels that spin for a fixed time. */
    private static Workload cpuWorkload() {
        double copyNs = CHUNK_BYTES * 1e9 / COPY_BYTES_PER_S;
        return new Workload() {
            public int chunkBytes() {
                return CHUNK_BYTES;
            }

            public double copyInNs() {
                return copyNs;
            }

            public double copyOutNs() {
                return copyNs;
            }

            public double kernelNs() {
                return KERNEL_NS;
            }

            public int capacity() {
                return CAPACITY;
            }

            public void kernel(StreamScheduler s, int units, Buffer out, Buffer in) {
                long ns = units * KERNEL_NS;
                if (in == null) {
                    s.launch(() -> spin(ns), ns, false, Access.out(out));
                } else {
                    s.launch(() -> spin(ns), ns, false, Access.in(in), Access.out(out));
                }
            }
        };
    }

    /**
     * A CUDA GPU: engine times measured, each kind of operation alone on one stream, batches of 8 between
     * synchronisations; the spin kernel's iterations chosen so that one kernel takes about one copy in.
     */
    private static final class GpuWorkload implements Workload {
        static final int CHUNK_BYTES = 8 << 20;
        /** Threads of one kernel: 32 blocks of 256, a small part of any data-centre GPU. */
        static final int KERNEL_ELEMENTS = 32 * KernelLaunch.DEFAULT_BLOCK;
        private static final int BATCH = 8;
        final double copyInNs;
        final double copyOutNs;
        final int iters;
        final double kernelNs;
        final int capacity;

        GpuWorkload(CudaDevice d, int n) {
            d.loadKernels(Kernels.ALL);
            capacity = Math.max(1, d.computeStreams().size() - 1);
            Pool pool = new Pool(d, BATCH, CHUNK_BYTES);
            try {
                Stream s = d.computeStreams().get(1);
                for (Buffer b : pool.dev) {
                    s.launch(KernelLaunch.of(Kernels.FILL_F32, b, 0.5f, CHUNK_BYTES / 4), 0);
                }
                s.record().synchronize();
                copyInNs = measure(() -> {
                    for (int i = 0; i < BATCH; i++) {
                        d.hostToDevice().copy(pool.host.get(i), 0, pool.dev.get(i), 0, CHUNK_BYTES);
                    }
                    d.hostToDevice().record().synchronize();
                });
                copyOutNs = measure(() -> {
                    for (int i = 0; i < BATCH; i++) {
                        d.deviceToHost().copy(pool.dev.get(i), 0, pool.host.get(i), 0, CHUNK_BYTES);
                    }
                    d.deviceToHost().record().synchronize();
                });
                int probe = 20_000;
                double probeNs = kernelTime(d, pool, probe);
                iters = (int) Math.max(1_000, Math.min(200_000_000, probe * copyInNs / probeNs));
                kernelNs = kernelTime(d, pool, iters);
            } finally {
                pool.close();
            }
        }

        private static double kernelTime(CudaDevice d, Pool pool, int iters) {
            Stream s = d.computeStreams().get(1);
            return measure(() -> {
                for (int i = 0; i < BATCH; i++) {
                    s.launch(spin(pool.dev.get(i), iters), 0);
                }
                s.record().synchronize();
            });
        }

        static KernelLaunch spin(Buffer b, int iters) {
            // x -> 0.999 x + 0.001 stays near 1: no overflow, no denormals, whatever the iteration count
            return KernelLaunch.of(Kernels.SPIN_FMA_F32, b, 0.999f, 0.001f, KERNEL_ELEMENTS, iters);
        }

        /** Median time of one operation of a batch, in nanoseconds. */
        private static double measure(Runnable batch) {
            return median(5, () -> {
                long t0 = System.nanoTime();
                batch.run();
                return (System.nanoTime() - t0) / (double) BATCH;
            });
        }

        public int chunkBytes() {
            return CHUNK_BYTES;
        }

        public double copyInNs() {
            return copyInNs;
        }

        public double copyOutNs() {
            return copyOutNs;
        }

        public double kernelNs() {
            return kernelNs;
        }

        public int capacity() {
            return capacity;
        }

        public void kernel(StreamScheduler s, int units, Buffer out, Buffer in) {
            KernelLaunch k = spin(out, iters * units);
            if (in == null) {
                s.launch(k, (long) (units * kernelNs), false);
            } else {
                s.launch(k, (long) (units * kernelNs), false, Access.in(in));
            }
        }

        @Override
        public String toString() {
            return String.format(Locale.ROOT, "calibrated: %d MiB copy in %.1f us (%.1f GB/s), out %.1f us (%.1f GB/s);"
                            + " spin kernel %d elements x %d iterations %.1f us; %d kernels at once",
                    CHUNK_BYTES >> 20, copyInNs / 1e3, CHUNK_BYTES / copyInNs, copyOutNs / 1e3, CHUNK_BYTES / copyOutNs,
                    KERNEL_ELEMENTS, iters, kernelNs / 1e3, capacity);
        }
    }

    private static Pattern pattern(String name, int n) {
        switch (name) {
            case "independent_kernels":
                return new Pattern() {
                    public void enqueue(StreamScheduler s, Pool pool, Workload w) {
                        for (int i = 0; i < n; i++) {
                            w.kernel(s, 2, pool.dev.get(i), null);
                        }
                    }

                    public double boundNs(Workload w) {
                        return n * 2.0 * w.kernelNs() / w.capacity();
                    }
                };
            case "copy_compute_pipeline":
                return new Pattern() {
                    public void enqueue(StreamScheduler s, Pool pool, Workload w) {
                        for (int i = 0; i < n; i++) {
                            Buffer h = pool.host.get(i), d = pool.dev.get(i);
                            s.copyIn(h, d, w.chunkBytes());
                            w.kernel(s, 1, d, null);
                            s.copyOut(d, h, w.chunkBytes());
                        }
                    }

                    public double boundNs(Workload w) {
                        return Math.max(Math.max(n * w.copyInNs(), n * w.copyOutNs()), n * w.kernelNs() / w.capacity());
                    }
                };
            case "bidirectional_copies":
                return new Pattern() {
                    public void enqueue(StreamScheduler s, Pool pool, Workload w) {
                        for (int i = 0; i < n; i++) {
                            s.copyIn(pool.host.get(i), pool.dev.get(i), w.chunkBytes());
                            s.copyOut(pool.dev.get(n + i), pool.host.get(n + i), w.chunkBytes());
                        }
                    }

                    public double boundNs(Workload w) {
                        return Math.max(n * w.copyInNs(), n * w.copyOutNs());
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
        int[] count = new int[3];
        for (int i = 0; i < ops; i++) {
            kind[i] = rnd.nextInt(3);
            buf[i] = rnd.nextInt(n);
            other[i] = rnd.nextInt(n);
            count[kind[i]]++;
        }
        return new Pattern() {
            public void enqueue(StreamScheduler s, Pool pool, Workload w) {
                for (int i = 0; i < ops; i++) {
                    Buffer d = pool.dev.get(buf[i]);
                    if (kind[i] == 0) {
                        s.copyIn(pool.host.get(buf[i]), d, w.chunkBytes());
                    } else if (kind[i] == 1) {
                        s.copyOut(d, pool.host.get(n + buf[i]), w.chunkBytes());
                    } else {
                        w.kernel(s, 1, d, other[i] == buf[i] ? null : pool.dev.get(other[i]));
                    }
                }
            }

            public double boundNs(Workload w) {
                return Math.max(Math.max(count[0] * w.copyInNs(), count[1] * w.copyOutNs()),
                        count[2] * w.kernelNs() / w.capacity());
            }
        };
    }
}
