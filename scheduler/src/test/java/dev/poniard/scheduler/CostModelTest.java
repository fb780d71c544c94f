package dev.poniard.scheduler;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;

import org.junit.jupiter.api.Test;

class CostModelTest {

    @Test
    void shouldUseTheHintUntilTheFirstObservation() {
        CostModel m = new CostModel(0.5);
        assertEquals(777, m.estimateNs("potrf", Processor.Kind.CPU, 777));
        assertEquals(CostModel.DEFAULT_ESTIMATE_NS, m.estimateNs("potrf", Processor.Kind.CPU, -1));
        m.observe("potrf", Processor.Kind.CPU, 1_000);
        assertEquals(1_000, m.estimateNs("potrf", Processor.Kind.CPU, 777));
    }

    @Test
    void shouldMoveTowardsNewObservationsByAlpha() {
        CostModel m = new CostModel(0.5);
        m.observe("gemm", Processor.Kind.CPU, 1_000);
        m.observe("gemm", Processor.Kind.CPU, 3_000);
        assertEquals(2_000, m.estimateNs("gemm", Processor.Kind.CPU, -1));
        m.observe("gemm", Processor.Kind.CPU, 2_000);
        assertEquals(2_000, m.estimateNs("gemm", Processor.Kind.CPU, -1));
        assertEquals(3, m.observations("gemm", Processor.Kind.CPU));
    }

    @Test
    void shouldKeepProcessorKindsAndSignaturesApart() {
        CostModel m = new CostModel();
        m.observe(String.class, Processor.Kind.CPU, 5_000);
        assertEquals(0, m.observations(String.class, Processor.Kind.GPU));
        assertEquals(5_000, m.estimateNs(String.class, Processor.Kind.CPU, -1));
        assertEquals(0, m.observations(Integer.class, Processor.Kind.CPU));
    }

    @Test
    void shouldRejectAnAlphaOutsideTheUnitInterval() {
        assertThrows(IllegalArgumentException.class, () -> new CostModel(0));
        assertThrows(IllegalArgumentException.class, () -> new CostModel(1.5));
    }
}
