package dev.poniard.samples.sim;

import dev.poniard.scheduler.PlacementPolicy;
import dev.poniard.scheduler.Processor;
import dev.poniard.scheduler.comm.Algorithm;
import dev.poniard.scheduler.sim.LinkSpec;
import dev.poniard.scheduler.sim.SimDag;
import dev.poniard.scheduler.sim.SimResult;
import dev.poniard.scheduler.sim.Simulator;
import dev.poniard.scheduler.sim.VirtualCluster;
import dev.poniard.scheduler.sim.Workloads;

/** The parameters of the simulation studies, shared by {@code ./poniard simulate} and {@code bench sim}. */
public final class Studies {
    private Studies() {
    }

    /** ResNet-50-like data-parallel step: 100 MB of fp32 gradients in 4 buckets, 120 ms of compute. */
    public static final long DP_GRADIENT_BYTES = 100L << 20;
    public static final double DP_COMPUTE_NS = 120e6;
    public static final int DP_BUCKETS = 4;

    /** One MoE layer per issue #8: d = 256, d_ff = 1024, top-2, Zipf skew 1.2, 2,048 tokens per device. */
    public static final int MOE_K = 2;
    public static final double MOE_SKEW = 1.2;
    public static final int MOE_TOKENS_PER_DEVICE = 2048;
    public static final double MOE_TOKEN_NS = 100;
    public static final long MOE_WEIGHT_BYTES = 2L * 256 * 1024 * 4;
    public static final int MOE_CHUNK = 256;

    public static SimResult simulate(VirtualCluster cluster, PlacementPolicy policy, SimDag dag, boolean ranks,
                                     boolean trace) {
        return new Simulator(new Simulator.Context().cluster(cluster).policy(policy).criticalPathPriorities(ranks)
                .trace(trace)).run(dag);
    }

    /** A cluster of {@code devices} GPUs, 8 per node (fewer than 8: one node). */
    public static VirtualCluster gpus(int devices) {
        int perNode = Math.min(devices, 8);
        return VirtualCluster.gpuCluster(devices / perNode, perNode);
    }

    /** Step time of the data-parallel step on {@code devices} devices with the given all-reduce. */
    public static SimResult dataParallel(int devices, Algorithm alg) {
        return simulate(gpus(devices), PlacementPolicy.eft(),
                Workloads.dataParallelStep(devices, DP_COMPUTE_NS, DP_GRADIENT_BYTES, DP_BUCKETS, alg), true, false);
    }

    /** Result of one MoE comparison: makespans of the static and dynamic schedules and the lower bound. */
    public record MoeRun(double staticNs, double dynamicNs, double lowerBoundNs) {
        public double speedup() {
            return staticNs / dynamicNs;
        }
    }

    public static MoeRun moe(int devices, int experts, long seed) {
        int[] counts = Workloads.zipfRouting(MOE_TOKENS_PER_DEVICE * devices, experts, MOE_K, MOE_SKEW, seed);
        VirtualCluster cluster = gpus(devices);
        SimResult st = simulate(cluster, PlacementPolicy.eft(),
                Workloads.moeLayer(counts, devices, MOE_TOKEN_NS, MOE_WEIGHT_BYTES, false, MOE_CHUNK), false, false);
        SimResult dyn = simulate(cluster, PlacementPolicy.eft(),
                Workloads.moeLayer(counts, devices, MOE_TOKEN_NS, MOE_WEIGHT_BYTES, true, MOE_CHUNK), true, false);
        // a static expert is indivisible; the dynamic schedule's chunks are: each is judged against its own bound
        double bound = Workloads.moeLowerBoundNs(counts, devices, MOE_TOKEN_NS, MOE_CHUNK);
        return new MoeRun(st.makespanNs(), dyn.makespanNs(), bound);
    }

    /** Draws data-parallel scaling efficiency against the number of devices. */
    public static void scalingChart(java.nio.file.Path file, double[] devices, double[] ring, double[] tree)
            throws java.io.IOException {
        new SvgChart("Data-parallel scaling efficiency (simulated)", "devices", "efficiency", true, 1.0)
                .series("ring all-reduce", devices, ring)
                .series("binomial-tree all-reduce", devices, tree)
                .write(file);
    }

    /** A CPU cluster node for the Cholesky study: 1 TFLOP/s per node, 25 GB/s and 8 us between nodes. */
    public static VirtualCluster choleskyCluster(int nodes) {
        return new VirtualCluster(nodes, 1, new VirtualCluster.DeviceSpec(Processor.Kind.CPU, 1.0, 256L << 30, 2),
                new LinkSpec(0.5, 20), new LinkSpec(8, 25), 10);
    }
}
