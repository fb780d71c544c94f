package dev.poniard.samples.cli;

import dev.poniard.samples.sim.Studies;
import dev.poniard.scheduler.PlacementPolicy;
import dev.poniard.scheduler.comm.Algorithm;
import dev.poniard.scheduler.sim.SimDag;
import dev.poniard.scheduler.sim.SimResult;
import dev.poniard.scheduler.sim.VirtualCluster;
import dev.poniard.scheduler.sim.Workloads;
import java.io.PrintWriter;
import java.nio.file.Path;
import java.util.concurrent.Callable;
import picocli.CommandLine;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;
import picocli.CommandLine.Parameters;

/**
 * {@code ./poniard simulate <study>}: the scheduler's own policies on virtual clusters of 8 to 1024
 * devices, in virtual time.
 */
@Command(name = "simulate", mixinStandardHelpOptions = true,
        description = {"Runs a DAG family on a virtual cluster with the scheduler's own queues and policies.",
                "Studies: dp-allreduce (ring vs tree all-reduce, 8..1024 devices), moe (static vs dynamic expert",
                "scheduling at 8, 16, 64 devices), pipeline (GPipe vs 1F1B), cholesky (N = 65536 on 64 nodes)."})
public final class SimulateCommand implements Callable<Integer> {
    @Parameters(index = "0", paramLabel = "STUDY", description = "dp-allreduce, moe, pipeline or cholesky")
    String study;

    @Option(names = "--svg", paramLabel = "FILE", description = "dp-allreduce: also draw the scaling curve as SVG.")
    Path svg;

    @Option(names = "--trace", paramLabel = "FILE",
            description = "pipeline, cholesky: write the simulated run as a Chrome trace.")
    Path trace;

    @Option(names = "--cluster", paramLabel = "FILE",
            description = "cholesky: the virtual cluster as JSON (default: 64 nodes, 1 TFLOP/s each, 25 GB/s).")
    Path cluster;

    @Option(names = "--max-devices", defaultValue = "1024", description = "dp-allreduce: largest cluster (default ${DEFAULT-VALUE}).")
    int maxDevices;

    @CommandLine.Spec
    CommandLine.Model.CommandSpec spec;

    @Override
    public Integer call() throws Exception {
        PrintWriter out = spec.commandLine().getOut();
        switch (study) {
            case "dp-allreduce":
                dataParallel(out);
                break;
            case "moe":
                moe(out);
                break;
            case "pipeline":
                pipeline(out);
                break;
            case "cholesky":
                cholesky(out);
                break;
            default:
                throw new CommandLine.ParameterException(spec.commandLine(),
                        "unknown study '" + study + "'; choose dp-allreduce, moe, pipeline or cholesky");
        }
        out.flush();
        return 0;
    }

    private void dataParallel(PrintWriter out) throws Exception {
        if (maxDevices < 8) {
            throw new CommandLine.ParameterException(spec.commandLine(), "--max-devices must be >= 8, got " + maxDevices);
        }
        out.printf("data-parallel step: %d MiB of gradients in %d buckets, %.0f ms compute per device, 8 GPUs per node%n",
                Studies.DP_GRADIENT_BYTES >> 20, Studies.DP_BUCKETS, Studies.DP_COMPUTE_NS / 1e6);
        out.printf("%8s %14s %10s %14s %10s %14s %10s%n", "devices", "ring step ms", "ring eff", "tree step ms",
                "tree eff", "best step ms", "best eff");
        double base = Workloads.dataParallelComputeNs(Studies.DP_COMPUTE_NS);
        int count = Integer.numberOfTrailingZeros(Integer.highestOneBit(maxDevices)) - 2;
        double[] xs = new double[count], ring = new double[count], tree = new double[count];
        int k = 0;
        for (int d = 8; d <= maxDevices; d *= 2, k++) {
            double r = Studies.dataParallel(d, Algorithm.RING).makespanNs();
            double t = Studies.dataParallel(d, Algorithm.BINOMIAL_TREE).makespanNs();
            double b = Studies.dataParallel(d, Algorithm.AUTO).makespanNs();
            xs[k] = d;
            ring[k] = base / r;
            tree[k] = base / t;
            out.printf("%8d %14.2f %10.3f %14.2f %10.3f %14.2f %10.3f%n", d, r / 1e6, base / r, t / 1e6, base / t,
                    b / 1e6, base / b);
        }
        if (svg != null) {
            dev.poniard.samples.sim.Studies.scalingChart(svg, xs, ring, tree);
            out.println("chart written to " + svg);
        }
    }

