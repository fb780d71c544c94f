package dev.poniard.samples.cli;

import dev.poniard.linalg.DType;
import dev.poniard.linalg.DistributedMatrix;
import dev.poniard.linalg.LuFactorization;
import dev.poniard.linalg.QrFactorization;
import dev.poniard.linalg.TileAlgebra;
import dev.poniard.linalg.device.DeviceTileAlgebra;
import dev.poniard.linalg.dist.Distribution;
import dev.poniard.linalg.tile.TileKernels;
import dev.poniard.samples.linalg.LinalgRank;
import dev.poniard.samples.linalg.Residuals;
import dev.poniard.scheduler.Trace;
import dev.poniard.scheduler.comm.Communicator;
import dev.poniard.scheduler.comm.launch.Launcher;
import dev.poniard.scheduler.comm.launch.RankEnvironment;
import dev.poniard.scheduler.stream.Device;
import dev.poniard.scheduler.stream.DeviceTimeline;
import dev.poniard.scheduler.stream.cpu.CpuDevice;
import dev.poniard.scheduler.stream.cuda.CudaDevice;
import dev.poniard.scheduler.stream.cuda.CudaDevices;
import java.io.IOException;
import java.io.PrintWriter;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;
import java.util.concurrent.Callable;
import java.util.function.Consumer;
import java.util.function.Function;
import picocli.CommandLine;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;
import picocli.CommandLine.Parameters;

/**
 * {@code ./poniard linalg cholesky --n 4096 [--tile 256] [--trace FILE]}: runs one tile factorization (or
 * GEMM, or {@code solve}: A x = b by LU) as a scheduler DAG in this process and prints GFLOP/s, the scaled
 * residual and the run summary.
 * With {@code --ranks N} (or under {@code ./poniard launch -n N -- linalg ...}) the operation runs SPMD
 * over N rank processes, one worker each by default, on a 2D block-cyclic grid (by default 1 x N for LU and QR,
 * which factor each panel on one rank: on a grid that splits tile columns they factor a copy redistributed by
 * columns and copy it back, as solve does with its copy of A; for Cholesky a tall grid whose tile rows are dealt
 * back and forth, which balances its triangular work); {@code --grid PxQxC} runs gemm 2.5D on C layers
 * of a P x Q grid, A, B and C replicated on every layer;
 * rank 0 prints the result
 * and every rank its summary and, with {@code --trace FILE}, its own timeline {@code FILE-rankK.json}.
 * With {@code --device gpu} gemm, cholesky, lu and qr run as tile DAGs on one CUDA GPU's streams (cuBLAS tile
 * kernels, {@link DeviceTileAlgebra}); {@code --device cpu} runs the same stream DAG on the CPU-emulated device.
 * There {@code --trace FILE} writes the device's streams instead (a lane per compute stream and copy engine, an
 * interval per kernel, library call, host function and copy: {@link DeviceTimeline}).
 */
@Command(name = "linalg", mixinStandardHelpOptions = true,
        description = "Runs a tile GEMM, Cholesky, LU, QR or linear solve (float64) on the scheduler; prints GFLOP/s, residual, summary.")
public final class LinalgCommand implements Callable<Integer> {
    enum Op { gemm, cholesky, lu, qr, solve }

    /** Where the tile kernels run. */
    enum Target { threads, gpu, cpu }

    @Parameters(index = "0", paramLabel = "OP", description = "One of: ${COMPLETION-CANDIDATES}")
    Op op;

    @Option(names = "--n", defaultValue = "2048", description = "Matrix order (default: ${DEFAULT-VALUE}).")
    int n;

    @Option(names = "--tile", defaultValue = "256", description = "Tile size (default: ${DEFAULT-VALUE}).")
    int tile;

    @Option(names = "--workers", description = "Worker threads (default: one per core; one per rank with --ranks); "
            + "with --device cpu, kernels at once.")
    Integer workers;

    @Option(names = "--trace", paramLabel = "FILE", description = "Write a Chrome trace (open in Perfetto): the "
            + "scheduler's tasks, or with --device the device's streams.")
    Path trace;

    @Option(names = "--ranks", defaultValue = "1",
            description = "Run SPMD over N rank processes on this machine (default: ${DEFAULT-VALUE}).")
    int ranks;

