package dev.poniard.linalg;

import static dev.poniard.linalg.tile.TileKernels.Diag;
import static dev.poniard.linalg.tile.TileKernels.Side;
import static dev.poniard.linalg.tile.TileKernels.Trans;
import static dev.poniard.linalg.tile.TileKernels.Uplo;

import dev.poniard.linalg.dist.Distribution;
import dev.poniard.linalg.dist.TileOwner;
import dev.poniard.linalg.tile.Tile;
import dev.poniard.linalg.tile.TileCopy;
import dev.poniard.linalg.tile.TileKernels;
import dev.poniard.scheduler.DataDeps;
import dev.poniard.scheduler.Scheduler;
import dev.poniard.scheduler.TaskFailedException;
import dev.poniard.scheduler.TaskOptions;
import dev.poniard.scheduler.comm.Communicator;
import dev.poniard.scheduler.comm.ReduceOp;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.TreeSet;
import java.util.function.Consumer;

/**
 * Tile linear algebra as data-dependency DAGs on a {@link Scheduler}: every operation spawns one task
 * per tile kernel in a {@link DataDeps} region, declaring which tiles it reads and writes, and the region
 * orders them, gives them critical-path priorities (so the panel of the next step runs ahead of the
 * trailing update — look-ahead without hand-written lookahead code) and waits.
 *
 * <pre>{@code
 * try (TileAlgebra la = TileAlgebra.launch(new TileAlgebra.Context().workers(2));
 *      DistributedMatrix a = DistributedMatrix.spd(DType.F64, 1000, 256, 42)) {
 *     la.cholesky(a); // lower triangle of a now holds L
 * }
 * }</pre>
 *
 * <p><b>Implementation overview.</b> The algorithms are the right-looking tile algorithms of PLASMA
 * (Buttari, Langou, Kurzak, Dongarra 2009): Cholesky as POTRF/TRSM/SYRK/GEMM; LU with partial pivoting
 * where each panel (a whole tile column below the diagonal) is one LAPACK getrf task on a contiguous
 * copy, followed per trailing tile column by one swap+TRSM task and per tile by GEMM — pivots stay exact
 * (as LAPACK) rather than tile-local; QR with the flat-tree TS kernels GEQRT/GEMQRT/TPQRT/TPMQRT, where
 * the reflectors of each diagonal tile are copied out so that applying them to the right does not wait
 * for the TPQRTs that update the triangle. Failures (not positive definite, singular) surface as
 * {@link NotPositiveDefiniteException} / {@link SingularMatrixException} after every task of the
 * region has settled, so nothing is left running.
 *
 * <p><b>Across ranks.</b> With a {@link Context#communicator} and matrices distributed over its ranks
 * (each rank holding its own tiles, see {@link DistributedMatrix#zeros(DType, int, int, int,
 * dev.poniard.linalg.dist.Distribution, int)}), {@link #gemm} and {@link #cholesky} run SPMD: every rank
 * calls the same operations in the same order, builds the same DAG, runs the kernels whose output tile it
 * owns and exchanges the tiles they read through the communicator ({@link SpmdTasks}), point to point or,
 * with {@link Strategy#COLLECTIVE}, by broadcasts to each group of consumers. A failure on one rank (say a
 * matrix that is not positive definite) aborts the communicator and fails the operation on every rank
 * with the same exception. The solves ({@link #triangularSolve}, {@link #solve}, {@link #solveSpd},
 * {@link #leastSquares}, {@link #applyQ}) run the same way on any distribution of their operands, and so do
 * {@link #lu} and {@link #qr}, which factor each panel on one rank: on distributions that split a tile column
 * over ranks they factor a copy by columns and copy the result back ({@link #redistribute}).
 *
 * <p><b>2.5D GEMM.</b> When C's distribution replicates ({@link Distribution#replicated25d} with c > 1:
 * c layers of a p x q grid, every rank holding its layer's copy of C), {@link #gemm} runs the 2.5D algorithm
 * of Solomonik and Demmel (2011) instead of SUMMA on the primaries: layer l computes
 * alpha op(A) op(B) over its share of the k tile range (the ceiling of l kt / c up to that of (l+1) kt / c,
 * so layer 0 never has the smaller share) into its own copies of C, layer 0 starting from beta C and the
 * others from zero; then every primary C tile adds the other layers' partial products in layer order
 * 1, 2, ..., c-1, so the result does not depend on timing and repeats bit for bit, and the primaries' final
 * values are copied back down the layers. A and B may be on any distribution over the same ranks: a layer
 * reads a replicated operand from its own layer (layer l mod the operand's layers), any other from the
 * primary owner, moved by the {@link Context#strategy} as in SUMMA. With A and B replicated, a rank of the
 * P = p q c ranks moves about n²/sqrt(cP) words of A and B (SUMMA on a sqrt(P) x sqrt(P) grid of the same
 * ranks: n²/sqrt(P)) plus its share of C twice (partial sum up, result down), for c copies of every matrix.
 * Where a rank holds several layers' copies of a tile (p q below devicesPerRank) gemm is plain SUMMA on the
 * primaries. C must not be A or B on a replicated distribution: its layers' copies hold partial sums until
 * the end.
 *
 * <pre>{@code
 * Distribution d = Distribution.replicated25d(4, 2);                   // 4 ranks: 2 layers of a 1 x 2 grid
 * try (DistributedMatrix a = DistributedMatrix.random(DType.F64, n, n, 256, 1, d, comm.rank());
 *      DistributedMatrix b = DistributedMatrix.random(DType.F64, n, n, 256, 2, d, comm.rank());
 *      DistributedMatrix c = DistributedMatrix.zeros(DType.F64, n, n, 256, d, comm.rank())) {
 *     la.gemm(1.0, a, b, 0.0, c);                                      // 2.5D: C's distribution decides
 * }
 * }</pre>
 *
 * <p>Every operation that writes a matrix on a replicating distribution ends by copying each primary it
 * changed to the tile's other layers, so the copies never go stale.
 *
 * <p>OpenBLAS is held to one thread on each worker through the scheduler's {@code workerStart} hook.
 * With a scheduler passed in by the caller, the caller owns that setting.
 */
public final class TileAlgebra implements AutoCloseable {
    /** Throughput assumed for cost hints until the scheduler's cost model has measured a kernel. */
    private static final double HINT_FLOPS_PER_NS = 20.0;
    /** Scheduler priority of panel kernels in SPMD runs (below transfers, above the trailing update's 0). */
    private static final int PANEL_PRIORITY = 1;

    /** How tiles move between ranks. */
    public enum Strategy {
        /** One message from the owner to each rank that reads a tile version, sent on first use. */
        POINT_TO_POINT,
        /** One broadcast per tile version to the group of ranks that read it (SUMMA's row/column broadcasts). */
        COLLECTIVE,
        /**
         * One-sided gets from windows where each rank exposes its tiles of the operands an operation only
         * reads (GEMM's A and B, a solve's triangle, applyQ's reflectors); tiles the operation writes (all
         * of a factorization's) move point to point.
         */
        RMA
    }

    /**
     * Configuration. Defaults: {@code poniard.workers} or all cores, QR inner block {@code poniard.linalg.ib}
     * (32), no trace.
     */
    public static final class Context {
        private int workers = Integer.getInteger("poniard.workers", Runtime.getRuntime().availableProcessors());
        private int innerBlock = Integer.getInteger("poniard.linalg.ib", 32);
        private boolean trace;
        private Scheduler scheduler;
        private Communicator communicator;
        private Strategy strategy = Strategy.valueOf(System.getProperty("poniard.linalg.strategy", "POINT_TO_POINT"));

