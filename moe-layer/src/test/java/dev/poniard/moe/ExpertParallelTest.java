package dev.poniard.moe;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.poniard.scheduler.comm.Communicator;
import dev.poniard.scheduler.comm.LocalCluster;
import dev.poniard.scheduler.comm.ReduceOp;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Random;
import java.util.concurrent.TimeUnit;
import org.deeplearning4j.nn.gradient.Gradient;
import org.deeplearning4j.nn.multilayer.MultiLayerNetwork;
import org.deeplearning4j.nn.workspace.LayerWorkspaceMgr;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;
import org.nd4j.common.primitives.Pair;
import org.nd4j.linalg.activations.Activation;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;
import org.nd4j.linalg.indexing.NDArrayIndex;

/**
 * Expert parallelism on 2 in-process ranks (LocalCluster, one inline expert worker per rank): equal to the
 * single-process layer on the concatenated batch, shadowing decided identically on every rank, and data-parallel
 * training that keeps the replicas bit-identical.
 */
@Timeout(value = 120, unit = TimeUnit.SECONDS)
class ExpertParallelTest {
    private static final int RANKS = 2;
    private static final int D = 6;
    private static LocalCluster cluster;

    @BeforeAll
    static void start() {
        Nd4j.setDefaultDataTypes(DataType.DOUBLE, DataType.DOUBLE);
        // generous failure detection: the test machine is shared and may starve a rank's heartbeat for seconds;
        // operations still fail well within the test timeout
        cluster = LocalCluster.launch(RANKS, ctx -> ctx.alpha(5e-6).beta(2.5e-10).gamma(5e-10).failureTimeoutMs(30_000)
                .operationTimeoutMs(60_000));
    }

    @AfterAll
    static void stop() {
        if (cluster != null) {
            cluster.close();
        }
    }

    private static MoeLayer.Builder moe(int experts, int k, RouterType router) {
        return new MoeLayer.Builder().experts(experts).topK(k).expertHidden(5).expertActivation(Activation.TANH)
                .router(router).sharedExperts(1).dropless(true).auxLossWeight(0.01).zLossWeight(0.001).workers(1);
    }

    /** Tokens whose feature 0 is 1, so that router row 0 acts as a per-expert bias. */
    private static INDArray tokens(int n, long seed) {
        INDArray x = Nd4j.rand(DataType.DOUBLE, n, D).subi(0.5).muli(2);
        x.getColumn(0).assign(1);
        return x;
    }

    /** Router row 0 (the constant feature): expert 0 favoured, the last expert never chosen. */
    private static void biasRouter(MultiLayerNetwork net, int experts, double hot) {
        INDArray wr = net.getLayer(0).getParam(MoeParamInitializer.ROUTER_W);
        wr.muli(2);
        wr.getRow(0).assign(0);
        wr.putScalar(0, 0, hot);
        wr.putScalar(0, experts - 1, -50);
    }

    private record Pass(INDArray out, INDArray dx, INDArray grad, MoeMetrics metrics) {
    }

    private static Pass pass(MultiLayerNetwork net, INDArray x, INDArray eps) {
        if (net.getGradientsViewArray() == null) {
            net.initGradientsView();
        }
        MoeLayerImpl layer = (MoeLayerImpl) net.getLayer(0);
        INDArray out = layer.activate(x, true, LayerWorkspaceMgr.noWorkspaces()).dup();
        Pair<Gradient, INDArray> bp = layer.backpropGradient(eps, LayerWorkspaceMgr.noWorkspaces());
        return new Pass(out, bp.getSecond().dup(), layer.getGradientsViewArray().dup(), layer.lastMetrics());
    }

    /** ‖a − b‖∞ ≤ tol · max(‖b‖∞, 1e-12). */
    private static void assertClose(INDArray expected, INDArray actual, double tol, String what) {
        assertArrayEquals(expected.shape(), actual.shape(), what + " shape");
        double scale = Math.max(expected.amaxNumber().doubleValue(), 1e-12);
        double diff = expected.sub(actual).amaxNumber().doubleValue();
        assertTrue(diff <= tol * scale, what + ": max difference " + diff + " against max magnitude " + scale);
    }

