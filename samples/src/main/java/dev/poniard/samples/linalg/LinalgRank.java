package dev.poniard.samples.linalg;

import dev.poniard.linalg.DType;
import dev.poniard.linalg.DistributedMatrix;
import dev.poniard.linalg.TileAlgebra;
import dev.poniard.linalg.device.DeviceTileAlgebra;
import dev.poniard.linalg.dist.Distribution;
import dev.poniard.linalg.tile.Tile;
import dev.poniard.scheduler.comm.Communicator;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;
import java.util.function.Consumer;
import java.util.function.Function;

/**
 * One rank of a distributed (SPMD) GEMM, Cholesky, LU, QR or linear solve: every rank of a job calls {@link #run} with the
 * same arguments; the matrices are generated tile by tile where they live (2D block-cyclic over a P x Q grid),
 * the operation runs on {@link TileAlgebra} over the communicator, and rank 0 gathers the result and checks
 * a scaled residual. {@link #main} is the rank program of {@code ./poniard bench linalg}'s two-process
 * cases: rank 0 prints one {@code LINALG|...} line per case.
 */
public final class LinalgRank {
    static final String PREFIX = "LINALG|";

    /** Distributed operations. */
    public enum Op { gemm, cholesky, lu, qr, solve }

    /** One timed run: wall seconds (all ranks, barrier to barrier), GFLOP/s, and the scaled residual (rank 0; NaN elsewhere or unchecked). */
    public record Run(double seconds, double gflops, double residual) {
    }

    private LinalgRank() {
    }

    /**
     * The distribution {@code op} runs on for an n x n matrix of nb x nb tiles: LU and QR factor each panel on one
     * rank, so they get a 1 x ranks grid (any other costs them two redistributions by columns); GEMM and solve (which
     * redistributes its copy of A by columns when the grid splits them) get {@link #grid}, Cholesky its transpose
     * (P >= Q) with tile rows dealt back and forth ({@link Distribution#reflectedCyclic2d}).
     */
    public static Distribution distribution(Op op, int ranks, int n, int nb) {
        if (op == Op.lu || op == Op.qr) {
            return Distribution.blockCyclic2d(1, ranks, 1, 1, 1);
        }
        if (op == Op.cholesky) {
            // Tall (P >= Q): each panel is a tile column, and spreading its rows over ranks lets the panel's
            // TRSMs run in parallel; measured here at N = 4096, 2 ranks: 2x1 ran about twice as fast as 1x2.
            // Cyclic rows gave one of 2 ranks 60% of the updates at 8 tile rows; reflected rows give it 52%.
            Distribution.Grid wide = (Distribution.Grid) grid(ranks);
            return Distribution.reflectedCyclic2d(wide.q(), wide.p(), (n + nb - 1) / nb, 1);
        }
        return grid(ranks);
    }

    /** The most square P x Q grid with P * Q = ranks and P <= Q, as ScaLAPACK users pick. */
    public static Distribution grid(int ranks) {
        int p = (int) Math.floor(Math.sqrt(ranks));
        while (ranks % p != 0) {
            p--;
        }
        return Distribution.blockCyclic2d(p, ranks / p, 1, 1, 1);
    }

    public static double flops(Op op, double n) {
        return switch (op) {
            case gemm -> 2 * n * n * n;
            case cholesky -> n * n * n / 3;
            case lu -> 2 * n * n * n / 3;
            case qr -> 4 * n * n * n / 3;
            case solve -> 2 * n * n * n / 3 + 2 * n * n; // LU, then two triangular solves of one right-hand side
        };
    }

    /** Runs {@code op} once on every rank of {@code comm}; checks the residual on rank 0 when {@code check}. */
    public static Run run(Communicator comm, TileAlgebra la, Op op, int n, int nb, long seed, boolean check) {
        return run(comm, la, op, n, nb, seed, check, distribution(op, comm.size(), n, nb));
    }

    /** {@link #run} on a given distribution over the communicator's ranks. */
    public static Run run(Communicator comm, TileAlgebra la, Op op, int n, int nb, long seed, boolean check,
                          Distribution d) {
        if (op == Op.lu || op == Op.qr) {
            return factor(comm, op, n, nb, seed, check, d, a -> {
                if (op == Op.lu) {
                    return la.lu(a).pivots();
                }
                la.qr(a).close();
                return null;
            });
        }
        if (op == Op.solve) {
            return solve(comm, la, n, nb, seed, check, d);
        }
        return multiplyOrFactor(comm, op, n, nb, seed, check, d, (a, b, c) -> la.gemm(1.0, a, b, 0.0, c),
                la::cholesky);
    }