    @Option(names = "--grid", paramLabel = "PxQ[xC]",
            description = "Process grid of the 2D block-cyclic distribution across ranks, P x Q = ranks (default: the most square; for cholesky its tall transpose with tile rows dealt back and forth; 1xN for lu and qr, which redistribute by columns on any other). "
                    + "For gemm, PxQxC replicates A, B and C on C layers of a P x Q grid (P x Q x C = ranks) and runs 2.5D GEMM.")
    String grid;

    @Option(names = "--strategy", description = "How tiles move between ranks: ${COMPLETION-CANDIDATES} (default: POINT_TO_POINT).")
    TileAlgebra.Strategy strategy;

    @Option(names = "--device", defaultValue = "threads",
            description = "Where the tiles run: threads (the scheduler's workers, default), gpu (one CUDA GPU's "
                    + "streams, cuBLAS tile kernels; with --ranks a GPU per rank), cpu (the same stream DAG on the "
                    + "CPU-emulated device). gpu and cpu run gemm, cholesky, lu and qr, not solve.")
    Target device;

    @CommandLine.Spec
    CommandLine.Model.CommandSpec spec;

    @Override
    public Integer call() throws Exception {
        if (n < 1 || tile < 1) {
            throw new CommandLine.ParameterException(spec.commandLine(), "--n and --tile must be >= 1, got " + n + " and " + tile);
        }
        PrintWriter out = spec.commandLine().getOut();
        if (ranks < 1) {
            throw new CommandLine.ParameterException(spec.commandLine(), "--ranks must be >= 1, got " + ranks);
        }
        RankEnvironment env = RankEnvironment.detect();
        if (device != Target.threads) {
            boolean spread = env.size() > 1 || ranks > 1;
            if (op == Op.solve) {
                throw new CommandLine.ParameterException(spec.commandLine(), "--device " + device + " runs gemm, "
                        + "cholesky, lu or qr; got solve (run it on the threads, the default)");
            }
            if (device == Target.gpu && env.size() <= 1) {
                gpuCount(); // no GPU fails here, once, rather than in every rank process
            }
            if (!spread) {
                return onDevice(out);
            }
        }
        if (env.size() > 1 || ranks > 1) {
            if (env.size() <= 1 && grid != null) {
                parseGrid(grid, ranks); // a bad grid fails here, once, rather than in every rank process
            }
            return env.size() > 1 ? spmd(out) : launchRanks(out);
        }
        TileAlgebra.Context ctx = new TileAlgebra.Context().trace(trace != null);
        if (workers != null) {
            ctx.workers(workers);
        }
        try (TileAlgebra la = TileAlgebra.launch(ctx)) {
            double[] m = warmThenMeasure(Algebra.of(la), la, () -> la.scheduler().resetStats());
            double flops = m[0];
            double residual = m[1];
            long t0 = (long) m[2];
            double seconds = t0 / 1e9;
            out.printf(Locale.ROOT, "%s n=%d tile=%d workers=%d: %.3f s, %.1f GFLOP/s, scaled residual %.3g%n", op, n, tile,
                    la.scheduler().processorCount(), seconds, flops / t0, residual);
            out.print(la.scheduler().summary());
            if (trace != null) {
                la.scheduler().trace().writeChromeJson(trace);
                out.println("trace written to " + trace + " (open it in https://ui.perfetto.dev)");
            }
            out.flush();
            return residual < 10 ? 0 : 1;
        }
    }

    /** The operations the command times, on the scheduler's workers or on one device's streams. */
    private record Algebra(Gemm gemm, Consumer<DistributedMatrix> cholesky,
                           Function<DistributedMatrix, LuFactorization> lu,
                           Function<DistributedMatrix, QrFactorization> qr) {
        /** C := A B. */
        interface Gemm {
            void run(DistributedMatrix a, DistributedMatrix b, DistributedMatrix c);
        }

        static Algebra of(TileAlgebra la) {
            return new Algebra((a, b, c) -> la.gemm(1.0, a, b, 0.0, c), la::cholesky, la::lu, la::qr);
        }

        static Algebra of(DeviceTileAlgebra la) {
            return new Algebra((a, b, c) -> la.gemm(1.0, a, b, 0.0, c), la::cholesky, la::lu, la::qr);
        }
    }

