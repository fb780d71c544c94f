package dev.poniard.moe;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import org.junit.jupiter.api.Test;

class RoutingPlanTest {
    private static RoutingPlan route(double[] logits, int n, int e, int k, int capacity, TokenDropPolicy p) {
        return RoutingPlan.route(logits, n, e, k, capacity, p, true, 0.01, 0.001);
    }

    @Test
    void shouldPickTheKLargestAndRenormaliseGates() {
        double[] logits = {0, 3, 1, 2};
        RoutingPlan plan = route(logits, 1, 4, 3, Integer.MAX_VALUE, TokenDropPolicy.BY_POSITION);
        assertEquals(1, plan.choice(0, 0));
        assertEquals(3, plan.choice(0, 1));
        assertEquals(2, plan.choice(0, 2));
        double z = Math.exp(3) + Math.exp(2) + Math.exp(1);
        assertEquals(Math.exp(3) / z, plan.gate(0, 0), 1e-12);
        assertEquals(1, plan.gate(0, 0) + plan.gate(0, 1) + plan.gate(0, 2), 1e-12);
        RoutingPlan one = route(logits, 1, 4, 1, Integer.MAX_VALUE, TokenDropPolicy.BY_POSITION);
        double all = z + 1;
        assertEquals(Math.exp(3) / all, one.gate(0, 0), 1e-12, "k = 1 keeps the raw probability (Switch)");
    }

    @Test
    void shouldDropByPositionOrByScore() {
        // 3 tokens all prefer expert 0, with rising confidence; capacity 1
        double[] logits = {1, 0, 2, 0, 3, 0};
        RoutingPlan byPos = route(logits, 3, 2, 1, 1, TokenDropPolicy.BY_POSITION);
        assertTrue(byPos.kept(0, 0));
        assertFalse(byPos.kept(1, 0));
        assertFalse(byPos.kept(2, 0));
        RoutingPlan byScore = route(logits, 3, 2, 1, 1, TokenDropPolicy.BY_SCORE);
        assertFalse(byScore.kept(0, 0));
        assertTrue(byScore.kept(2, 0));
        MoeMetrics m = MoeMetrics.of(byScore);
        assertEquals(2.0 / 3, m.dropRate(), 1e-12);
        assertEquals(1, m.deadExperts());
        assertArrayEquals(new int[] {3, 0}, m.routedPerExpert());
        assertArrayEquals(new int[] {1, 0}, m.keptPerExpert());
    }

    @Test
    void shouldGiveFirstChoicesPriorityOverSecondChoices() {
        // token 0: 1 then 0; token 1: 0 then 1; capacity 1 per expert: both first choices win
        double[] logits = {1, 2, 2, 1};
        RoutingPlan plan = route(logits, 2, 2, 2, 1, TokenDropPolicy.BY_POSITION);
        assertTrue(plan.kept(0, 0));
        assertTrue(plan.kept(1, 0));
        assertFalse(plan.kept(0, 1));
        assertFalse(plan.kept(1, 1));
        int[] slot0 = plan.slotPositions(0);
        int[] slot1 = plan.slotPositions(1);
        assertEquals(plan.dispatched(), slot1[0], "dropped: the zero row");
        assertEquals(1, plan.tokenAt(slot0[1]));
    }

    @Test
    void shouldMeasureBalance() {
        double[] logits = new double[8 * 4];
        for (int n = 0; n < 8; n++) {
            logits[n * 4 + n % 4] = 5;
        }
        MoeMetrics m = MoeMetrics.of(route(logits, 8, 4, 1, Integer.MAX_VALUE, TokenDropPolicy.BY_POSITION));
        assertEquals(1, m.maxOverMean(), 1e-12);
        assertEquals(0, m.coefficientOfVariation(), 1e-12);
        assertEquals(0, m.dropRate());
        assertEquals(0, m.deadExperts());
    }

    @Test
    void shouldRejectBadArguments() {
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> route(new double[4], 1, 4, 5, 1, TokenDropPolicy.BY_POSITION));
        assertTrue(e.getMessage().contains("k = 5"), e.getMessage());
        e = assertThrows(IllegalArgumentException.class, () -> route(new double[4], 1, 4, 1, -1, TokenDropPolicy.BY_POSITION));
        assertTrue(e.getMessage().contains("capacity must be >= 0"), e.getMessage());
        e = assertThrows(IllegalArgumentException.class, () -> route(new double[3], 1, 4, 1, 1, TokenDropPolicy.BY_POSITION));
        assertTrue(e.getMessage().contains("tokens * experts"), e.getMessage());
    }
}