        public Communicator communicator() {
            return communicator;
        }

        /**
         * The ranks of an SPMD run (null: one process). Matrices distributed over more than one rank need
         * it, with as many ranks as their distribution; the caller keeps ownership and closes it.
         */
        public Context communicator(Communicator value) {
            communicator = value;
            return this;
        }

        public Strategy strategy() {
            return strategy;
        }

        /** How tiles move between ranks (default {@code poniard.linalg.strategy} or point to point). */
        public Context strategy(Strategy value) {
            strategy = value;
            return this;
        }

        public int workers() {
            return workers;
        }

        /** Worker threads of the scheduler this component launches (ignored with {@link #scheduler(Scheduler)}). */
        public Context workers(int value) {
            workers = value;
            return this;
        }

        public int innerBlock() {
            return innerBlock;
        }

        /** Inner block size {@code ib} of the QR kernels (LAPACK's nb of dgeqrt/dtpqrt). */
        public Context innerBlock(int value) {
            innerBlock = value;
            return this;
        }

        public boolean trace() {
            return trace;
        }

        /** Records a trace of every task ({@link #scheduler()}{@code .trace()}). */
        public Context trace(boolean value) {
            trace = value;
            return this;
        }

        public Scheduler scheduler() {
            return scheduler;
        }

        /** Runs on an existing scheduler, which {@link TileAlgebra#close()} then leaves open. */
        public Context scheduler(Scheduler value) {
            scheduler = value;
            return this;
        }

        public Context conclude() {
            if (workers < 1) {
                throw new IllegalArgumentException("workers must be >= 1, got " + workers);
            }
            if (innerBlock < 1) {
                throw new IllegalArgumentException("innerBlock must be >= 1, got " + innerBlock);
            }
            if (strategy == null) {
                throw new IllegalArgumentException("strategy must be one of " + Arrays.toString(Strategy.values()));
            }
            return this;
        }
    }

    private final Context ctx;
    private final Scheduler scheduler;
    private final boolean ownsScheduler;
    /** Tag counter and sub-communicators of SPMD runs; null without a communicator. */
    private final SpmdTasks.Shared spmd;

    private TileAlgebra(Context ctx) {
        this.ctx = ctx;
        this.spmd = ctx.communicator() == null ? null : new SpmdTasks.Shared(ctx.communicator());
        if (ctx.scheduler() != null) {
            scheduler = ctx.scheduler();
            ownsScheduler = false;
        } else {
            scheduler = Scheduler.launch(new Scheduler.Context().name("linalg").workers(ctx.workers())
                    .trace(ctx.trace()).workerStart(TileKernels.singleThreaded()));
            ownsScheduler = true;
        }
    }

    public static TileAlgebra launch(Context ctx) {
        return new TileAlgebra(ctx.conclude());
    }

    public Scheduler scheduler() {
        return scheduler;
    }

    public Context context() {
        return ctx;
    }

    @Override
    public void close() {
        if (spmd != null) {
            spmd.close();
        }
        if (ownsScheduler) {
            scheduler.close();
        }
    }

    // ------------------------------------------------------------------------------------------------
    // GEMM

    /** C := alpha A B + beta C. */
    public void gemm(double alpha, DistributedMatrix a, DistributedMatrix b, double beta, DistributedMatrix c) {
        gemm(Trans.N, Trans.N, alpha, a, b, beta, c);
    }

    /** C := alpha op(A) op(B) + beta C, all three with the same tile size. */
    public void gemm(Trans ta, Trans tb, double alpha, DistributedMatrix a, DistributedMatrix b, double beta,
                     DistributedMatrix c) {
        int m = ta == Trans.N ? a.rows() : a.cols();
        int k = ta == Trans.N ? a.cols() : a.rows();
        int kb = tb == Trans.N ? b.rows() : b.cols();
        int n = tb == Trans.N ? b.cols() : b.rows();
        if (k != kb || c.rows() != m || c.cols() != n) {
            throw new IllegalArgumentException("gemm: op(A) is " + m + "x" + k + ", op(B) is " + kb + "x" + n + ", C is "
                    + c.rows() + "x" + c.cols() + "; need op(A) m x k, op(B) k x n, C m x n");
        }
        sameTiling("gemm", a, b, c);
        int nb = c.tileSize();
        int kt = (k + nb - 1) / nb;
        Ops ops = new Ops(c);
        if (layered(c)) {
            if (a == c || b == c) {
                throw new IllegalArgumentException("gemm: C (" + c + ") is also " + (a == c ? "A" : "B")
                        + "; on a replicated (2.5D) distribution C's copies hold partial sums while A and B are read,"
                        + " so pass a copy");
            }
            gemm25d(ta, tb, alpha, a, b, beta, c, kt, ops);
            return;
        }
        runTiles("gemm", ops, tasks -> {
            if (a != c && b != c) {
                tasks.expose(a, b);
            }
            for (int l = 0; l < kt; l++) {
                summaStep(tasks, ops, ta, tb, alpha, a.asTiles(), b.asTiles(), c.asTiles(), l, l == 0 ? beta : 1.0);
            }
        }, a, b, c);
    }

    /**
     * Step l of SUMMA on tile sources a, b, c (a matrix's primaries or one layer's copies): tile column l of op(A)
     * and tile row l of op(B) go to the ranks owning the C tiles that read them, then every C tile gets
     * C := alpha op(A)(:, l) op(B)(l, :) + betaStep C.
     */
    private static void summaStep(TileTasks tasks, Ops ops, Trans ta, Trans tb, double alpha, TileTasks.Tiles a,
                                  TileTasks.Tiles b, TileTasks.Tiles c, int l, double betaStep) {
        TileTasks.Ref[] rowOfC = new TileTasks.Ref[c.nt()];
        TileTasks.Ref[] colOfC = new TileTasks.Ref[c.mt()];
        for (int i = 0; i < c.mt(); i++) {
            for (int j = 0; j < c.nt(); j++) {
                rowOfC[j] = new TileTasks.Ref(c, i, j);
            }
            tasks.share(ta == Trans.N ? new TileTasks.Ref(a, i, l) : new TileTasks.Ref(a, l, i), rowOfC);
        }
        for (int j = 0; j < c.nt(); j++) {
            for (int i = 0; i < c.mt(); i++) {
                colOfC[i] = new TileTasks.Ref(c, i, j);
            }
            tasks.share(tb == Trans.N ? new TileTasks.Ref(b, l, j) : new TileTasks.Ref(b, j, l), colOfC);
        }
        for (int i = 0; i < c.mt(); i++) {
            for (int j = 0; j < c.nt(); j++) {
                TileTasks.Ref x = ta == Trans.N ? new TileTasks.Ref(a, i, l) : new TileTasks.Ref(a, l, i);
                TileTasks.Ref y = tb == Trans.N ? new TileTasks.Ref(b, l, j) : new TileTasks.Ref(b, j, l);
                tasks.kernel(ops.gemm, (out, in) -> TileKernels.gemm(ta, tb, alpha, in[0], in[1], betaStep, out),
                        new TileTasks.Ref(c, i, j), x, y);
            }
        }
    }