    /**
     * The operation on one device's streams: its pools sized for the operation's tiles and factors (a pool never
     * allocates inside the DAG), one warm-up run, one timed run; the residual is checked on the host, QR's by a
     * one-worker host algebra applying the device's Q.
     */
    private int onDevice(PrintWriter out) throws IOException {
        DeviceTimeline timeline = trace == null ? null : new DeviceTimeline();
        try (Device d = openDevice(0, workers != null ? workers : Runtime.getRuntime().availableProcessors(), timeline);
             DeviceTileAlgebra dla = DeviceTileAlgebra.launch(new DeviceTileAlgebra.Context().device(d));
             TileAlgebra host = TileAlgebra.launch(new TileAlgebra.Context().workers(1))) {
            double[] m = warmThenMeasure(Algebra.of(dla), host, () -> restart(d, timeline));
            out.printf(Locale.ROOT, "%s n=%d tile=%d on %s (%d compute streams): %.3f s, %.1f GFLOP/s, scaled residual "
                    + "%.3g%n", op, n, tile, d.name(), d.computeStreams().size(), m[2] / 1e9, m[0] / m[2], m[1]);
            if (timeline != null) {
                writeTimeline(out, d, timeline, null, trace);
            }
            out.flush();
            return m[1] < 10 ? 0 : 1;
        }
    }

    /** After the warm-up: the timeline shows the timed run only. */
    private static void restart(Device d, DeviceTimeline timeline) {
        if (timeline != null) {
            d.synchronize(); // a CUDA device adds the warm-up's operations here, before they are cleared
            timeline.clear();
        }
    }

    /** Writes the device's stream timeline as a Chrome trace, rank {@code comm.rank()}'s when {@code comm} is set. */
    private static void writeTimeline(PrintWriter out, Device d, DeviceTimeline timeline, Communicator comm, Path file)
            throws IOException {
        d.synchronize();
        Trace t = timeline.toTrace(d);
        (comm == null ? t : t.ofRank(comm.rank())).writeChromeJson(file);
        out.println((comm == null ? "timeline of " : "timeline of rank " + comm.rank() + "'s ") + d.name() + "'s "
                + "streams written to " + file + " (open it in https://ui.perfetto.dev)"
                + (timeline.dropped() > 0 ? "; " + timeline.dropped() + " operations were not timed" : ""));
    }

    /** Starts {@code ranks} processes that each run this command as one rank of the job. */
    private int launchRanks(PrintWriter out) {
        List<String> args = new ArrayList<>(List.of("linalg", op.name(), "--n", Integer.toString(n), "--tile",
                Integer.toString(tile)));
        if (workers != null) {
            args.addAll(List.of("--workers", workers.toString()));
        }
        if (grid != null) {
            args.addAll(List.of("--grid", grid));
        }
        if (trace != null) {
            args.addAll(List.of("--trace", trace.toAbsolutePath().toString()));
        }
        if (strategy != null) {
            args.addAll(List.of("--strategy", strategy.name()));
        }
        args.addAll(List.of("--device", device.name()));
        Launcher.Context ctx = new Launcher.Context().ranks(ranks)
                .command(Launcher.javaCommand(LaunchCommand.CLI_MAIN_CLASS, args))
                .output(line -> {
                    synchronized (out) {
                        out.println(line);
                        out.flush();
                    }
                });
        int code;
        try (Launcher launcher = Launcher.launch(ctx)) {
            code = launcher.waitFor();
        }
        if (code == 0 && trace != null) {
            TraceFiles.mergeRanks(trace.toAbsolutePath(), ranks, out);
        }
        return code;
    }

    /** One rank of an SPMD run (inside {@code launch}): warm-up, then one timed run checked on rank 0. */
    private int spmd(PrintWriter out) throws IOException {
        try (Communicator comm = Communicator.connect(new Communicator.Context())) {
            TileAlgebra.Context ctx = new TileAlgebra.Context().trace(trace != null).communicator(comm)
                    .workers(workers != null ? workers : 1);
            if (strategy != null) {
                ctx.strategy(strategy);
            }
            LinalgRank.Op o = LinalgRank.Op.valueOf(op.name());
            Distribution d = grid == null ? LinalgRank.distribution(o, comm.size(), n, tile) : parseGrid(grid, comm.size());
            if (device != Target.threads) {
                return spmdOnDevices(out, comm, o, d);
            }
            try (TileAlgebra la = TileAlgebra.launch(ctx)) {
                LinalgRank.run(comm, la, o, n, tile, 1, false, d); // warms up the JIT, OpenBLAS and the cost model
                la.scheduler().resetStats(); // also restarts the trace: it shows the timed run only
                LinalgRank.Run run = LinalgRank.run(comm, la, o, n, tile, 1, true, d);
                if (comm.rank() == 0) {
                    out.printf(Locale.ROOT, "%s n=%d tile=%d ranks=%d (%s, %s) workers/rank=%d: %.3f s, %.1f GFLOP/s, "
                                    + "scaled residual %.3g%n", op, n, tile, comm.size(), d,
                            ctx.strategy(), la.scheduler().processorCount(), run.seconds(), run.gflops(), run.residual());
                }
                out.print(la.scheduler().summary());
                if (trace != null) {
                    Path file = TraceFiles.perRank(trace, comm.rank());
                    la.scheduler().trace().ofRank(comm.rank()).writeChromeJson(file);
                    out.println("trace of rank " + comm.rank() + " written to " + file + " (open it in https://ui.perfetto.dev)");
                }
                out.flush();
                comm.barrier();
                return comm.rank() != 0 || run.residual() < 10 ? 0 : 1;
            }
        }
    }

