package dev.poniard.scheduler.sim;

import dev.poniard.scheduler.Scope;
import dev.poniard.scheduler.comm.Algorithm;
import java.util.Random;

/**
 * DAG families for planning at scale: a data-parallel training step, a Mixture-of-Experts layer, a
 * pipeline-parallel schedule and a tile Cholesky factorization. Work is in nanoseconds on a speed-1
 * device; sizes in bytes.
 */
public final class Workloads {
    private Workloads() {
    }

    /**
     * One synchronous data-parallel step on {@code devices} devices: forward, then backward in
     * {@code buckets} gradient buckets, each all-reduced as soon as every device has produced it (so
     * communication overlaps the rest of the backward pass), then the optimizer update.
     *
     * @param computeNs forward plus backward time of one device's batch
     * @param gradientBytes size of all gradients
     * @param algorithm the all-reduce algorithm, or {@link Algorithm#AUTO} for the communicator's choice per bucket
     */
    public static SimDag dataParallelStep(int devices, double computeNs, long gradientBytes, int buckets,
                                          Algorithm algorithm) {
        SimDag dag = new SimDag();
        int[] all = new int[devices];
        int[][] grads = new int[buckets][devices];
        for (int d = 0; d < devices; d++) {
            all[d] = d;
            Scope on = Scope.processors(d);
            int prev = dag.task("forward", computeNs / 3, 0, 0, on);
            for (int k = 0; k < buckets; k++) {
                prev = dag.task("backward", 2 * computeNs / 3 / buckets, gradientBytes / buckets, 0, on, prev);
                grads[k][d] = prev;
            }
        }
        int[] reduced = new int[buckets];
        for (int k = 0; k < buckets; k++) {
            reduced[k] = dag.collective("allreduce", SimDag.Collective.ALL_REDUCE, algorithm, gradientBytes / buckets,
                    all, grads[k]);
        }
        for (int d = 0; d < devices; d++) {
            dag.task("update", computeNs / 50, 0, 0, Scope.processors(d), reduced);
        }
        return dag;
    }

    /** The time of {@link #dataParallelStep} on one device with no communication: the scaling baseline. */
    public static double dataParallelComputeNs(double computeNs) {
        return computeNs + computeNs / 50;
    }

    /**
     * Token counts per expert when {@code tokens} tokens each pick {@code k} distinct experts of
     * {@code experts} with Zipf(s) popularity (s = 0: uniform), from a seeded generator.
     */
    public static int[] zipfRouting(int tokens, int experts, int k, double s, long seed) {
        if (k > experts) {
            throw new IllegalArgumentException("top-" + k + " routing needs at least " + k + " experts, got " + experts);
        }
        double[] cdf = new double[experts];
        double sum = 0;
        for (int e = 0; e < experts; e++) {
            sum += 1 / Math.pow(e + 1, s);
            cdf[e] = sum;
        }
        Random rnd = new Random(seed);
        int[] counts = new int[experts];
        boolean[] picked = new boolean[experts];
        for (int t = 0; t < tokens; t++) {
            int got = 0;
            while (got < k) {
                double u = rnd.nextDouble() * sum;
                int e = 0;
                while (cdf[e] < u) {
                    e++;
                }
                if (!picked[e]) {
                    picked[e] = true;
                    counts[e]++;
                    got++;
                }
            }
            java.util.Arrays.fill(picked, false);
        }
        return counts;
    }

    /**
     * One MoE layer's expert work (forward and backward) on {@code devices} devices.
     *
     * <p>Static: expert e runs on device e mod P as one task. Dynamic: experts are cut into chunks of at
     * most {@code chunkTokens} tokens that any device may run, placed and stolen by the policy; each chunk
     * reads its expert's weights from the expert's home device (a transfer when it runs elsewhere).
     *
     * @param tokenNs work per token for one expert (forward + backward)
     */
    public static SimDag moeLayer(int[] tokensPerExpert, int devices, double tokenNs, long expertWeightBytes,
                                  boolean dynamic, int chunkTokens) {
        SimDag dag = new SimDag();
        for (int e = 0; e < tokensPerExpert.length; e++) {
            Scope home = Scope.processors(e % devices);
            if (!dynamic) {
                dag.task("expert" + e, tokensPerExpert[e] * tokenNs, 0, 0, home);
                continue;
            }
            int weights = dag.task("weights" + e, 0, expertWeightBytes, 0, home);
            for (int start = 0; start < tokensPerExpert[e]; start += chunkTokens) {
                int size = Math.min(chunkTokens, tokensPerExpert[e] - start);
                dag.task("expert" + e, size * tokenNs, 0, weights);
            }
        }
        return dag;
    }

    /** Lower bound of a MoE layer's makespan: max(total work / devices, longest indivisible task). */
    public static double moeLowerBoundNs(int[] tokensPerExpert, int devices, double tokenNs, int chunkTokens) {
        double total = 0, longest = 0;
        for (int t : tokensPerExpert) {
            total += t * tokenNs;
            longest = Math.max(longest, Math.min(t, chunkTokens) * tokenNs);
        }
        return Math.max(total / devices, longest);
    }

    public enum PipelineSchedule { GPIPE, ONE_F_ONE_B }