    /**
     * Whether C's distribution calls for 2.5D: several layers across ranks, with the layers' copies of every
     * tile on distinct ranks (else a rank would hold one tile for two layers' partial sums).
     */
    private static boolean layered(DistributedMatrix c) {
        Distribution d = c.distribution();
        if (d.layers() == 1 || c.isWhole()) {
            return false;
        }
        for (int j = 0; j < c.nt(); j++) {
            for (int i = 0; i < c.mt(); i++) {
                for (int l = 1; l < d.layers(); l++) {
                    for (int below = 0; below < l; below++) {
                        if (d.replica(i, j, l).rank() == d.replica(i, j, below).rank()) {
                            return false;
                        }
                    }
                }
            }
        }
        return true;
    }

    /** 2.5D GEMM (see the class comment): per-layer SUMMA over a share of k, then a fixed-order reduction. */
    private void gemm25d(Trans ta, Trans tb, double alpha, DistributedMatrix a, DistributedMatrix b, double beta,
                         DistributedMatrix c, int kt, Ops ops) {
        int layers = c.distribution().layers();
        int[] first = new int[layers + 1];
        for (int l = 0; l <= layers; l++) {
            first[l] = (int) (((long) l * kt + layers - 1) / layers);
        }
        runTiles("gemm", ops, tasks -> {
            tasks.expose(a, b);
            // Steps of all layers interleaved, so that every layer's first transfers come first in tag order.
            for (int s = 0; s < first[1] - first[0]; s++) {
                for (int l = 0; l < layers; l++) {
                    int kk = first[l] + s;
                    if (kk < first[l + 1]) {
                        // Layer 0 starts from beta C; the other layers' copies start from zero (beta 0 ignores them).
                        summaStep(tasks, ops, ta, tb, alpha, a.layer(l), b.layer(l), c.layer(l), kk,
                                s > 0 ? 1.0 : l == 0 ? beta : 0.0);
                    }
                }
            }
            // The primaries add the layers' partial sums in layer order, whatever order they arrive in.
            for (int j = 0; j < c.nt(); j++) {
                for (int i = 0; i < c.mt(); i++) {
                    TileTasks.Ref[] partials = new TileTasks.Ref[layers - 1];
                    for (int l = 1; l < layers; l++) {
                        partials[l - 1] = new TileTasks.Ref(c.layer(l), i, j);
                    }
                    TileTasks.Ref cij = new TileTasks.Ref(c, i, j);
                    for (int l = 1; l < layers; l++) {
                        if (first[l] < first[l + 1]) {
                            tasks.share(partials[l - 1], cij);
                            tasks.kernel(ops.add, (out, in) -> TileKernels.add(in[0], out), cij, partials[l - 1]);
                        }
                    }
                }
            }
        }, a, b, c);
    }

    // ------------------------------------------------------------------------------------------------
    // Cholesky

    /**
     * Cholesky factorization A = L L^T in place: the lower triangle of {@code a} becomes L, the strict upper
     * triangle is left as it was (only the lower triangle of A is read).
     *
     * @throws NotPositiveDefiniteException naming the column and diagonal tile where it fails
     */
    public DistributedMatrix cholesky(DistributedMatrix a) {
        square("cholesky", a);
        int nt = a.nt();
        Ops ops = new Ops(a);
        // Across ranks the panel (POTRF, TRSM) feeds the other ranks' updates, which this rank's critical-path
        // ranks cannot see: a fixed priority runs it ahead of the local trailing update (look-ahead).
        TaskOptions potrf = a.isWhole() ? ops.potrf : ops.potrf.priority(PANEL_PRIORITY);
        TaskOptions trsm = a.isWhole() ? ops.trsm : ops.trsm.priority(PANEL_PRIORITY);
        runTiles("cholesky", ops, tasks -> {
            for (int k = 0; k < nt; k++) {
                int kk = k;
                TileTasks.Ref akk = new TileTasks.Ref(a, k, k);
                tasks.kernel(potrf, (out, in) -> {
                    int info = TileKernels.potrf(Uplo.LOWER, out);
                    if (info > 0) {
                        throw new NotPositiveDefiniteException(kk, kk * a.tileSize() + info - 1);
                    }
                }, akk);
                TileTasks.Ref[] below = new TileTasks.Ref[nt - k - 1];
                for (int i = k + 1; i < nt; i++) {
                    below[i - k - 1] = new TileTasks.Ref(a, i, k);
                }
                tasks.share(akk, below);
                for (int i = k + 1; i < nt; i++) {
                    tasks.kernel(trsm, (out, in) -> TileKernels.trsm(Side.RIGHT, Uplo.LOWER, Trans.T, Diag.NON_UNIT,
                            1.0, in[0], out), below[i - k - 1], akk);
                    // A(i, k) updates row i left of the diagonal (as the first operand) and column i below it.
                    TileTasks.Ref[] readers = new TileTasks.Ref[nt - k - 1];
                    for (int j = k + 1; j < nt; j++) {
                        readers[j - k - 1] = j <= i ? new TileTasks.Ref(a, i, j) : new TileTasks.Ref(a, j, i);
                    }
                    tasks.share(below[i - k - 1], readers);
                }
                for (int j = k + 1; j < nt; j++) {
                    TileTasks.Ref ajk = new TileTasks.Ref(a, j, k);
                    tasks.kernel(ops.syrk, (out, in) -> TileKernels.syrk(Uplo.LOWER, Trans.N, -1.0, in[0], 1.0, out),
                            new TileTasks.Ref(a, j, j), ajk);
                    for (int i = j + 1; i < nt; i++) {
                        tasks.kernel(ops.gemm, (out, in) -> TileKernels.gemm(Trans.N, Trans.T, -1.0, in[0], in[1], 1.0, out),
                                new TileTasks.Ref(a, i, j), new TileTasks.Ref(a, i, k), ajk);
                    }
                }
            }
        }, a);
        return a;
    }

    /** Solves A X = B for SPD A: factors a copy of A and returns X (A and B unchanged). */
    public DistributedMatrix solveSpd(DistributedMatrix a, DistributedMatrix b) {
        square("solveSpd", a);
        checkRhs("solveSpd", a, b);
        try (DistributedMatrix l = a.copy()) {
            cholesky(l);
            return choleskySolve(l, b);
        }
    }

    /** X with L L^T X = B, L from {@link #cholesky}; returns a new matrix. */
    public DistributedMatrix choleskySolve(DistributedMatrix l, DistributedMatrix b) {
        checkRhs("choleskySolve", l, b);
        DistributedMatrix x = b.copy();
        triangularSolve(Uplo.LOWER, Trans.N, Diag.NON_UNIT, 1.0, l, x);
        triangularSolve(Uplo.LOWER, Trans.T, Diag.NON_UNIT, 1.0, l, x);
        return x;
    }

    // ------------------------------------------------------------------------------------------------
    // Triangular solve

    /** B := alpha op(A)^-1 B in place, for the {@code uplo} triangle of square A (left side). */
    public void triangularSolve(Uplo uplo, Trans trans, Diag diag, double alpha, DistributedMatrix a, DistributedMatrix b) {
        square("triangularSolve", a);
        checkRhs("triangularSolve", a, b);
        Ops ops = new Ops(b);
        runTiles("triangularSolve", ops, tasks -> {
            if (a != b) {
                tasks.expose(a);
            }
            trsmLeft(tasks, ops, uplo, trans, diag, alpha, a, a.nt(), b);
        }, a, b);
    }