    /**
     * One rank of an SPMD gemm, cholesky, lu or qr whose tiles run on this rank's device: GPU
     * {@code localRank % count} with {@code --device gpu}, an emulated device running {@code --workers} kernels at
     * once (default 1) with cpu.
     */
    private int spmdOnDevices(PrintWriter out, Communicator comm, LinalgRank.Op o, Distribution d) throws IOException {
        DeviceTimeline timeline = trace == null ? null : new DeviceTimeline();
        try (Device dev = openDevice(RankEnvironment.detect().localRank(), workers != null ? workers : 1, timeline);
             DeviceTileAlgebra la = DeviceTileAlgebra.launch(new DeviceTileAlgebra.Context().device(dev)
                     .communicator(comm))) {
            LinalgRank.run(comm, la, o, n, tile, 1, false, d); // warm-up
            restart(dev, timeline);
            LinalgRank.Run run = LinalgRank.run(comm, la, o, n, tile, 1, true, d);
            if (comm.rank() == 0) {
                out.printf(Locale.ROOT, "%s n=%d tile=%d ranks=%d (%s) on a device each (%s on rank 0): %.3f s, %.1f "
                        + "GFLOP/s, scaled residual %.3g%n", op, n, tile, comm.size(), d, dev.name(), run.seconds(),
                        run.gflops(), run.residual());
            }
            if (timeline != null) {
                writeTimeline(out, dev, timeline, comm, TraceFiles.perRank(trace, comm.rank()));
            }
            out.flush();
            comm.barrier();
            return comm.rank() != 0 || run.residual() < 10 ? 0 : 1;
        }
    }

    /**
     * The device of {@code --device}, its pools sized for an operation's tiles, factors and received copies (a pool
     * allocates only what is asked, never inside a DAG): the CUDA GPU {@code index % count}, or an emulated device
     * running {@code kernels} kernels at once; recording into {@code timeline} unless it is null.
     */
    private Device openDevice(int index, int kernels, DeviceTimeline timeline) {
        long pool = 6L * n * n * DType.F64.bytes() + (64L << 20);
        if (device == Target.gpu) {
            return CudaDevice.launch(new CudaDevice.Context().ordinal(index % gpuCount()).memoryBytes(pool)
                    .stagingBytes(pool).timeline(timeline));
        }
        TileKernels.setBlasThreads(1); // the emulated compute streams take one core each
        return CpuDevice.launch(new CpuDevice.Context().name("cpu-device").computeStreams(3).computeCapacity(kernels)
                .memoryBytes(pool).stagingBytes(pool).timeline(timeline));
    }

    /** The CUDA GPUs the driver reports; none is a usage error that says what to run instead. */
    private int gpuCount() {
        CudaDevices.Detection found = CudaDevices.detect();
        if (!found.available()) {
            throw new CommandLine.ParameterException(spec.commandLine(), "--device gpu: no CUDA GPU here (" + found
                    + "); run on the threads (the default) or on the emulated device, --device cpu");
        }
        return found.count();
    }

    private Distribution parseGrid(String text, int ranks) {
        String[] pqc = text.toLowerCase(Locale.ROOT).split("x");
        if (pqc.length == 3 && op != Op.gemm) {
            throw new CommandLine.ParameterException(spec.commandLine(), "--grid PxQxC (2.5D, replicated on C layers)"
                    + " is for gemm only, got '" + text + "' for " + op + "; use PxQ");
        }
        try {
            if (pqc.length == 2 || pqc.length == 3) {
                int p = Integer.parseInt(pqc[0].trim());
                int q = Integer.parseInt(pqc[1].trim());
                int c = pqc.length == 3 ? Integer.parseInt(pqc[2].trim()) : 1;
                if (p >= 1 && q >= 1 && c >= 1 && p * q * c == ranks) {
                    return c == 1 ? Distribution.blockCyclic2d(p, q, 1, 1, 1) : Distribution.replicated25d(p, q, c, 1);
                }
            }
        } catch (NumberFormatException e) {
            // reported below
        }
        throw new CommandLine.ParameterException(spec.commandLine(), "--grid must be PxQ with P * Q = " + ranks
                + " ranks" + (op == Op.gemm ? ", or PxQxC with P * Q * C = " + ranks : "") + ", got '" + text + "'");
    }