    private static MultiLayerNetwork replica(MultiLayerNetwork reference) {
        MultiLayerNetwork net = new MultiLayerNetwork(reference.getLayerWiseConfigurations().clone());
        net.init(reference.params().dup(), true);
        return net;
    }

    @ParameterizedTest(name = "k={0}, shadowing={1}, sequences={2}, examples per rank={3}")
    @CsvSource({"1, false, false, 12", "1, true, false, 12", "2, false, false, 12", "2, true, false, 12",
        "2, true, true, 4", "1, false, false, 1", "2, false, false, 1"})
    void shouldEqualTheSingleProcessLayerOnTheConcatenatedBatch(int k, boolean shadowing, boolean sequences,
                                                                int perRank) {
        long seed = 20 + k;
        System.out.println("seed " + seed);
        Nd4j.getRandom().setSeed(seed);
        int experts = 4; // a sequence example has 3 time steps
        MultiLayerNetwork ref = MoeTestNets.mln(moe(experts, k, RouterType.TOP_K), D, 3, seed);
        biasRouter(ref, experts, 0.6);
        INDArray x;
        INDArray eps;
        if (sequences) {
            x = Nd4j.rand(DataType.DOUBLE, RANKS * perRank, D, 3).subi(0.5).muli(2);
            x.get(NDArrayIndex.all(), NDArrayIndex.point(0), NDArrayIndex.all()).assign(1);
            eps = Nd4j.rand(DataType.DOUBLE, RANKS * perRank, D, 3).subi(0.5);
        } else {
            x = tokens(RANKS * perRank, seed);
            eps = Nd4j.rand(DataType.DOUBLE, RANKS * perRank, D).subi(0.5);
        }
        Pass single = pass(ref, x, eps);
        assertEquals(0, single.metrics().keptPerExpert()[experts - 1], "the last expert must get no token");

        ExpertParallel.Context ctx = new ExpertParallel.Context().shadowing(shadowing).shadowFactor(1.5);
        List<Pass> parts = cluster.run(comm -> {
            MultiLayerNetwork net = replica(ref);
            MoeModels.useCommunicator(net, comm, ctx);
            try {
                int r = comm.rank();
                INDArray xr = rows(x, r * perRank, (r + 1) * perRank);
                INDArray er = rows(eps, r * perRank, (r + 1) * perRank);
                Pass p = pass(net, xr, er);
                double[] g = p.grad().toDoubleVector();
                comm.allReduce(g, ReduceOp.SUM); // what the trainer's gradient all-reduce does
                return new Pass(p.out(), p.dx(), Nd4j.createFromArray(g).reshape(p.grad().shape()), p.metrics());
            } finally {
                MoeModels.useCommunicator(net, null);
            }
        });
        INDArray out = Nd4j.concat(0, parts.get(0).out(), parts.get(1).out());
        INDArray dx = Nd4j.concat(0, parts.get(0).dx(), parts.get(1).dx());
        assertClose(single.out(), out, 1e-6, "outputs");
        assertClose(single.dx(), dx, 1e-6, "input gradients");
        assertClose(single.grad(), parts.get(0).grad(), 1e-6, "all-reduced parameter gradients");
        assertEquals(parts.get(0).grad(), parts.get(1).grad(), "both ranks hold the same all-reduced gradient");

        ExpertParallelStats s0 = parts.get(0).metrics().expertParallel();
        ExpertParallelStats s1 = parts.get(1).metrics().expertParallel();
        assertNotNull(s0);
        System.out.println("k=" + k + ", shadowing " + shadowing + ": " + s0 + " | " + s1);
        long[] global = s0.globalTokensPerExpert();
        assertArrayEquals(Arrays.stream(single.metrics().keptPerExpert()).asLongStream().toArray(), global);
        assertArrayEquals(global, s1.globalTokensPerExpert());
        assertArrayEquals(s0.shadowedExperts(), s1.shadowedExperts());
        if (shadowing) {
            // the rule: global load > 1.5 × mean load per expert
            double mean = Arrays.stream(global).sum() / (double) experts;
            int[] hot = java.util.stream.IntStream.range(0, experts).filter(e -> global[e] > 1.5 * mean).toArray();
            assertArrayEquals(hot, s0.shadowedExperts(), "global load " + Arrays.toString(global));
            assertEquals(0, hot.length > 0 ? hot[0] : -1, "expert 0 is hot: " + Arrays.toString(global));
        } else {
            assertArrayEquals(new int[0], s0.shadowedExperts());
        }
        // every exchanged row is computed exactly once, shadowed rows once per rank for its own tokens
        assertEquals(Arrays.stream(global).sum(), s0.rowsComputed() + s1.rowsComputed());
        assertTrue(s0.bytesSent() > 0 && s0.bytesSent() == s1.bytesReceived() && s1.bytesSent() == s0.bytesReceived(),
                s0 + " / " + s1);
    }