    /**
     * A pipeline-parallel step: {@code stages} stages (stage s on device s), {@code micro} micro-batches,
     * forward F(s,m) then backward B(s,m) (twice the forward's work). GPipe runs every forward before any
     * backward; 1F1B (PipeDream-Flush) prefers backwards and admits at most S − s micro-batches into stage
     * s before their backwards, which bounds the activations held.
     */
    public static SimDag pipeline(int stages, int micro, double forwardNs, long activationBytes,
                                  PipelineSchedule schedule) {
        SimDag dag = new SimDag();
        int[][] f = new int[stages][micro];
        int[][] b = new int[stages][micro];
        boolean oneFOneB = schedule == PipelineSchedule.ONE_F_ONE_B;
        int fPriority = oneFOneB ? 0 : 1, bPriority = oneFOneB ? 1 : 0;
        // Build in an order where inputs always exist: micro-batch by micro-batch, forwards then backwards,
        // with 1F1B's admission edge F(s, m) <- B(s, m - (S - s)) pointing at an earlier micro-batch.
        for (int m = 0; m < micro; m++) {
            for (int s = 0; s < stages; s++) {
                int window = stages - s;
                int[] in;
                if (s == 0) {
                    in = oneFOneB && m >= window ? new int[] {b[s][m - window]} : new int[0];
                } else {
                    in = oneFOneB && m >= window ? new int[] {f[s - 1][m], b[s][m - window]} : new int[] {f[s - 1][m]};
                }
                f[s][m] = dag.task("F" + s + "." + m, forwardNs, activationBytes, fPriority, Scope.processors(s), in);
            }
            for (int s = stages - 1; s >= 0; s--) {
                int[] in = s == stages - 1 ? new int[] {f[s][m]} : new int[] {f[s][m], b[s + 1][m]};
                b[s][m] = dag.task("B" + s + "." + m, 2 * forwardNs, s == 0 ? 0 : activationBytes, bPriority,
                        Scope.processors(s), in);
            }
        }
        return dag;
    }

    /** The idle share of the stage devices over a simulated pipeline step. */
    public static double bubbleFraction(SimResult r, int stages) {
        double busy = 0;
        for (int s = 0; s < stages; s++) {
            busy += r.busyNs(s);
        }
        return 1 - busy / (stages * r.makespanNs());
    }

    /** Measured or modelled time in nanoseconds of each tile kernel of a Cholesky factorization. */
    public record CholeskyKernels(double potrfNs, double trsmNs, double syrkNs, double gemmNs) {
        /** Every kernel at the same speed: nb³/3, nb³, nb³ and 2nb³ floating-point operations. */
        public static CholeskyKernels atFlopsPerNs(int tile, double flopsPerNs) {
            double nb3 = (double) tile * tile * tile;
            return new CholeskyKernels(nb3 / 3 / flopsPerNs, nb3 / flopsPerNs, nb3 / flopsPerNs, 2 * nb3 / flopsPerNs);
        }
    }

    /**
     * Tile Cholesky (right-looking, POTRF/TRSM/SYRK/GEMM) of an n×n matrix in tiles of {@code tile},
     * owner-computes on a 2D block-cyclic {@code p}×{@code q} grid of devices.
     *
     * @param flopsPerNs each device's speed in floating-point operations per nanosecond (GFLOP/s / 1)
     */
    public static SimDag tileCholesky(int n, int tile, int p, int q, double flopsPerNs) {
        return tileCholesky(n, tile, CholeskyKernels.atFlopsPerNs(tile, flopsPerNs), (long) tile * tile * 8,
                (i, j) -> Scope.processors((i % p) * q + (j % q)));
    }

    /**
     * The same DAG with given kernel times and tile bytes, each tile's tasks placed by {@code owner}
     * ({@code (i, j) -> Scope.any()} for one shared-memory process, where tiles move for free: pass 0 bytes).
     */
    public static SimDag tileCholesky(int n, int tile, CholeskyKernels k, long tileBytes,
                                      java.util.function.BiFunction<Integer, Integer, Scope> owner) {
        int t = (n + tile - 1) / tile;
        SimDag dag = new SimDag();
        int[][] last = new int[t][t];
        for (int[] row : last) {
            java.util.Arrays.fill(row, -1);
        }
        for (int kk = 0; kk < t; kk++) {
            last[kk][kk] = dag.task("potrf", k.potrfNs(), tileBytes, 0, owner.apply(kk, kk), deps(last[kk][kk]));
            for (int i = kk + 1; i < t; i++) {
                last[i][kk] = dag.task("trsm", k.trsmNs(), tileBytes, 0, owner.apply(i, kk),
                        deps(last[kk][kk], last[i][kk]));
            }
            for (int i = kk + 1; i < t; i++) {
                last[i][i] = dag.task("syrk", k.syrkNs(), tileBytes, 0, owner.apply(i, i), deps(last[i][kk], last[i][i]));
                for (int j = kk + 1; j < i; j++) {
                    last[i][j] = dag.task("gemm", k.gemmNs(), tileBytes, 0, owner.apply(i, j),
                            deps(last[i][kk], last[j][kk], last[i][j]));
                }
            }
        }
        return dag;
    }

    /** Floating-point operations of a Cholesky factorization of order n. */
    public static double choleskyFlops(int n) {
        return (double) n * n * n / 3;
    }

    private static int[] deps(int... candidates) {
        int count = 0;
        for (int c : candidates) {
            if (c >= 0) {
                count++;
            }
        }
        int[] out = new int[count];
        int k = 0;
        for (int c : candidates) {
            if (c >= 0) {
                out[k++] = c;
            }
        }
        return out;
    }
}
