package dev.poniard.scheduler.sim;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.poniard.scheduler.PlacementPolicy;
import dev.poniard.scheduler.Processor;
import dev.poniard.scheduler.Scope;
import dev.poniard.scheduler.comm.Algorithm;
import java.util.Arrays;
import org.junit.jupiter.api.Test;

class WorkloadsTest {

    private static SimResult run(VirtualCluster c, SimDag dag, boolean ranks) {
        return new Simulator(new Simulator.Context().cluster(c).policy(PlacementPolicy.eft())
                .criticalPathPriorities(ranks)).run(dag);
    }

    @Test
    void shouldReachTheTheoreticalBubbleWithoutCommunication() {
        int s = 4, m = 8;
        double theory = (s - 1.0) / (m + s - 1);
        for (Workloads.PipelineSchedule schedule : Workloads.PipelineSchedule.values()) {
            SimResult r = run(VirtualCluster.cpuNode(s), Workloads.pipeline(s, m, 1e6, 0, schedule), false);
            assertEquals(theory, Workloads.bubbleFraction(r, s), 1e-9, schedule.toString());
        }
    }

    @Test
    void shouldHoldFewerActivationsUnderOneFOneB() {
        int s = 4, m = 16;
        VirtualCluster c = VirtualCluster.cpuNode(s);
        long gpipe = run(c, Workloads.pipeline(s, m, 1e6, 1 << 20, Workloads.PipelineSchedule.GPIPE), false)
                .maxPeakMemoryBytes();
        long oneFOneB = run(c, Workloads.pipeline(s, m, 1e6, 1 << 20, Workloads.PipelineSchedule.ONE_F_ONE_B), false)
                .maxPeakMemoryBytes();
        assertTrue(oneFOneB * (double) m / s <= gpipe * 1.2, "1F1B " + oneFOneB + " vs GPipe " + gpipe);
    }

    @Test
    void shouldBuildTheTileCholeskyTaskCount() {
        // 4x4 tiles: 4 potrf, 6 trsm, 6 syrk, 4 gemm
        assertEquals(20, Workloads.tileCholesky(4 * 64, 64, 2, 2, 1).size());
    }

    @Test
    void shouldCostNoCommunicationOnOneDevice() {
        SimDag dag = Workloads.dataParallelStep(1, 1e6, 1 << 20, 4, Algorithm.RING);
        assertEquals(Workloads.dataParallelComputeNs(1e6), run(VirtualCluster.cpuNode(1), dag, true).makespanNs(), 1e-3);
    }

    @Test
    void shouldRouteEveryTokenToKDistinctExperts() {
        int[] skewed = Workloads.zipfRouting(10_000, 8, 2, 1.2, 3);
        int[] uniform = Workloads.zipfRouting(10_000, 8, 2, 0, 3);
        assertEquals(20_000, Arrays.stream(skewed).sum());
        assertEquals(20_000, Arrays.stream(uniform).sum());
        assertTrue(skewed[0] > 2 * skewed[7], Arrays.toString(skewed));
        for (int c : uniform) {
            assertTrue(Math.abs(c - 2_500) < 250, Arrays.toString(uniform));
        }
    }

    @Test
    void shouldBeatTheStaticExpertScheduleUnderSkew() {
        int[] counts = Workloads.zipfRouting(2048 * 8, 16, 2, 1.2, 1);
        VirtualCluster c = VirtualCluster.gpuCluster(1, 8);
        double st = run(c, Workloads.moeLayer(counts, 8, 100, 1 << 20, false, 256), false).makespanNs();
        double dyn = run(c, Workloads.moeLayer(counts, 8, 100, 1 << 20, true, 256), true).makespanNs();
        double bound = Workloads.moeLowerBoundNs(counts, 8, 100, 256);
        assertTrue(st / bound > 2, "static " + st / bound);
        assertTrue(dyn / bound < 1.3, "dynamic " + dyn / bound);
    }

    @Test
    void shouldCopyAcrossTheNicOncePerNodeAndRelayInside() {
        VirtualCluster c = new VirtualCluster(2, 2, new VirtualCluster.DeviceSpec(Processor.Kind.GPU, 1, 1L << 30, 1),
                new LinkSpec(1, 100), new LinkSpec(10, 1), 10);
        SimDag dag = new SimDag();
        int w = dag.task("weights", 0, 1_000_000, 0, Scope.processors(0));
        dag.task("use2", 1_000, 0, 0, Scope.processors(2), w);
        dag.task("use3", 1_000, 0, 0, Scope.processors(3), w);
        SimResult r = run(c, dag, false);
        assertEquals(1_000_000, r.interNodeBytes());
        assertEquals(1_000_000, r.intraNodeBytes());
        // NIC: 10 us + 1 ms; then inside node 1: 1 us + 10 us; then 1 us of work
        assertEquals(1_010_000 + 11_000 + 1_000, r.makespanNs(), 1e-6);
    }
}