    /**
     * Adds the tile forward or backward substitution of op(A) X = alpha B over the first kt tile rows of A
     * and all of B. A diagonal tile of A may be taller than B's tile row (R of a tall QR): its leading square
     * is the triangle.
     */
    private static void trsmLeft(TileTasks tasks, Ops ops, Uplo uplo, Trans trans, Diag diag, double alpha,
                                 DistributedMatrix a, int kt, DistributedMatrix b) {
        boolean forward = (uplo == Uplo.LOWER) == (trans == Trans.N);
        // As Cholesky's panel: across ranks the diagonal solves feed other ranks' updates.
        TaskOptions trsm = b.isWhole() ? ops.trsm : ops.trsm.priority(PANEL_PRIORITY);
        TileTasks.Ref[] rowOfB = new TileTasks.Ref[b.nt()];
        for (int s = 0; s < kt; s++) {
            int k = forward ? s : kt - 1 - s;
            int from = forward ? k + 1 : 0;
            int to = forward ? kt : k;
            TileTasks.Ref akk = new TileTasks.Ref(a, k, k);
            for (int j = 0; j < b.nt(); j++) {
                rowOfB[j] = new TileTasks.Ref(b, k, j);
            }
            tasks.share(akk, rowOfB);
            for (int i = from; i < to; i++) {
                for (int j = 0; j < b.nt(); j++) {
                    rowOfB[j] = new TileTasks.Ref(b, i, j);
                }
                tasks.share(trans == Trans.N ? new TileTasks.Ref(a, i, k) : new TileTasks.Ref(a, k, i), rowOfB);
            }
            double scale = s == 0 ? alpha : 1.0;
            for (int j = 0; j < b.nt(); j++) {
                TileTasks.Ref bkj = new TileTasks.Ref(b, k, j);
                tasks.kernel(trsm, (out, in) -> triangleSolve(uplo, trans, diag, scale, in[0], out), bkj, akk);
                TileTasks.Ref[] below = new TileTasks.Ref[to - from];
                for (int i = from; i < to; i++) {
                    below[i - from] = new TileTasks.Ref(b, i, j);
                }
                tasks.share(bkj, below);
                for (int i = from; i < to; i++) {
                    // op(A)(i, k) is A(i, k) or A(k, i)^T; the first update also applies alpha to B(i, j).
                    TileTasks.Ref aik = trans == Trans.N ? new TileTasks.Ref(a, i, k) : new TileTasks.Ref(a, k, i);
                    tasks.kernel(ops.gemm, (out, in) -> TileKernels.gemm(trans, Trans.N, -1.0, in[0], in[1], scale, out),
                            below[i - from], aik, bkj);
                }
            }
        }
    }

    /** B := alpha op(T)^-1 B for the triangle T of {@code akk}, or of its leading square when akk is larger than B's rows. */
    private static void triangleSolve(Uplo uplo, Trans trans, Diag diag, double alpha, Tile akk, Tile b) {
        if (akk.rows() == b.rows() && akk.cols() == b.rows()) {
            TileKernels.trsm(Side.LEFT, uplo, trans, diag, alpha, akk, b);
            return;
        }
        try (Tile t = TileCopy.leading(akk, b.rows(), b.rows())) {
            TileKernels.trsm(Side.LEFT, uplo, trans, diag, alpha, t, b);
        }
    }

    // ------------------------------------------------------------------------------------------------
    // LU

    /**
     * LU factorization with partial pivoting in place, P A = L U as LAPACK's getrf: U in the upper
     * triangle, the unit lower L below it, and the row interchanges in the result's pivots.
     *
     * <p>Across ranks any distribution works, and every rank gets all the pivots. Each panel is one getrf
     * task on one rank (exact partial pivoting over the whole column), so when {@code a}'s distribution splits
     * a tile column over ranks (P x Q grids with P > 1, 1D or block-cyclic by rows) the factorization runs on
     * a copy by columns ({@link #redistribute}) and the factored tiles are copied back: two redistributions,
     * O(mn) data moved against O(mn min(m, n)) flops, and a second copy of A's tiles in memory meanwhile.
     * A failure while factoring (a singular matrix) then leaves {@code a} as it was.
     *
     * @throws SingularMatrixException naming the first column with an exactly zero pivot
     */
    public LuFactorization lu(DistributedMatrix a) {
        if (!a.isWhole()) {
            if (splitColumn(a.distribution(), a) == null) {
                return luAcrossRanks(a);
            }
            checkRanks("lu", a); // before the copy, so that misuse is named as lu's
            try (DistributedMatrix c = byColumns(a)) {
                int[] piv = luAcrossRanks(c).pivots();
                copyTiles("lu", c, a);
                return new LuFactorization(a, piv);
            }
        }
        int nb = a.tileSize();
        int steps = Math.min(a.mt(), a.nt());
        int[] piv = new int[Math.min(a.rows(), a.cols())];
        Ops ops = new Ops(a);
        run(region -> {
            for (int k = 0; k < steps; k++) {
                int kk = k;
                int w = a.tileCols(k);
                int r0 = k * nb;
                int pm = a.rows() - r0;
                Object[] panel = new Object[a.mt() - k];
                for (int i = k; i < a.mt(); i++) {
                    panel[i - k] = DataDeps.inout(a.tile(i, k));
                }
                region.spawn(ops.getrf, args -> {
                    factorPanel(a, kk, w, pm, piv);
                    return null;
                }, panel);
                // Left swaps: this step's interchanges on the finished columns, off the critical path.
                for (int j = 0; j < k; j++) {
                    int jj = j;
                    region.spawn(ops.laswp, args -> {
                        applyPivots(a, piv, kk, jj);
                        return null;
                    }, columnFrom(a, k, j, DataDeps.in(a.tile(k, k))));
                }
                for (int j = k + 1; j < a.nt(); j++) {
                    int jj = j;
                    region.spawn(ops.trsm, args -> {
                        applyPivots(a, piv, kk, jj);
                        // A wide last panel: L is the leading square of the diagonal tile.
                        triangleSolve(Uplo.LOWER, Trans.N, Diag.UNIT, 1.0, a.tile(kk, kk), a.tile(kk, jj));
                        return null;
                    }, columnFrom(a, k, j, DataDeps.in(a.tile(k, k))));
                    for (int i = k + 1; i < a.mt(); i++) {
                        region.spawn(ops.gemm, args -> {
                            TileKernels.gemm(Trans.N, Trans.N, -1.0, (Tile) args[0], (Tile) args[1], 1.0, (Tile) args[2]);
                            return null;
                        }, DataDeps.in(a.tile(i, k)), DataDeps.in(a.tile(k, j)), DataDeps.inout(a.tile(i, j)));
                    }
                }
            }
        });
        return new LuFactorization(a, piv);
    }

