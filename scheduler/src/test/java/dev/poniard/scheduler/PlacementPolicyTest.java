package dev.poniard.scheduler;

import static org.junit.jupiter.api.Assertions.assertEquals;

import org.junit.jupiter.api.Test;

/** Placement decisions against a fake view: no threads involved. */
class PlacementPolicyTest {

    private record Task(Scope scope, long estimateNs) implements PlacementPolicy.ReadyTask {
        @Override
        public int priority() {
            return 0;
        }
    }

    private record Cpu(int id) implements Processor {
        @Override
        public String name() {
            return "cpu-" + id;
        }

        @Override
        public Kind kind() {
            return Kind.CPU;
        }

        @Override
        public int memoryDomain() {
            return 0;
        }
    }

    /** Processors whose backlogs are given. */
    private record View(long... backlogNs) implements PlacementPolicy.SchedulingView {
        @Override
        public int processorCount() {
            return backlogNs.length;
        }

        @Override
        public Processor processor(int index) {
            return new Cpu(index);
        }

        @Override
        public long estimatedFinishNs(PlacementPolicy.ReadyTask task, int index) {
            return backlogNs[index] + task.estimateNs();
        }
    }

    private static final Task ANY = new Task(Scope.any(), 100);

    @Test
    void shouldPlaceOnTheEarliestFinishingProcessor() {
        assertEquals(2, PlacementPolicy.eft().place(ANY, new View(500, 300, 100), -1));
    }

    @Test
    void shouldBreakEftTiesTowardsTheCurrentProcessor() {
        assertEquals(1, PlacementPolicy.eft().place(ANY, new View(100, 100), 1));
        assertEquals(0, PlacementPolicy.eft().place(ANY, new View(100, 100), -1));
    }

    @Test
    void shouldRespectScopeUnderEveryPolicy() {
        Task only1 = new Task(Scope.processors(1), 100);
        View view = new View(0, 1_000_000, 0);
        assertEquals(1, PlacementPolicy.eft().place(only1, view, 0));
        assertEquals(1, PlacementPolicy.workStealing().place(only1, view, 0));
        assertEquals(1, PlacementPolicy.fifo().place(only1, view, 0));
    }

    @Test
    void shouldKeepWorkLocalUnderWorkStealing() {
        assertEquals(2, PlacementPolicy.workStealing().place(ANY, new View(9, 0, 9_999), 2));
    }

    @Test
    void shouldDealExternalWorkRoundRobinUnderWorkStealing() {
        PlacementPolicy ws = PlacementPolicy.workStealing();
        View view = new View(0, 0, 0);
        int a = ws.place(ANY, view, -1), b = ws.place(ANY, view, -1), c = ws.place(ANY, view, -1);
        assertEquals(3, java.util.Set.of(a, b, c).size());
    }

    @Test
    void shouldUseTheSharedQueueUnderFifo() {
        assertEquals(PlacementPolicy.SHARED_QUEUE, PlacementPolicy.fifo().place(ANY, new View(0, 0), 1));
    }
}