    private void moe(PrintWriter out) {
        out.printf("MoE layer, top-%d, Zipf skew %.1f, %d tokens per device, chunks of %d tokens%n", Studies.MOE_K,
                Studies.MOE_SKEW, Studies.MOE_TOKENS_PER_DEVICE, Studies.MOE_CHUNK);
        out.printf("%8s %8s %18s %18s %10s%n", "devices", "experts", "static / bound", "dynamic / bound", "speedup");
        for (int[] pe : new int[][] {{8, 16}, {16, 16}, {64, 64}}) {
            Studies.MoeRun r = Studies.moe(pe[0], pe[1], 1);
            out.printf("%8d %8d %18.3f %18.3f %10.2f%n", pe[0], pe[1], r.staticNs() / r.lowerBoundNs(),
                    r.dynamicNs() / r.lowerBoundNs(), r.speedup());
        }
    }

    private void pipeline(PrintWriter out) throws Exception {
        int stages = 4;
        out.printf("pipeline, %d stages, backward = 2 x forward; bubble = idle share of the stage devices%n", stages);
        out.printf("%8s %10s %10s %10s %18s%n", "micro", "theory", "GPipe", "1F1B", "1F1B/GPipe memory");
        for (int m : new int[] {4, 8, 16, 32}) {
            SimDag g = Workloads.pipeline(stages, m, 1e6, 8L << 20, Workloads.PipelineSchedule.GPIPE);
            SimDag f = Workloads.pipeline(stages, m, 1e6, 8L << 20, Workloads.PipelineSchedule.ONE_F_ONE_B);
            VirtualCluster c = Studies.gpus(stages);
            SimResult rg = Studies.simulate(c, PlacementPolicy.eft(), g, false, false);
            SimResult rf = Studies.simulate(c, PlacementPolicy.eft(), f, false, trace != null && m == 8);
            out.printf("%8d %10.3f %10.3f %10.3f %18.3f%n", m, (stages - 1.0) / (m + stages - 1),
                    Workloads.bubbleFraction(rg, stages), Workloads.bubbleFraction(rf, stages),
                    rf.maxPeakMemoryBytes() / (double) rg.maxPeakMemoryBytes());
            if (trace != null && m == 8) {
                rf.trace().writeChromeJson(trace);
            }
        }
        if (trace != null) {
            out.println("1F1B trace (8 micro-batches) written to " + trace);
        }
    }

    private void cholesky(PrintWriter out) throws Exception {
        int n = 65536, tile = 1024;
        VirtualCluster c = cluster != null ? VirtualCluster.fromJson(cluster) : Studies.choleskyCluster(64);
        int p = (int) Math.round(Math.sqrt(c.devices()));
        while (c.devices() % p != 0) {
            p--;
        }
        int q = c.devices() / p;
        double flopsPerNs = 1000 * c.device().speed();
        SimDag dag = Workloads.tileCholesky(n, tile, p, q, flopsPerNs);
        SimResult r = Studies.simulate(c, PlacementPolicy.eft(), dag, true, trace != null);
        double tflops = Workloads.choleskyFlops(n) / r.makespanNs() / 1e3;
        out.printf("tile Cholesky N=%d, tile %d (%,d tasks), %d devices on a %dx%d block-cyclic grid%n", n, tile,
                dag.size(), c.devices(), p, q);
        out.printf("makespan %.2f s, %.1f TFLOP/s = %.1f%% of peak, %.1f GB between nodes, mean utilization %.1f%%%n",
                r.makespanNs() / 1e9, tflops, 100 * tflops / (c.devices() * flopsPerNs / 1e3),
                r.interNodeBytes() / 1e9, 100 * r.meanUtilization());
        out.printf("simulated %,d events at %.2f million per second%n", r.events(), r.eventsPerSecond() / 1e6);
        if (trace != null) {
            r.trace().writeChromeJson(trace);
            out.println("trace written to " + trace);
        }
    }
}