    @Test
    void shouldMatchEachRanksOwnBatchWithNoisyTopK() {
        long seed = 31;
        System.out.println("seed " + seed);
        Nd4j.getRandom().setSeed(seed);
        int experts = 4;
        int perRank = 10;
        // noise is drawn per token of a rank's batch, and capacity is per rank (GShard's per-device capacity), so
        // each rank's outputs equal the single-process layer on that rank's batch, and the summed gradients equal
        // the sum of those single-process gradients; capacity factor 1 drops assignments
        MultiLayerNetwork ref = MoeTestNets.mln(moe(experts, 2, RouterType.NOISY_TOP_K).auxLossWeight(0)
                .dropless(false).capacityFactor(1.0), D, 3, seed);
        ref.getLayer(0).getParam(MoeParamInitializer.NOISE_W).assign(Nd4j.rand(DataType.DOUBLE, D, experts));
        INDArray x = tokens(RANKS * perRank, seed);
        INDArray eps = Nd4j.rand(DataType.DOUBLE, RANKS * perRank, D).subi(0.5);
        List<Pass> singles = new ArrayList<>();
        INDArray gradSum = null;
        for (int r = 0; r < RANKS; r++) {
            Pass p = pass(replica(ref), x.get(interval(r * perRank, (r + 1) * perRank)).dup(),
                    eps.get(interval(r * perRank, (r + 1) * perRank)).dup());
            singles.add(p);
            gradSum = gradSum == null ? p.grad() : gradSum.add(p.grad());
        }
        List<Pass> parts = cluster.run(comm -> {
            MultiLayerNetwork net = replica(ref);
            MoeModels.useCommunicator(net, comm, new ExpertParallel.Context().shadowFactor(1.2));
            try {
                int r = comm.rank();
                Pass p = pass(net, x.get(interval(r * perRank, (r + 1) * perRank)).dup(),
                        eps.get(interval(r * perRank, (r + 1) * perRank)).dup());
                double[] g = p.grad().toDoubleVector();
                comm.allReduce(g, ReduceOp.SUM);
                return new Pass(p.out(), p.dx(), Nd4j.createFromArray(g).reshape(p.grad().shape()), p.metrics());
            } finally {
                MoeModels.useCommunicator(net, null);
            }
        });
        for (int r = 0; r < RANKS; r++) {
            assertClose(singles.get(r).out(), parts.get(r).out(), 1e-6, "rank " + r + " outputs");
            assertClose(singles.get(r).dx(), parts.get(r).dx(), 1e-6, "rank " + r + " input gradients");
        }
        assertClose(gradSum, parts.get(0).grad(), 1e-6, "all-reduced parameter gradients");
        assertTrue(parts.get(0).metrics().dropRate() + parts.get(1).metrics().dropRate() > 0,
                "capacity must drop assignments: " + parts.get(0).metrics() + " / " + parts.get(1).metrics());
    }

