package dev.poniard.scheduler.sim;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.poniard.scheduler.PlacementPolicy;
import dev.poniard.scheduler.Processor;
import dev.poniard.scheduler.Scope;
import dev.poniard.scheduler.comm.Algorithm;
import org.junit.jupiter.api.Test;

/** Small cases whose results are computed by hand. */
class SimulatorTest {
    private static final double US = 1_000;

    private static SimResult run(VirtualCluster cluster, PlacementPolicy policy, SimDag dag) {
        return new Simulator(new Simulator.Context().cluster(cluster).policy(policy).trace(true)).run(dag);
    }

    /** Two nodes of one device each, 10 us latency and 1 GB/s between them. */
    private static VirtualCluster twoNodes() {
        return new VirtualCluster(2, 1, new VirtualCluster.DeviceSpec(Processor.Kind.GPU, 1.0, 1L << 30, 1),
                new LinkSpec(1, 100), new LinkSpec(10, 1), 10);
    }

    @Test
    void shouldRunAChainOnOneDeviceWithoutTransfers() {
        SimDag dag = new SimDag();
        int a = dag.task("a", 10 * US, 1 << 20);
        int b = dag.task("b", 20 * US, 1 << 20, a);
        dag.task("c", 30 * US, 0, b);
        SimResult r = run(twoNodes(), PlacementPolicy.eft(), dag);
        assertEquals(60 * US, r.makespanNs(), 1e-6);
        assertEquals(0, r.interNodeBytes());
    }

    @Test
    void shouldSpreadIndependentTasksAcrossDevices() {
        SimDag dag = new SimDag();
        dag.task("a", 100 * US, 0);
        dag.task("b", 100 * US, 0);
        assertEquals(100 * US, run(VirtualCluster.cpuNode(2), PlacementPolicy.eft(), dag).makespanNs(), 1e-6);
        assertEquals(200 * US, run(VirtualCluster.cpuNode(1), PlacementPolicy.eft(), dag).makespanNs(), 1e-6);
    }

    @Test
    void shouldChargeAlphaPlusBytesOverBetaBetweenNodes() {
        SimDag dag = new SimDag();
        int a = dag.task("a", 5 * US, 1_000_000, 0, Scope.processors(0));
        dag.task("b", 7 * US, 0, 0, Scope.processors(1), a);
        SimResult r = run(twoNodes(), PlacementPolicy.eft(), dag);
        // 5 us + (10 us + 1e6 B / 1 GB/s = 1000 us) + 7 us
        assertEquals(5 * US + 10 * US + 1_000 * US + 7 * US, r.makespanNs(), 1e-6);
        assertEquals(1_000_000, r.interNodeBytes());
    }

    @Test
    void shouldPreferMovingWorkToItsDataUnderEft() {
        // b may run anywhere: next to a's output it finishes at 12 us; across the slow link much later
        SimDag dag = new SimDag();
        int a = dag.task("a", 5 * US, 1_000_000, 0, Scope.processors(1));
        dag.task("b", 7 * US, 0, a);
        assertEquals(12 * US, run(twoNodes(), PlacementPolicy.eft(), dag).makespanNs(), 1e-6);
    }

    @Test
    void shouldOverlapAPrefetchedInputWithTheWaitInTheQueue() {
        // c is ready at 0; device 0 is busy until 120 us, device 1 until 100 us and c's 40 kB input reaches
        // device 1 at 10 + 40 = 50 us, while c waits there anyway: on device 1 c ends at 110 us, on device 0 at 130
        // (charging the transfer on top of the wait would wrongly say 160 us and pick device 0).
        SimDag dag = new SimDag();
        int data = dag.task("data", 0, 40_000, 10, Scope.processors(0));
        dag.task("b0", 120 * US, 0, 0, Scope.processors(0));
        dag.task("b1", 100 * US, 0, 0, Scope.processors(1));
        dag.task("c", 10 * US, 0, data);
        SimResult r = run(twoNodes(), PlacementPolicy.eft(), dag);
        assertEquals(120 * US, r.makespanNs(), 1e-6);
        assertEquals(40_000, r.interNodeBytes());
    }

    @Test
    void shouldScheduleLongestTasksFirstOnKnownDags() {
        // three independent tasks 30, 20, 10 on two devices: critical-path ranks give LPT, makespan 30
        SimDag dag = new SimDag();
        dag.task("short", 10 * US, 0);
        dag.task("medium", 20 * US, 0);
        dag.task("long", 30 * US, 0);
        VirtualCluster one = VirtualCluster.cpuNode(1);
        SimResult r = run(VirtualCluster.cpuNode(2), PlacementPolicy.eft(), dag);
        assertEquals(30 * US, r.makespanNs(), 1e-6);
        assertEquals(60 * US, run(one, PlacementPolicy.eft(), dag).makespanNs(), 1e-6);
    }