    /**
     * The operation's input (SPD for Cholesky), one untimed run on a copy (it warms up the JIT, OpenBLAS and the
     * scheduler's cost model), {@code afterWarmUp}, then the timed run on another copy: flops, scaled residual,
     * nanoseconds.
     */
    private double[] warmThenMeasure(Algebra alg, TileAlgebra la, Runnable afterWarmUp) {
        try (DistributedMatrix a = op == Op.cholesky ? DistributedMatrix.spd(DType.F64, n, tile, 1)
                : DistributedMatrix.random(DType.F64, n, n, tile, 1)) {
            double[] ad = a.toColumnMajor();
            try (DistributedMatrix scratch = a.copy()) {
                measure(alg, la, a, scratch, ad);
            }
            afterWarmUp.run();
            try (DistributedMatrix f = a.copy()) {
                return measure(alg, la, a, f, ad);
            }
        }
    }

    /**
     * Runs the operation on {@code f} (a copy of {@code a}) with {@code alg}; returns flops, scaled residual,
     * nanoseconds. {@code la} solves, and applies QR's Q for its residual.
     */
    private double[] measure(Algebra alg, TileAlgebra la, DistributedMatrix a, DistributedMatrix f, double[] ad) {
        double nd = n;
        double[] x = Residuals.vector(n);
        double flops;
        double residual;
        long t0 = System.nanoTime();
        switch (op) {
            case gemm -> {
                try (DistributedMatrix c = DistributedMatrix.zeros(DType.F64, n, n, tile)) {
                    alg.gemm().run(a, f, c);
                    t0 = elapsed(t0);
                    flops = 2 * nd * nd * nd;
                    residual = Residuals.diff(Residuals.matvec(c.toColumnMajor(), n, n, x),
                            Residuals.matvec(ad, n, n, Residuals.matvec(ad, n, n, x)))
                            / (Residuals.norm(ad) * Residuals.norm(ad) * Residuals.norm(x) * n * LinalgSupport.EPS);
                }
            }
            case cholesky -> {
                alg.cholesky().accept(f);
                t0 = elapsed(t0);
                flops = nd * nd * nd / 3;
                residual = Residuals.choleskyResidual(ad, f.toColumnMajor(), n);
            }
            case solve -> {
                try (DistributedMatrix b = DistributedMatrix.random(DType.F64, n, 1, tile, 2);
                     DistributedMatrix sol = la.solve(f, b)) {
                    t0 = elapsed(t0);
                    flops = LinalgRank.flops(LinalgRank.Op.solve, nd);
                    residual = Residuals.solveResidual(ad, sol.toColumnMajor(), b.toColumnMajor(), n);
                }
            }
            case lu -> {
                LuFactorization lu = alg.lu().apply(f);
                t0 = elapsed(t0);
                flops = 2 * nd * nd * nd / 3;
                residual = Residuals.luResidual(ad, f.toColumnMajor(), lu.pivots(), n);
            }
            default -> {
                try (QrFactorization qr = alg.qr().apply(f);
                     DistributedMatrix y = DistributedMatrix.zeros(DType.F64, n, 1, tile)) {
                    t0 = elapsed(t0);
                    flops = 4 * nd * nd * nd / 3;
                    y.fromColumnMajor(Residuals.upperMatvec(f.toColumnMajor(), n, x));
                    la.applyQ(qr, TileKernels.Trans.N, y);
                    residual = Residuals.diff(Residuals.matvec(ad, n, n, x), y.toColumnMajor())
                            / (Residuals.norm(ad) * Residuals.norm(x) * n * LinalgSupport.EPS);
                }
            }
        }
        return new double[] {flops, residual, t0};
    }

    private static long elapsed(long t0) {
        return System.nanoTime() - t0;
    }

    /** Constants shared by the command's residual formulas. */
    static final class LinalgSupport {
        static final double EPS = DType.F64.epsilon();

        private LinalgSupport() {
        }
    }
}