    @Test
    void shouldShadowTheHotExpertOfZipfRoutingIdenticallyOnBothRanks() {
        long seed = 41;
        System.out.println("seed " + seed);
        int experts = 8;
        int perRank = 200;
        double s = 1.2;
        // features 0..E-1 are a one-hot of the token's Zipf-drawn expert, and the router follows them
        Random rnd = new Random(seed);
        double[] cdf = new double[experts];
        double z = 0;
        for (int e = 0; e < experts; e++) {
            z += Math.pow(e + 1, -s);
            cdf[e] = z;
        }
        int dd = experts + 2;
        INDArray x = Nd4j.rand(DataType.DOUBLE, RANKS * perRank, dd).muli(0.1);
        for (int n = 0; n < RANKS * perRank; n++) {
            double u = rnd.nextDouble() * z;
            int e = 0;
            while (cdf[e] < u) {
                e++;
            }
            x.putScalar(n, e, 1);
        }
        INDArray eps = Nd4j.rand(DataType.DOUBLE, RANKS * perRank, dd).subi(0.5);
        MultiLayerNetwork ref = MoeTestNets.mln(moe(experts, 1, RouterType.TOP_K).sharedExperts(0), dd, 2, seed);
        INDArray wr = ref.getLayer(0).getParam(MoeParamInitializer.ROUTER_W);
        for (int e = 0; e < experts; e++) {
            wr.putScalar(e, e, 10);
        }
        long[][] bytes = new long[2][];
        for (boolean shadowing : new boolean[] {false, true}) {
            List<MoeMetrics> ms = cluster.run(comm -> {
                MultiLayerNetwork net = replica(ref);
                MoeModels.useCommunicator(net, comm, new ExpertParallel.Context().shadowing(shadowing));
                try {
                    int r = comm.rank();
                    pass(net, x.get(interval(r * perRank, (r + 1) * perRank)).dup(),
                            eps.get(interval(r * perRank, (r + 1) * perRank)).dup());
                    return MoeModels.metrics(net).get(0);
                } finally {
                    MoeModels.useCommunicator(net, null);
                }
            });
            ExpertParallelStats a = ms.get(0).expertParallel();
            ExpertParallelStats b = ms.get(1).expertParallel();
            System.out.println("shadowing " + shadowing + ": " + a + " | " + b);
            assertArrayEquals(a.globalTokensPerExpert(), b.globalTokensPerExpert());
            assertArrayEquals(a.shadowedExperts(), b.shadowedExperts());
            assertArrayEquals(shadowing ? new int[] {0} : new int[0], a.shadowedExperts(),
                    "global load " + Arrays.toString(a.globalTokensPerExpert()));
            bytes[shadowing ? 1 : 0] = new long[] {a.bytesSent() + b.bytesSent(),
                Math.max(a.rowsComputed(), b.rowsComputed())};
        }
        System.out.printf("bytes exchanged without / with shadowing: %d / %d; most rows on one rank: %d / %d%n",
                bytes[0][0], bytes[1][0], bytes[0][1], bytes[1][1]);
        assertTrue(bytes[1][0] < bytes[0][0], "shadowing the hot expert must cut the bytes exchanged");
        assertTrue(bytes[1][1] < bytes[0][1], "shadowing the hot expert must even out the rows per rank");
    }

    @Test
    void shouldTrainOnTwoRanksWithBitIdenticalReplicasMatchingOneProcess() {
        long seed = 51;
        System.out.println("seed " + seed);
        int steps = 6;
        ExpertParallelTraining run = new ExpertParallelTraining(seed, RANKS, 16, steps);
        MultiLayerNetwork ref = run.trainReference();
        List<double[]> params = cluster.run(comm -> {
            List<String> log = new ArrayList<>();
            double[] p = run.trainOnRank(comm, new ExpertParallel.Context().shadowFactor(1.3), log);
            log.forEach(System.out::println);
            return p;
        });
        assertArrayEquals(params.get(0), params.get(1), "replicas must stay bit-identical");
        double diff = ExpertParallelTraining.relativeDifference(params.get(0), ref.params());
        System.out.println("relative difference to one process after " + steps + " steps: " + diff);
        assertTrue(diff <= 1e-6, "parameters after " + steps + " steps differ by " + diff);
        assertTrue(ref.params().sub(run.start.params()).amaxNumber().doubleValue() > 1e-3,
                "training must move the weights");
        INDArray rb = ref.getLayer(0).getParam(MoeParamInitializer.SELECTION_BIAS);
        assertTrue(rb.amaxNumber().doubleValue() > 0.01, "bias balancing must have moved the selection biases: " + rb);
    }