    /**
     * LU across ranks, for distributions that keep every tile column on one rank (1 x Q grids, 1D by
     * columns): the panel getrf runs on the column's owner, its pivots travel as a one-column "pivot
     * tile" (global row numbers as doubles, exact below 2^53) that the owners of the other columns fetch
     * like any tile, and every row swap stays inside one tile column, so inside one rank.
     */
    private LuFactorization luAcrossRanks(DistributedMatrix a) {
        Distribution d = a.distribution();
        int nb = a.tileSize();
        int steps = Math.min(a.mt(), a.nt());
        int minDim = Math.min(a.rows(), a.cols());
        Ops ops = new Ops(a);
        TaskOptions getrf = ops.getrf.priority(PANEL_PRIORITY);
        TaskOptions trsm = ops.trsm.priority(PANEL_PRIORITY);
        Distribution pivotOwners = new Distribution() {
            @Override
            public TileOwner owner(int i, int j) {
                return d.owner(0, i); // pivot tile k lives with panel k
            }

            @Override
            public int ranks() {
                return d.ranks();
            }

            @Override
            public int devicesPerRank() {
                return d.devicesPerRank();
            }

            @Override
            public String toString() {
                return "pivots of " + d;
            }
        };
        try (DistributedMatrix pivots = DistributedMatrix.zeros(DType.F64, minDim, 1, nb, pivotOwners, a.localRank())) {
            runTiles("lu", ops, tasks -> {
                for (int k = 0; k < steps; k++) {
                    int kk = k;
                    TileTasks.Ref pk = new TileTasks.Ref(pivots, k, 0);
                    TileTasks.Ref[] panel = new TileTasks.Ref[a.mt() - k + 1];
                    for (int i = k; i < a.mt(); i++) {
                        panel[i - k] = new TileTasks.Ref(a, i, k);
                    }
                    panel[a.mt() - k] = pk;
                    tasks.kernel(getrf, (out, in) -> factorPanel(a, kk, out), panel);
                    for (int j = 0; j < a.nt(); j++) {
                        if (j == k) {
                            continue;
                        }
                        TileTasks.Ref[] column = new TileTasks.Ref[a.mt() - k];
                        for (int i = k; i < a.mt(); i++) {
                            column[i - k] = new TileTasks.Ref(a, i, j);
                        }
                        if (j < k) {
                            // Left swaps: this step's interchanges on the finished columns.
                            tasks.kernel(ops.laswp, (out, in) -> swapRows(nb, kk, in[0], out), column, pk);
                        } else {
                            tasks.kernel(trsm, (out, in) -> {
                                swapRows(nb, kk, in[0], out);
                                triangleSolve(Uplo.LOWER, Trans.N, Diag.UNIT, 1.0, in[1], out[0]);
                            }, column, pk, new TileTasks.Ref(a, k, k));
                        }
                    }
                    for (int j = k + 1; j < a.nt(); j++) {
                        for (int i = k + 1; i < a.mt(); i++) {
                            tasks.kernel(ops.gemm, (out, in) -> TileKernels.gemm(Trans.N, Trans.N, -1.0, in[0], in[1], 1.0, out),
                                    new TileTasks.Ref(a, i, j), new TileTasks.Ref(a, i, k), new TileTasks.Ref(a, k, j));
                        }
                    }
                }
            }, a);
            // Every rank learns every pivot: panel k's owner broadcasts its pivot tile (in step order).
            int[] piv = new int[minDim];
            Communicator comm = spmd.comm;
            for (int k = 0; k < steps; k++) {
                int rows = pivots.tileRows(k);
                double[] seg = new double[rows];
                int root = pivotOwners.owner(k, 0).rank();
                if (root == comm.rank()) {
                    pivots.tile(k, 0).f64Buffer().get(0, seg, 0, rows);
                }
                comm.broadcast(seg, root);
                for (int r = 0; r < rows; r++) {
                    piv[k * nb + r] = (int) seg[r];
                }
            }
            return new LuFactorization(a, piv);
        }
    }

    /** The first tile (i, j) whose owner differs from that of (0, j), or null if every tile column is on one rank. */
    private static int[] splitColumn(Distribution d, DistributedMatrix a) {
        for (int j = 0; j < a.nt(); j++) {
            for (int i = 1; i < a.mt(); i++) {
                if (d.owner(i, j).rank() != d.owner(0, j).rank()) {
                    return new int[] {i, j};
                }
            }
        }
        return null;
    }

    /**
     * getrf of panel k from its tiles (rows k*nb.., the last entry of {@code out} is the pivot tile, which
     * receives the global pivot rows).
     */
    private static void factorPanel(DistributedMatrix a, int k, Tile[] out) {
        int nb = a.tileSize();
        int w = a.tileCols(k);
        int pm = a.rows() - k * nb;
        int tiles = out.length - 1;
        try (Tile p = Tile.allocate(a.type(), pm, w)) {
            for (int t = 0; t < tiles; t++) {
                TileCopy.block(out[t], 0, 0, p, t * nb, 0, out[t].rows(), w);
            }
            int[] ipiv = new int[Math.min(pm, w)];
            int info = TileKernels.getrf(p, ipiv);
            for (int t = 0; t < tiles; t++) {
                TileCopy.block(p, t * nb, 0, out[t], 0, 0, out[t].rows(), w);
            }
            Tile pivotTile = out[tiles];
            for (int r = 0; r < ipiv.length; r++) {
                pivotTile.setFlat(r, k * nb + ipiv[r] - 1);
            }
            if (info > 0) {
                throw new SingularMatrixException(k, k * nb + info - 1);
            }
        }
    }

    /** Applies step k's interchanges (global rows in {@code pivotTile}) to tiles k.. of one tile column. */
    private static void swapRows(int nb, int k, Tile pivotTile, Tile[] column) {
        int[] to = new int[pivotTile.rows()];
        for (int r = 0; r < to.length; r++) {
            to[r] = (int) pivotTile.getFlat(r) - k * nb;
        }
        TileCopy.interchangeRows(column, nb, to);
    }

    /** Access list: one extra access, then inout on tiles (k..mt-1, j). */
    private static Object[] columnFrom(DistributedMatrix a, int k, int j, Object extra) {
        Object[] out = new Object[a.mt() - k + 1];
        out[0] = extra;
        for (int i = k; i < a.mt(); i++) {
            out[i - k + 1] = DataDeps.inout(a.tile(i, j));
        }
        return out;
    }

    /** getrf on a contiguous copy of tile column k from row k*nb down; pivots are stored as global rows. */
    private static void factorPanel(DistributedMatrix a, int k, int w, int pm, int[] piv) {
        int nb = a.tileSize();
        try (Tile p = Tile.allocate(a.type(), pm, w)) {
            for (int i = k; i < a.mt(); i++) {
                TileCopy.block(a.tile(i, k), 0, 0, p, (i - k) * nb, 0, a.tileRows(i), w);
            }
            int[] ipiv = new int[Math.min(pm, w)];
            int info = TileKernels.getrf(p, ipiv);
            for (int i = k; i < a.mt(); i++) {
                TileCopy.block(p, (i - k) * nb, 0, a.tile(i, k), 0, 0, a.tileRows(i), w);
            }
            for (int r = 0; r < ipiv.length; r++) {
                piv[k * nb + r] = k * nb + ipiv[r] - 1;
            }
            if (info > 0) {
                throw new SingularMatrixException(k, k * nb + info - 1);
            }
        }
    }

    /** Applies step k's row interchanges (in order) to tile column j. */
    private static void applyPivots(DistributedMatrix a, int[] piv, int k, int j) {
        int nb = a.tileSize();
        int[] to = new int[Math.min(piv.length, (k + 1) * nb) - k * nb];
        for (int r = 0; r < to.length; r++) {
            to[r] = piv[k * nb + r] - k * nb;
        }
        Tile[] column = new Tile[a.mt() - k];
        for (int i = k; i < a.mt(); i++) {
            column[i - k] = a.tile(i, j);
        }
        TileCopy.interchangeRows(column, nb, to);
    }