    @Test
    void shouldPriceCollectivesWithTheModel() {
        VirtualCluster cluster = VirtualCluster.gpuCluster(1, 4);
        SimDag dag = new SimDag();
        int[] group = {0, 1, 2, 3};
        dag.collective("allreduce", SimDag.Collective.ALL_REDUCE, Algorithm.RING, 1 << 24, group);
        // ring: 2(n-1)α + 2(n-1)/n·mβ + (n-1)/n·mγ with α = 3 us, β = 1/150 ns/B, γ = 1/500 ns/B
        double m = 1 << 24;
        double expected = 2 * 3 * 3_000 + 2 * 0.75 * m / 150 + 0.75 * m / 500;
        assertEquals(expected, run(cluster, PlacementPolicy.eft(), dag).makespanNs(), 1e-3);
    }

    @Test
    void shouldSerialiseCollectivesThatShareNics() {
        VirtualCluster cluster = VirtualCluster.gpuCluster(2, 1);
        SimDag dag = new SimDag();
        int[] group = {0, 1};
        dag.collective("ar1", SimDag.Collective.ALL_REDUCE, Algorithm.RING, 1 << 20, group);
        dag.collective("ar2", SimDag.Collective.ALL_REDUCE, Algorithm.RING, 1 << 20, group);
        double one = Simulator.collectiveNs(SimDag.Collective.ALL_REDUCE, Algorithm.RING, 2, 1 << 20,
                cluster.interNode(), cluster.gammaNsPerByte());
        assertEquals(2 * one, run(cluster, PlacementPolicy.eft(), dag).makespanNs(), 1e-3);
    }

    @Test
    void shouldTrackPeakMemoryOfLiveOutputs() {
        SimDag dag = new SimDag();
        int a = dag.task("a", US, 100, 0, Scope.processors(0));
        int b = dag.task("b", US, 200, 0, Scope.processors(0), a);
        dag.task("c", US, 0, 0, Scope.processors(0), a, b);
        SimResult r = run(VirtualCluster.cpuNode(1), PlacementPolicy.eft(), dag);
        assertEquals(300, r.peakMemoryBytes(0));
    }

    @Test
    void shouldBeDeterministicForASeed() {
        SimDag dag = new SimDag();
        for (int i = 0; i < 200; i++) {
            dag.task("t", 10 * US, 0);
        }
        Simulator.Context ctx = new Simulator.Context().cluster(VirtualCluster.cpuNode(3)).noiseSigma(0.5);
        double first = new Simulator(ctx.seed(7)).run(dag).makespanNs();
        assertEquals(first, new Simulator(ctx.seed(7)).run(dag).makespanNs());
        assertNotEquals(first, new Simulator(ctx.seed(8)).run(dag).makespanNs());
    }

    @Test
    void shouldRunTheSamePoliciesAsTheScheduler() {
        // tasks ready at the start are queued before the device starts: EFT's queues honour priorities,
        // FIFO's shared queue does not
        SimDag dag = new SimDag();
        dag.task("low", 10 * US, 0, -5, Scope.any());
        dag.task("high", 10 * US, 0, 5, Scope.any());
        Simulator.Context ctx = new Simulator.Context().cluster(VirtualCluster.cpuNode(1)).trace(true)
                .criticalPathPriorities(false);
        SimResult fifo = new Simulator(ctx.policy(PlacementPolicy.fifo())).run(dag);
        SimResult eft = new Simulator(ctx.policy(PlacementPolicy.eft())).run(dag);
        assertEquals(0, startOf(fifo, "low"), 1e-6);
        assertEquals(0, startOf(eft, "high"), 1e-6);
        assertEquals(10 * US, startOf(eft, "low"), 1e-6);
        assertEquals(2, eft.trace().records().size());
    }

    private static double startOf(SimResult r, String name) {
        return r.trace().records().stream().filter(x -> x.name().equals(name)).findFirst().orElseThrow().startNs();
    }

    @Test
    void shouldRefuseATaskNoDeviceMayRun() {
        SimDag dag = new SimDag();
        dag.task("lost", US, 0, 0, Scope.processors(9));
        IllegalStateException e = assertThrows(IllegalStateException.class,
                () -> run(VirtualCluster.cpuNode(2), PlacementPolicy.eft(), dag));
        assertTrue(e.getMessage().contains("lost"), e.getMessage());
    }

    @Test
    void shouldLetTheCommunicatorsModelChooseUnderAuto() {
        LinkSpec link = new LinkSpec(10, 1);
        double auto = Simulator.collectiveNs(SimDag.Collective.ALL_REDUCE, Algorithm.AUTO, 64, 8, link, 0.1);
        double doubling = Simulator.collectiveNs(SimDag.Collective.ALL_REDUCE, Algorithm.RECURSIVE_DOUBLING, 64, 8,
                link, 0.1);
        assertEquals(doubling, auto, 1e-6, "small messages: recursive doubling");
        assertEquals(0, Simulator.collectiveNs(SimDag.Collective.ALL_REDUCE, Algorithm.RING, 1, 1 << 20, link, 1));
        assertThrows(IllegalArgumentException.class,
                () -> Simulator.collectiveNs(SimDag.Collective.BROADCAST, Algorithm.RING, 4, 10, link, 0));
    }

    @Test
    void shouldRejectInputsAddedAfterTheirConsumer() {
        SimDag dag = new SimDag();
        assertThrows(IllegalArgumentException.class, () -> dag.task("x", US, 0, 3));
    }
}