    @Test
    void shouldRefuseUnsupportedRoutersAndSharedCommunicators() {
        Communicator comm = cluster.comm(0);
        MultiLayerNetwork ec = MoeTestNets.mln(moe(4, 2, RouterType.EXPERT_CHOICE).dropless(false).capacityFactor(1),
                D, 3, 1);
        IllegalStateException e = assertThrows(IllegalStateException.class, () -> MoeModels.useCommunicator(ec, comm));
        assertTrue(e.getMessage().contains("TOP_K and NOISY_TOP_K"), e.getMessage());

        MultiLayerNetwork a = MoeTestNets.mln(moe(4, 2, RouterType.TOP_K), D, 3, 1);
        MultiLayerNetwork b = MoeTestNets.mln(moe(4, 2, RouterType.TOP_K), D, 3, 1);
        MoeModels.useCommunicator(a, comm);
        try {
            IllegalStateException shared = assertThrows(IllegalStateException.class,
                    () -> MoeModels.useCommunicator(b, comm));
            assertTrue(shared.getMessage().contains("its own"), shared.getMessage());
        } finally {
            MoeModels.useCommunicator(a, null);
        }
        MoeModels.useCommunicator(b, comm); // free again once the first replica let go
        MoeModels.useCommunicator(b, null);
        assertThrows(IllegalArgumentException.class, () -> new ExpertParallel.Context().shadowFactor(0).conclude());
    }

    @Test
    void shouldFailClearlyWhenRanksRunDifferentLayers() {
        List<String> errors = cluster.run(comm -> {
            // rank 1's layer is wider: the ranks' step descriptions disagree
            int d = comm.rank() == 0 ? D : D + 1;
            MultiLayerNetwork net = MoeTestNets.mln(moe(4, 2, RouterType.TOP_K), d, 3, 1);
            MoeModels.useCommunicator(net, comm);
            try {
                net.getLayer(0).activate(Nd4j.rand(DataType.DOUBLE, 4, d), false, LayerWorkspaceMgr.noWorkspaces());
                return "no error";
            } catch (IllegalStateException ex) {
                return ex.getMessage();
            } finally {
                MoeModels.useCommunicator(net, null);
            }
        });
        for (String m : errors) {
            assertTrue(m.contains("rank") && m.contains("d = "), m);
        }
    }