    /**
     * Solves A X = B for square A by LU with partial pivoting on a copy; A and B are unchanged, X is
     * distributed as B. Across ranks A may have any distribution: a copy that keeps each tile column on one
     * rank (as {@link #lu} needs) is made when A's does not.
     */
    public DistributedMatrix solve(DistributedMatrix a, DistributedMatrix b) {
        square("solve", a);
        checkRhs("solve", a, b);
        try (DistributedMatrix f = byColumns(a)) {
            return luSolve(lu(f), b);
        }
    }

    /** X with A X = B from an LU factorization of square A; returns a new matrix distributed as B. */
    public DistributedMatrix luSolve(LuFactorization lu, DistributedMatrix b) {
        DistributedMatrix a = lu.factors();
        square("luSolve", a);
        checkRhs("luSolve", a, b);
        DistributedMatrix x = DistributedMatrix.zeros(b.type(), b.rows(), b.cols(), b.tileSize(), b.distribution(),
                b.localRank());
        int[] perm = lu.permutation();
        Ops ops = new Ops(x);
        try {
            runTiles("luSolve", ops, tasks -> {
                tasks.expose(a, b);
                permuteRows(tasks, ops, perm, b, x);
                trsmLeft(tasks, ops, Uplo.LOWER, Trans.N, Diag.UNIT, 1.0, a, a.nt(), x);
                trsmLeft(tasks, ops, Uplo.UPPER, Trans.N, Diag.NON_UNIT, 1.0, a, a.nt(), x);
            }, a, b, x);
        } catch (RuntimeException e) {
            x.close();
            throw e;
        }
        return x;
    }

    /**
     * X := P B, row r of X being row {@code perm[r]} of B: one kernel per tile of X reading the tiles of B
     * its rows come from, so row interchanges that cross tiles (and ranks) need no swaps in place.
     */
    private static void permuteRows(TileTasks tasks, Ops ops, int[] perm, DistributedMatrix b, DistributedMatrix x) {
        int nb = x.tileSize();
        int[][] sources = new int[x.mt()][];
        List<List<Integer>> readers = new ArrayList<>();
        for (int p = 0; p < b.mt(); p++) {
            readers.add(new ArrayList<>());
        }
        for (int i = 0; i < x.mt(); i++) {
            TreeSet<Integer> from = new TreeSet<>();
            for (int r = i * nb; r < i * nb + x.tileRows(i); r++) {
                from.add(perm[r] / nb);
            }
            sources[i] = from.stream().mapToInt(Integer::intValue).toArray();
            for (int p : sources[i]) {
                readers.get(p).add(i);
            }
        }
        for (int j = 0; j < x.nt(); j++) {
            for (int p = 0; p < b.mt(); p++) {
                int jj = j;
                tasks.share(new TileTasks.Ref(b, p, j), readers.get(p).stream()
                        .map(i -> new TileTasks.Ref(x, i, jj)).toArray(TileTasks.Ref[]::new));
            }
            for (int i = 0; i < x.mt(); i++) {
                int[] from = sources[i];
                int r0 = i * nb;
                TileTasks.Ref[] in = new TileTasks.Ref[from.length];
                for (int s = 0; s < from.length; s++) {
                    in[s] = new TileTasks.Ref(b, from[s], j);
                }
                tasks.kernel(ops.laswp, (out, src) -> {
                    for (int r = 0; r < out.rows(); r++) {
                        int row = perm[r0 + r];
                        Tile t = src[Arrays.binarySearch(from, row / nb)];
                        TileCopy.block(t, row % nb, 0, out, r, 0, 1, out.cols());
                    }
                }, new TileTasks.Ref(x, i, j), in);
            }
        }
    }

    // ------------------------------------------------------------------------------------------------
    // QR

    /**
     * Tile QR factorization A = Q R in place (flat-tree TS kernels): R in the upper triangle of the first
     * min(m, n) rows, Q as Householder reflectors in the rest of {@code a} and the returned factors.
     *
     * <p>Across ranks the kernels of tile column k (GEQRT, TPQRT) and the T factors and reflector copies
     * they make live with column k, and the updates of column j (GEMQRT, TPMQRT) run on j's owner with the
     * reflectors fetched. Each tile sees the same kernels in the same order as in one process, so the factors
     * are the same bits. Each TPQRT updates the diagonal tile and one tile below it together, so a panel's
     * kernels need its whole tile column on one rank: when {@code a}'s distribution splits a tile column over
     * ranks (P x Q grids with P > 1, 1D or block-cyclic by rows) the factorization runs on a copy by columns
     * ({@link #redistribute}) and R and the reflectors are copied back into {@code a}: two redistributions,
     * O(mn) data moved against O(mn min(m, n)) flops. T and the reflector copies then stay on the copy's
     * layout (1D cyclic by columns), which {@link #applyQ} reads wherever they are. A failure while factoring
     * leaves {@code a} as it was.
     */
    public QrFactorization qr(DistributedMatrix a) {
        if (splitColumn(a.distribution(), a) == null) {
            return qrByColumns(a);
        }
        checkRanks("qr", a);
        try (DistributedMatrix c = byColumns(a)) {
            QrFactorization onCopy = qrByColumns(c);
            try {
                copyTiles("qr", c, a);
            } catch (RuntimeException e) {
                onCopy.close();
                throw e;
            }
            return onCopy.withFactors(a);
        }
    }

    /** QR in place of a matrix whose every tile column is on one rank. */
    private QrFactorization qrByColumns(DistributedMatrix a) {
        int ib = ctx.innerBlock();
        int steps = Math.min(a.mt(), a.nt());
        QrFactorization f = QrFactorization.allocate(a, ib); // owns the tiles from here on
        TileTasks.Tiles t = f.tFactors();
        TileTasks.Tiles v = f.reflectors();
        Ops ops = new Ops(a);
        TaskOptions geqrt = a.isWhole() ? ops.geqrt : ops.geqrt.priority(PANEL_PRIORITY);
        TaskOptions tpqrt = a.isWhole() ? ops.tpqrt : ops.tpqrt.priority(PANEL_PRIORITY);
        try {
            runTiles("qr", ops, tasks -> {
                for (int k = 0; k < steps; k++) {
                    TileTasks.Ref akk = new TileTasks.Ref(a, k, k);
                    TileTasks.Ref tkk = new TileTasks.Ref(t, k, k);
                    TileTasks.Ref vk = new TileTasks.Ref(v, k, 0);
                    tasks.kernel(geqrt, (out, in) -> {
                        TileKernels.geqrt(ib, out[0], out[1]);
                        out[2].copyFrom(out[0]);
                    }, new TileTasks.Ref[] {akk, tkk, vk});
                    for (int j = k + 1; j < a.nt(); j++) {
                        tasks.kernel(ops.gemqrt, (out, in) -> TileKernels.gemqrt(Trans.T, ib, in[0], in[1], out),
                                new TileTasks.Ref(a, k, j), vk, tkk);
                    }
                    for (int i = k + 1; i < a.mt(); i++) {
                        TileTasks.Ref aik = new TileTasks.Ref(a, i, k);
                        TileTasks.Ref tik = new TileTasks.Ref(t, i, k);
                        tasks.kernel(tpqrt, (out, in) -> TileKernels.tpqrt(ib, out[0], out[1], out[2]),
                                new TileTasks.Ref[] {akk, aik, tik});
                        for (int j = k + 1; j < a.nt(); j++) {
                            tasks.kernel(ops.tpmqrt, (out, in) -> TileKernels.tpmqrt(Trans.T, ib, in[0], in[1], out[0], out[1]),
                                    new TileTasks.Ref[] {new TileTasks.Ref(a, k, j), new TileTasks.Ref(a, i, j)}, aik, tik);
                        }
                    }
                }
            }, a);
        } catch (RuntimeException e) {
            f.close();
            throw e;
        }
        return f;
    }

