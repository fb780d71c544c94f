package dev.poniard.scheduler.comm;

import dev.poniard.scheduler.comm.launch.RankEnvironment;
import org.junit.jupiter.api.Test;

import java.util.Map;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

class EnvironmentAndCostModelTest {

    @Test
    void shouldDiscoverRanksFromEveryLauncher() {
        RankEnvironment e = RankEnvironment.detect(Map.of("PONIARD_RANK", "2", "PONIARD_SIZE", "4",
            "PONIARD_COORDINATOR", "10.0.0.1:4000", "PONIARD_LAUNCH_ID", "abc"));
        assertEquals(new RankEnvironment(2, 4, 2, "10.0.0.1", 4000, "abc", "poniard"), e);
        e = RankEnvironment.detect(Map.of("SLURM_PROCID", "5", "SLURM_NTASKS", "8", "SLURM_LOCALID", "1",
            "SLURM_JOB_ID", "77", "SLURM_STEP_ID", "0", "MASTER_ADDR", "node01", "MASTER_PORT", "29600"));
        assertEquals(new RankEnvironment(5, 8, 1, "node01", 29600, "slurm77.0", "slurm"), e);
        e = RankEnvironment.detect(Map.of("OMPI_COMM_WORLD_RANK", "1", "OMPI_COMM_WORLD_SIZE", "2",
            "OMPI_COMM_WORLD_LOCAL_RANK", "1"));
        assertEquals(1, e.rank());
        assertEquals("openmpi", e.source());
        assertEquals(RankEnvironment.DEFAULT_PORT, e.coordinatorPort());
        e = RankEnvironment.detect(Map.of("RANK", "3", "WORLD_SIZE", "4", "LOCAL_RANK", "0", "MASTER_ADDR", "h",
            "MASTER_PORT", "1234", "TORCHELASTIC_RUN_ID", "r1"));
        assertEquals(new RankEnvironment(3, 4, 0, "h", 1234, "torchr1", "torchrun"), e);
        assertEquals("none", RankEnvironment.detect(Map.of()).source());
    }

    @Test
    void shouldRejectBadEnvironmentsWithTheBadValue() {
        final IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
            () -> RankEnvironment.detect(Map.of("PONIARD_RANK", "4", "PONIARD_SIZE", "4")));
        assertTrue(e.getMessage().contains("4"), e.getMessage());
        assertThrows(IllegalArgumentException.class,
            () -> RankEnvironment.detect(Map.of("RANK", "x", "WORLD_SIZE", "4")));
        assertThrows(IllegalArgumentException.class,
            () -> RankEnvironment.detect(Map.of("PONIARD_RANK", "0", "PONIARD_SIZE", "1", "PONIARD_COORDINATOR", "nope")));
    }

    @Test
    void shouldValidateContextsWithTheBadValueInTheMessage() {
        final IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
            () -> new Communicator.Context().rank(0).size(1).termLength(1000).conclude());
        assertTrue(e.getMessage().contains("1000"), e.getMessage());
        final IllegalArgumentException f = assertThrows(IllegalArgumentException.class,
            () -> new Communicator.Context().rank(0).size(1).heartbeatIntervalMs(500).failureTimeoutMs(600).conclude());
        assertTrue(f.getMessage().contains("600"), f.getMessage());
    }

    @Test
    void shouldChooseLatencyAlgorithmsForSmallAndBandwidthAlgorithmsForLargeMessages() {
        final CostModel m = new CostModel(5e-6, 1 / 4e9, 1 / 2e9);
        assertEquals(Algorithm.RECURSIVE_DOUBLING, m.chooseAllReduce(8, 64));
        final Algorithm large = m.chooseAllReduce(8, 256L << 20);
        assertTrue(large == Algorithm.RING || large == Algorithm.RABENSEIFNER, large.toString());
        assertEquals(Algorithm.RABENSEIFNER, m.chooseAllReduce(64, 1 << 20));
        assertEquals(Algorithm.BINOMIAL_TREE, m.chooseBroadcast(16, 8));
        assertEquals(Algorithm.CHAIN, m.chooseBroadcast(4, 64L << 20));
        assertTrue(m.chainSegments(4, 64L << 20) > 1);
        assertThrows(IllegalArgumentException.class, () -> new CostModel(-1, 0, 0));
    }

    @Test
    void shouldFitAlphaAndBetaByLeastSquaresOverTheExchangeTimes() {
        // y = 3 + 2x with residuals +1, -1, -1, +1 around it: the fitted slope is 2 (the first two points alone say 0)
        double[] fit = CostModel.fitLine(new int[] {1, 2, 3, 4}, new double[] {6, 6, 8, 12});
        assertEquals(3.0, fit[0], 1e-12);
        assertEquals(2.0, fit[1], 1e-12);
        assertEquals(-0.5, CostModel.fitLine(new int[] {0, 2}, new double[] {1, 0})[1], 1e-12);
    }
}