    @Test
    void shouldMoveRowsToOwnersAndBackWithEmptyBlocks() {
        // rank 0 routes its 3 tokens to expert 0 (its own): it sends rank 1 a block of zero rows;
        // rank 1 routes tokens to experts 0, 0, 1, 2: rows for both owners
        int experts = 3;
        List<String> failures = cluster.run(comm -> {
            MultiLayerNetwork net = MoeTestNets.mln(moe(experts, 1, RouterType.TOP_K), D, 3, 1);
            MoeModels.useCommunicator(net, comm, new ExpertParallel.Context().shadowing(false));
            try {
                int[] choice = comm.rank() == 0 ? new int[] {0, 0, 0} : new int[] {0, 1, 0, 2};
                double[] logits = new double[choice.length * experts];
                for (int n = 0; n < choice.length; n++) {
                    logits[n * experts + choice[n]] = 5;
                }
                RoutingPlan plan = RoutingPlan.route(logits, choice.length, experts, 1, Integer.MAX_VALUE,
                        TokenDropPolicy.BY_POSITION, true, 0, 0);
                ExpertExchange ex = ExpertExchange.open(((MoeLayerImpl) net.getLayer(0)).expertParallel(), 0, plan,
                        choice.length, D, DataType.DOUBLE, 0);
                // row i of this rank's dispatch order holds 100·rank + i in every column
                INDArray local = Nd4j.zeros(DataType.DOUBLE, plan.dispatched(), D);
                for (int i = 0; i < plan.dispatched(); i++) {
                    local.getRow(i).assign(100 * comm.rank() + i);
                }
                INDArray own = ex.toOwners(local, ExpertExchange.Phase.TOKENS);
                // rank 0 owns experts 0 and 2: e0 from rank 0 (0, 1, 2), e0 from rank 1 (dispatch 0, 1), e2 from rank 1
                // (dispatch 3); rank 1 owns expert 1: rank 1's dispatch row 2
                double[] expected = comm.rank() == 0 ? new double[] {0, 1, 2, 100, 101, 103} : new double[] {102};
                double[] got = own.getColumn(D - 1).toDoubleVector();
                INDArray back = Nd4j.zeros(DataType.DOUBLE, plan.dispatched(), D);
                ex.fromOwners(own.mul(2), ExpertExchange.Phase.OUTPUTS, back); // both ranks run both collectives
                if (!Arrays.equals(expected, got)) {
                    return "rank " + comm.rank() + " owns " + Arrays.toString(got);
                }
                return back.equals(local.mul(2)) ? "" : "rank " + comm.rank() + " got back " + back;
            } finally {
                MoeModels.useCommunicator(net, null);
            }
        });
        assertEquals(List.of("", ""), failures);
    }

    @Test
    void shouldRejectABlockOfAnotherPhase() {
        List<String> errors = cluster.run(comm -> {
            MultiLayerNetwork net = MoeTestNets.mln(moe(4, 1, RouterType.TOP_K), D, 3, 1);
            MoeModels.useCommunicator(net, comm, new ExpertParallel.Context().shadowing(false));
            ExpertParallel par = ((MoeLayerImpl) net.getLayer(0)).expertParallel();
            try {
                double[] logits = {1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0};
                RoutingPlan plan = RoutingPlan.route(logits, 3, 4, 1, Integer.MAX_VALUE, TokenDropPolicy.BY_POSITION,
                        true, 0, 0);
                ExpertExchange ex = ExpertExchange.open(par, 0, plan, 3, D, DataType.DOUBLE, 0);
                // rank 1 sends its tokens as if they were outputs: the receivers must notice
                ex.toOwners(Nd4j.rand(DataType.DOUBLE, 3, D), comm.rank() == 0 ? ExpertExchange.Phase.TOKENS
                        : ExpertExchange.Phase.OUTPUTS);
                return "no error";
            } catch (IllegalStateException e) {
                return e.getMessage();
            } finally {
                MoeModels.useCommunicator(net, null);
            }
        });
        for (String m : errors) {
            assertTrue(m.contains("the block from rank") && m.contains("disagree"), m);
        }
    }

    @Test
    void shouldShadowOnlyExpertsAboveTheThreshold() {
        assertArrayEquals(new boolean[] {true, false, false, false},
                ExpertExchange.shadow(new long[] {10, 2, 2, 2}, 2, true, 2.0));
        assertArrayEquals(new boolean[4], ExpertExchange.shadow(new long[] {10, 2, 2, 2}, 1, true, 2.0));
        assertArrayEquals(new boolean[4], ExpertExchange.shadow(new long[] {10, 2, 2, 2}, 2, false, 2.0));
        assertArrayEquals(new boolean[4], ExpertExchange.shadow(new long[4], 2, true, 0.5));
    }

    /** Examples [from, to) of a [b, d] or [b, d, T] array, as a fresh array. */
    private static INDArray rows(INDArray a, int from, int to) {
        if (a.rank() == 2) {
            return a.get(interval(from, to)).dup();
        }
        return a.get(interval(from, to), NDArrayIndex.all(), NDArrayIndex.all()).dup();
    }

    private static org.nd4j.linalg.indexing.INDArrayIndex interval(int from, int to) {
        return org.nd4j.linalg.indexing.NDArrayIndex.interval(from, to);
    }
}