    /**
     * B := Q^T B (trans T) or Q B (trans N) in place, with Q from {@link #qr}. Across ranks B may have any
     * distribution: each kernel updates two tiles of one tile column of B, so when B's tile columns span
     * ranks the work runs on a copy by columns that is copied back.
     */
    public void applyQ(QrFactorization f, Trans trans, DistributedMatrix b) {
        DistributedMatrix a = f.factors();
        if (b.rows() != a.rows() || b.tileSize() != a.tileSize() || b.type() != a.type()) {
            throw new IllegalArgumentException("applyQ: B is " + b.describe() + " but Q is " + a.rows() + "x" + a.rows()
                    + " for " + a.describe());
        }
        if (splitColumn(b.distribution(), b) != null) {
            try (DistributedMatrix c = byColumns(b)) {
                applyQ(f, trans, c);
                copyTiles("applyQ", c, b);
            }
            return;
        }
        int ib = f.innerBlock();
        int steps = Math.min(a.mt(), a.nt());
        Ops ops = new Ops(b);
        runTiles("applyQ", ops, tasks -> {
            if (a != b) {
                tasks.expose(a);
            }
            TileTasks.Ref[] rowOfB = new TileTasks.Ref[b.nt()];
            for (int s = 0; s < steps; s++) {
                // Q^T applies the steps' reflectors in factorization order, Q in reverse.
                int k = trans == Trans.T ? s : steps - 1 - s;
                TileTasks.Ref vk = new TileTasks.Ref(f.reflectors(), k, 0);
                TileTasks.Ref tkk = new TileTasks.Ref(f.tFactors(), k, k);
                for (int j = 0; j < b.nt(); j++) {
                    rowOfB[j] = new TileTasks.Ref(b, k, j);
                }
                tasks.share(vk, rowOfB);
                tasks.share(tkk, rowOfB);
                for (int i = k + 1; i < a.mt(); i++) {
                    for (int j = 0; j < b.nt(); j++) {
                        rowOfB[j] = new TileTasks.Ref(b, i, j);
                    }
                    tasks.share(new TileTasks.Ref(a, i, k), rowOfB);
                    tasks.share(new TileTasks.Ref(f.tFactors(), i, k), rowOfB);
                }
                for (int j = 0; j < b.nt(); j++) {
                    TileTasks.Ref bkj = new TileTasks.Ref(b, k, j);
                    Runnable diag = () -> tasks.kernel(ops.gemqrt, (out, in) -> TileKernels.gemqrt(trans, ib, in[0], in[1], out),
                            bkj, vk, tkk);
                    if (trans == Trans.T) {
                        diag.run();
                    }
                    for (int s2 = 0; s2 < a.mt() - k - 1; s2++) {
                        int i = trans == Trans.T ? k + 1 + s2 : a.mt() - 1 - s2;
                        tasks.kernel(ops.tpmqrt, (out, in) -> TileKernels.tpmqrt(trans, ib, in[0], in[1], out[0], out[1]),
                                new TileTasks.Ref[] {bkj, new TileTasks.Ref(b, i, j)}, new TileTasks.Ref(a, i, k),
                                new TileTasks.Ref(f.tFactors(), i, k));
                    }
                    if (trans == Trans.N) {
                        diag.run();
                    }
                }
            }
        }, a, b);
    }

    /**
     * Least-squares solution of min ||A X - B|| for A with at least as many rows as columns and full
     * column rank, through QR of a copy of A. Returns X (cols(A) x cols(B), distributed as B); A and B are
     * unchanged. Across ranks A and B may have any distribution (copies by columns are made as needed).
     *
     * @throws SingularMatrixException if R has an exactly zero diagonal entry (A is rank deficient)
     */
    public DistributedMatrix leastSquares(DistributedMatrix a, DistributedMatrix b) {
        if (a.rows() < a.cols()) {
            throw new IllegalArgumentException("leastSquares needs rows >= cols, got " + a.rows() + "x" + a.cols()
                    + "; an underdetermined system has no unique solution");
        }
        checkRhs("leastSquares", a, b);
        try (DistributedMatrix f = byColumns(a); QrFactorization qr = qr(f);
             DistributedMatrix qtb = byColumns(b)) {
            applyQ(qr, Trans.T, qtb);
            int n = a.cols();
            int zero = firstZeroDiagonal(f);
            if (zero < n) {
                throw new SingularMatrixException(zero / a.tileSize(), zero);
            }
            DistributedMatrix x = DistributedMatrix.zeros(a.type(), n, b.cols(), a.tileSize(), b.distribution(),
                    b.localRank());
            Ops ops = new Ops(x);
            try {
                // X is the top n rows of Q^T B, then R X = that.
                runTiles("leastSquares", ops, tasks -> {
                    tasks.expose(f);
                    copyKernels(tasks, ops, qtb, x);
                    trsmLeft(tasks, ops, Uplo.UPPER, Trans.N, Diag.NON_UNIT, 1.0, f, a.nt(), x);
                }, f, qtb, x);
            } catch (RuntimeException e) {
                x.close();
                throw e;
            }
            return x;
        }
    }

    /**
     * The first column whose diagonal entry in {@code r} is exactly zero, or cols(r) if none; across ranks
     * each rank checks its diagonal tiles and the minimum is all-reduced, so every rank gets the same answer.
     */
    private int firstZeroDiagonal(DistributedMatrix r) {
        int nb = r.tileSize();
        int first = r.cols();
        for (int k = 0; k < Math.min(r.mt(), r.nt()) && first == r.cols(); k++) {
            if (r.isLocal(k, k)) {
                Tile t = r.tile(k, k);
                for (int c = 0; c < Math.min(t.rows(), t.cols()); c++) {
                    if (t.get(c, c) == 0) {
                        first = k * nb + c;
                        break;
                    }
                }
            }
        }
        if (r.isWhole()) {
            return first;
        }
        int[] min = {first};
        spmd.comm.allReduce(min, ReduceOp.MIN);
        return min[0];
    }

    // ------------------------------------------------------------------------------------------------
    // Redistribution

    /**
     * A copy of {@code a} on distribution {@code d} over the same ranks. Collective across ranks (every rank
     * calls it); tiles move as the {@link Context#strategy} says. {@link #lu} and {@link #qr} use it
     * to factor a matrix whose tile columns span ranks.
     */
    public DistributedMatrix redistribute(DistributedMatrix a, Distribution d) {
        if (d.ranks() != a.distribution().ranks()) {
            throw new IllegalArgumentException("redistribute: " + a + " is spread over " + a.distribution().ranks()
                    + " ranks but " + d + " spans " + d.ranks() + "; both must cover the same ranks");
        }
        DistributedMatrix c = DistributedMatrix.zeros(a.type(), a.rows(), a.cols(), a.tileSize(), d, a.localRank());
        try {
            copyTiles("redistribute", a, c);
        } catch (RuntimeException e) {
            c.close();
            throw e;
        }
        return c;
    }

