package dev.poniard.scheduler.sim;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.poniard.scheduler.sim.CollectiveModel.Algorithm;
import dev.poniard.scheduler.sim.CollectiveModel.Op;
import org.junit.jupiter.api.Test;

class CollectiveModelTest {
    private static final LinkSpec LINK = new LinkSpec(10, 1); // 10 us, 1 byte per ns

    @Test
    void shouldMatchTheRingFormulaByHand() {
        // n = 4, m = 4000 B, alpha 10000 ns, beta 1 ns/B, gamma 0.5 ns/B:
        // 2*3*10000 + 2*(3/4)*4000 + (3/4)*4000*0.5 = 60000 + 6000 + 1500
        assertEquals(67_500, CollectiveModel.timeNs(Op.ALL_REDUCE, Algorithm.RING, 4, 4000, LINK, 0.5), 1e-9);
    }

    @Test
    void shouldCostNothingOnOneRank() {
        assertEquals(0, CollectiveModel.timeNs(Op.ALL_REDUCE, Algorithm.RING, 1, 1 << 20, LINK, 1));
    }

    @Test
    void shouldPreferLatencyOptimalAlgorithmsForSmallMessagesAndBandwidthOptimalForLarge() {
        Algorithm small = CollectiveModel.best(Op.ALL_REDUCE, 64, 8, LINK, 0.1);
        Algorithm large = CollectiveModel.best(Op.ALL_REDUCE, 64, 256L << 20, LINK, 0.1);
        assertEquals(Algorithm.RECURSIVE_DOUBLING, small);
        assertTrue(large == Algorithm.RING || large == Algorithm.RABENSEIFNER, large.toString());
    }

    @Test
    void shouldRefuseAnAlgorithmThatDoesNotImplementTheOp() {
        assertThrows(IllegalArgumentException.class,
                () -> CollectiveModel.timeNs(Op.BROADCAST, Algorithm.RING, 4, 10, LINK, 0));
    }
}