    /**
     * {@link #run} of gemm, cholesky, lu or qr with every rank's tiles on its own device ({@code la} launched with the
     * communicator; lu and qr on a distribution by columns); the time runs to a barrier after the operation, so it is
     * the whole job's.
     */
    public static Run run(Communicator comm, DeviceTileAlgebra la, Op op, int n, int nb, long seed, boolean check,
                          Distribution d) {
        if (op == Op.solve) {
            throw new IllegalArgumentException("solve does not run on devices across ranks; run lu");
        }
        if (op == Op.lu || op == Op.qr) {
            return factor(comm, op, n, nb, seed, check, d, a -> {
                int[] piv = null;
                if (op == Op.lu) {
                    piv = la.lu(a).pivots();
                } else {
                    la.qr(a).close();
                }
                comm.barrier();
                return piv;
            });
        }
        return multiplyOrFactor(comm, op, n, nb, seed, check, d, (a, b, c) -> {
            la.gemm(1.0, a, b, 0.0, c);
            comm.barrier();
        }, a -> {
            la.cholesky(a);
            comm.barrier();
        });
    }

    /** C := A B, the way a rank's algebra runs it. */
    private interface Gemm {
        void run(DistributedMatrix a, DistributedMatrix b, DistributedMatrix c);
    }

    private static Run multiplyOrFactor(Communicator comm, Op op, int n, int nb, long seed, boolean check,
                                        Distribution d, Gemm gemm, Consumer<DistributedMatrix> cholesky) {
        int rank = comm.rank();
        if (op == Op.gemm) {
            try (DistributedMatrix a = DistributedMatrix.random(DType.F64, n, n, nb, seed, d, rank);
                 DistributedMatrix b = DistributedMatrix.random(DType.F64, n, n, nb, seed + 1, d, rank);
                 DistributedMatrix c = DistributedMatrix.zeros(DType.F64, n, n, nb, d, rank)) {
                comm.barrier();
                long t0 = System.nanoTime();
                gemm.run(a, b, c); // TileAlgebra's ends with a barrier: the time is the whole job's
                long dt = System.nanoTime() - t0;
                double residual = check ? gemmResidual(comm, c, n, nb, seed) : Double.NaN;
                return new Run(dt / 1e9, flops(op, n) / dt, residual);
            }
        }
        try (DistributedMatrix a = DistributedMatrix.spd(DType.F64, n, nb, seed, d, rank)) {
            comm.barrier();
            long t0 = System.nanoTime();
            cholesky.accept(a);
            long dt = System.nanoTime() - t0;
            double residual = Double.NaN;
            if (check) {
                try (DistributedMatrix f = a.gather(comm, 0)) {
                    if (f != null) {
                        try (DistributedMatrix whole = DistributedMatrix.spd(DType.F64, n, nb, seed)) {
                            residual = Residuals.choleskyResidual(whole.toColumnMajor(), f.toColumnMajor(), n);
                        }
                    }
                }
            }
            return new Run(dt / 1e9, flops(op, n) / dt, residual);
        }
    }

    /**
     * LU or QR of a random matrix. Residuals on rank 0: ||P A x − L (U x)|| / (||A|| ||x|| n eps) for LU;
     * for QR, whose Q stays distributed, ||A^T (A x) − R^T (R x)|| / (||A||² ||x|| n eps), which holds for
     * the R of any orthogonal Q.
     */
    private static Run factor(Communicator comm, Op op, int n, int nb, long seed, boolean check, Distribution d,
                              Function<DistributedMatrix, int[]> factorize) {
        try (DistributedMatrix a = DistributedMatrix.random(DType.F64, n, n, nb, seed, d, comm.rank())) {
            comm.barrier();
            long t0 = System.nanoTime();
            int[] piv = factorize.apply(a); // LU's pivots, null for QR
            long dt = System.nanoTime() - t0;
            double residual = Double.NaN;
            if (check) {
                try (DistributedMatrix f = a.gather(comm, 0)) {
                    if (f != null) {
                        try (DistributedMatrix whole = DistributedMatrix.random(DType.F64, n, n, nb, seed)) {
                            double[] ad = whole.toColumnMajor();
                            double[] fd = f.toColumnMajor();
                            residual = op == Op.lu ? Residuals.luResidual(ad, fd, piv, n) : qrResidual(ad, fd, n);
                        }
                    }
                }
            }
            return new Run(dt / 1e9, flops(op, n) / dt, residual);
        }
    }