    /** Copies every tile of {@code dst} from the leading block of the same tile of {@code src}, across ranks as needed. */
    private void copyTiles(String op, DistributedMatrix src, DistributedMatrix dst) {
        Ops ops = new Ops(dst);
        runTiles(op, ops, tasks -> copyKernels(tasks, ops, src, dst), src, dst);
    }

    private static void copyKernels(TileTasks tasks, Ops ops, DistributedMatrix src, DistributedMatrix dst) {
        for (int j = 0; j < dst.nt(); j++) {
            for (int i = 0; i < dst.mt(); i++) {
                tasks.kernel(ops.copy, (out, in) -> TileCopy.block(in[0], 0, 0, out, 0, 0, out.rows(), out.cols()),
                        new TileTasks.Ref(dst, i, j), new TileTasks.Ref(src, i, j));
            }
        }
    }

    /**
     * A copy of {@code a} that keeps every tile column on one rank, as the panel factorizations across ranks
     * need: on a's own distribution when it does, else 1D cyclic by columns over the same ranks.
     */
    private DistributedMatrix byColumns(DistributedMatrix a) {
        Distribution d = a.distribution();
        if (splitColumn(d, a) == null) {
            return a.copy();
        }
        return redistribute(a, Distribution.cyclic1d(Distribution.Axis.COLUMNS, d.ranks(), d.devicesPerRank()));
    }

    // ------------------------------------------------------------------------------------------------

    /** Runs one region and turns a failed task back into the exception that explains it. */
    private void run(Consumer<DataDeps> body) {
        try (DataDeps region = scheduler.dataDeps()) {
            body.accept(region);
        } catch (TaskFailedException e) {
            throw explain(e);
        }
    }

    private static RuntimeException explain(RuntimeException e) {
        Throwable cause = e instanceof TaskFailedException ? e.getCause() : null;
        if (cause instanceof NotPositiveDefiniteException || cause instanceof SingularMatrixException
                || cause instanceof IllegalArgumentException) {
            cause.addSuppressed(e);
            return (RuntimeException) cause;
        }
        return e;
    }

    /**
     * Runs an operation written against {@link TileTasks}: in this process when every operand is whole,
     * else SPMD over the communicator, with the remote failure translated as {@link SpmdTasks#rethrow} says.
     */
    private void runTiles(String op, Ops ops, Consumer<TileTasks> body, DistributedMatrix... operands) {
        boolean whole = true;
        for (DistributedMatrix m : operands) {
            whole &= m.isWhole();
        }
        if (whole) {
            run(region -> body.accept(new TileTasks.Local(region)));
            return;
        }
        checkRanks(op, operands);
        SpmdTasks tasks = null;
        try {
            try (DataDeps region = scheduler.dataDeps()) {
                tasks = new SpmdTasks(spmd, region, ctx.strategy(), ops.suffix);
                body.accept(tasks);
                List<DistributedMatrix> refreshed = new ArrayList<>();
                for (DistributedMatrix m : operands) {
                    if (refreshed.stream().noneMatch(r -> r == m)) {
                        refreshed.add(m);
                        tasks.refreshReplicas(m, ops.copy);
                    }
                }
            }
            // A rank can finish its share before another rank fails (its tiles were final early): the
            // barrier makes every rank learn of an abort before it returns, so all fail or none does.
            spmd.comm.barrier();
        } catch (RuntimeException e) {
            RuntimeException r = tasks == null ? e : tasks.rethrow(e);
            throw r == e ? explain(e) : r;
        } finally {
            if (tasks != null) {
                tasks.close();
            }
        }
    }

    /** Operands spread over ranks need this component's communicator, with their ranks. */
    private void checkRanks(String op, DistributedMatrix... operands) {
        if (spmd == null) {
            throw new IllegalArgumentException(op + ": " + operands[0] + " is spread over "
                    + operands[0].distribution().ranks() + " ranks; launch TileAlgebra with Context.communicator(...)");
        }
        for (DistributedMatrix m : operands) {
            SpmdTasks.check(op, spmd.comm, m);
        }
    }

    private static void square(String op, DistributedMatrix a) {
        if (a.rows() != a.cols()) {
            throw new IllegalArgumentException(op + " needs a square matrix, got " + a.rows() + "x" + a.cols());
        }
    }

    private static void checkRhs(String op, DistributedMatrix a, DistributedMatrix b) {
        if (b.rows() != a.rows()) {
            throw new IllegalArgumentException(op + ": B has " + b.rows() + " rows but A is " + a.rows() + "x" + a.cols());
        }
        sameTiling(op, a, b);
    }

    private static void sameTiling(String op, DistributedMatrix... ms) {
        for (DistributedMatrix m : ms) {
            if (m.tileSize() != ms[0].tileSize() || m.type() != ms[0].type()) {
                throw new IllegalArgumentException(op + ": operands must share tile size and type, got "
                        + ms[0].describe() + " and " + m.describe());
            }
        }
    }

    /**
     * Task options per kernel for one operation: names carry the type and tile size, since they are the
     * cost model's signatures, and cost hints give sensible critical-path ranks before anything is measured.
     */
    private static final class Ops {
        final TaskOptions gemm;
        final TaskOptions trsm;
        final TaskOptions syrk;
        final TaskOptions potrf;
        final TaskOptions getrf;
        final TaskOptions laswp;
        final TaskOptions geqrt;
        final TaskOptions gemqrt;
        final TaskOptions tpqrt;
        final TaskOptions tpmqrt;
        final TaskOptions copy;
        final TaskOptions add;
        final String suffix;

        Ops(DistributedMatrix m) {
            double b = m.tileSize();
            double b3 = b * b * b;
            Map<String, TaskOptions> made = new HashMap<>();
            suffix = "_" + m.type().name().toLowerCase() + "_" + m.tileSize();
            gemm = opt(made, "gemm" + suffix, 2 * b3);
            trsm = opt(made, "trsm" + suffix, b3);
            syrk = opt(made, "syrk" + suffix, b3);
            potrf = opt(made, "potrf" + suffix, b3 / 3);
            getrf = opt(made, "getrf" + suffix, b3 * m.mt());
            laswp = opt(made, "laswp" + suffix, b * b * 4);
            geqrt = opt(made, "geqrt" + suffix, 4 * b3 / 3);
            gemqrt = opt(made, "gemqrt" + suffix, 2 * b3);
            tpqrt = opt(made, "tpqrt" + suffix, 2 * b3);
            tpmqrt = opt(made, "tpmqrt" + suffix, 4 * b3);
            copy = opt(made, "copy" + suffix, b * b);
            add = opt(made, "add" + suffix, b * b);
        }

        private static TaskOptions opt(Map<String, TaskOptions> made, String name, double flops) {
            return made.computeIfAbsent(name, n -> TaskOptions.named(n)
                    .costHint(Duration.ofNanos(Math.max(1, (long) (flops / HINT_FLOPS_PER_NS)))));
        }
    }
}