    /** A x = b for random A and one right-hand side b; on rank 0 ||A x − b|| / (||A|| ||x|| n eps). */
    private static Run solve(Communicator comm, TileAlgebra la, int n, int nb, long seed, boolean check,
                             Distribution d) {
        try (DistributedMatrix a = DistributedMatrix.random(DType.F64, n, n, nb, seed, d, comm.rank());
             DistributedMatrix b = DistributedMatrix.random(DType.F64, n, 1, nb, seed + 1, d, comm.rank())) {
            comm.barrier();
            long t0 = System.nanoTime();
            try (DistributedMatrix x = la.solve(a, b)) {
                long dt = System.nanoTime() - t0;
                double residual = Double.NaN;
                if (check) {
                    try (DistributedMatrix gx = x.gather(comm, 0)) {
                        if (gx != null) {
                            try (DistributedMatrix wa = DistributedMatrix.random(DType.F64, n, n, nb, seed);
                                 DistributedMatrix wb = DistributedMatrix.random(DType.F64, n, 1, nb, seed + 1)) {
                                residual = Residuals.solveResidual(wa.toColumnMajor(), gx.toColumnMajor(),
                                        wb.toColumnMajor(), n);
                            }
                        }
                    }
                }
                return new Run(dt / 1e9, flops(Op.solve, n) / dt, residual);
            }
        }
    }

    private static double qrResidual(double[] a, double[] f, int n) {
        double[] x = Residuals.vector(n);
        double[] atax = transposeMatvec(a, n, Residuals.matvec(a, n, n, x));
        double[] rx = Residuals.upperMatvec(f, n, x);
        double[] rtrx = new double[n];
        for (int j = 0; j < n; j++) {
            double s = 0;
            for (int i = 0; i <= j; i++) {
                s += f[j * n + i] * rx[i];
            }
            rtrx[j] = s;
        }
        double na = Residuals.norm(a);
        return Residuals.diff(atax, rtrx) / (na * na * Residuals.norm(x) * n * DType.F64.epsilon());
    }

    private static double[] transposeMatvec(double[] a, int n, double[] y) {
        double[] out = new double[n];
        for (int j = 0; j < n; j++) {
            double s = 0;
            for (int i = 0; i < n; i++) {
                s += a[j * n + i] * y[i];
            }
            out[j] = s;
        }
        return out;
    }

    /** ||C x − A (B x)|| / (||A|| ||B|| ||x|| n eps) on rank 0 after gathering C; NaN elsewhere. */
    private static double gemmResidual(Communicator comm, DistributedMatrix c, int n, int nb, long seed) {
        try (DistributedMatrix g = c.gather(comm, 0)) {
            if (g == null) {
                return Double.NaN;
            }
            double[] x = Residuals.vector(n);
            try (DistributedMatrix a = DistributedMatrix.random(DType.F64, n, n, nb, seed);
                 DistributedMatrix b = DistributedMatrix.random(DType.F64, n, n, nb, seed + 1)) {
                double[] abx = matvec(a, matvec(b, x));
                return Residuals.diff(matvec(g, x), abx)
                        / (a.normFrobenius() * b.normFrobenius() * Residuals.norm(x) * n * DType.F64.epsilon());
            }
        }
    }

    /** y = M x over the tiles of a whole matrix (no n² heap copy). */
    private static double[] matvec(DistributedMatrix m, double[] x) {
        double[] y = new double[m.rows()];
        int nb = m.tileSize();
        for (int i = 0; i < m.mt(); i++) {
            for (int j = 0; j < m.nt(); j++) {
                Tile t = m.tile(i, j);
                for (int c = 0; c < t.cols(); c++) {
                    double xc = x[j * nb + c];
                    for (int r = 0; r < t.rows(); r++) {
                        y[i * nb + r] += t.getFlat(c * t.ld() + r) * xc;
                    }
                }
            }
        }
        return y;
    }

    /** A case of the two-process benchmark: its name, operation and strategy (null: the default). */
    /** A bench case: {@code layers} > 1 runs 2.5D GEMM with A, B and C replicated over that many layers. */
    record Case(String name, Op op, TileAlgebra.Strategy strategy, int layers) {
        Distribution distribution(int ranks, int n, int nb) {
            return layers > 1 ? Distribution.replicated25d(ranks, layers) : LinalgRank.distribution(op, ranks, n, nb);
        }
    }

    static List<Case> benchCases() {
        List<Case> cases = new ArrayList<>();
        cases.add(new Case("gemm_4096_f64_2proc", Op.gemm, null, 1));
        cases.add(new Case("cholesky_4096_f64_2proc", Op.cholesky, null, 1));
        cases.add(new Case("gemm_4096_f64_2proc_p2p", Op.gemm, TileAlgebra.Strategy.POINT_TO_POINT, 1));
        cases.add(new Case("gemm_4096_f64_2proc_collective", Op.gemm, TileAlgebra.Strategy.COLLECTIVE, 1));
        cases.add(new Case("gemm_4096_f64_2proc_rma", Op.gemm, TileAlgebra.Strategy.RMA, 1));
        // 2.5D: each rank holds all of A and B and computes half of k; the layers' C copies are then summed.
        cases.add(new Case("gemm_4096_f64_2proc_25d", Op.gemm, null, 2));
        return cases;
    }

    /**
     * Bench rank program: {@code LinalgRank N TILE[,TILE...] REPS}. For every tile size: one warm-up run of
     * every case, then REPS rounds of one timed run of every case (interleaved, so that a slow spell of a
     * shared machine falls on all cases alike), each with its residual checked (a failing residual ends the
     * job with an error); rank 0 prints {@code LINALG|case|gflops|tile|worst residual} with the best tile.
     */
    public static void main(String[] args) {
        if (args.length != 3) {
            throw new IllegalArgumentException("usage: LinalgRank N TILE[,TILE...] REPS, got " + String.join(" ", args));
        }
        int n = Integer.parseInt(args[0]);
        String[] tileList = args[1].split(",");
        int reps = Integer.parseInt(args[2]);
        try (Communicator comm = Communicator.connect(new Communicator.Context())) {
            List<Case> cases = benchCases();
            double[] best = new double[cases.size()];
            int[] bestTile = new int[cases.size()];
            double[] worstResidual = new double[cases.size()];
            for (String ts : tileList) {
                int nb = Integer.parseInt(ts.trim());
                // Run r of every case before run r + 1 of any: a slow spell of the machine falls on all cases alike.
                for (int r = 0; r <= reps; r++) {
                    for (int k = 0; k < cases.size(); k++) {
                        Case c = cases.get(k);
                        TileAlgebra.Context ctx = new TileAlgebra.Context().workers(1).communicator(comm);
                        if (c.strategy() != null) {
                            ctx.strategy(c.strategy());
                        }
                        Run run;
                        try (TileAlgebra la = TileAlgebra.launch(ctx)) {
                            run = run(comm, la, c.op(), n, nb, 2024, true, c.distribution(comm.size(), n, nb));
                        }
                        if (comm.rank() == 0) {
                            if (!(run.residual() < 10)) {
                                throw new IllegalStateException(c.name() + " tile " + nb + ": scaled residual "
                                        + run.residual() + " exceeds 10; the result is wrong, the timing is void");
                            }
                            worstResidual[k] = Math.max(worstResidual[k], run.residual());
                            System.out.printf(Locale.ROOT, "%s tile %d run %d: %.3f s, %.1f GFLOP/s, residual %.3g%n",
                                    c.name(), nb, r, run.seconds(), run.gflops(), run.residual());
                        }
                        if (r > 0 && run.gflops() > best[k]) {
                            best[k] = run.gflops();
                            bestTile[k] = nb;
                        }
                    }
                }
            }
            if (comm.rank() == 0) {
                for (int k = 0; k < cases.size(); k++) {
                    System.out.println(PREFIX + cases.get(k).name() + "|" + best[k] + "|" + bestTile[k] + "|"
                            + worstResidual[k]);
                }
            }
            comm.barrier();
        }
    }
}
