package dev.poniard.scheduler;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.EnumSet;
import java.util.Set;
import org.junit.jupiter.api.Test;

class TaskStateTest {

    private static final Set<String> ALLOWED = Set.of(
            "PENDING->READY", "PENDING->FAILED", "PENDING->CANCELLED",
            "READY->RUNNING", "READY->FAILED", "READY->CANCELLED",
            "RUNNING->DONE", "RUNNING->FAILED");

    @Test
    void shouldAllowExactlyTheDocumentedTransitions() {
        for (TaskState from : TaskState.values()) {
            for (TaskState to : TaskState.values()) {
                assertEquals(ALLOWED.contains(from + "->" + to), from.canTransitionTo(to), from + " -> " + to);
            }
        }
    }

    @Test
    void shouldHaveNoTransitionOutOfTerminalStates() {
        for (TaskState s : EnumSet.of(TaskState.DONE, TaskState.FAILED, TaskState.CANCELLED)) {
            assertTrue(s.isTerminal());
            for (TaskState to : TaskState.values()) {
                assertFalse(s.canTransitionTo(to), s + " -> " + to);
            }
        }
    }

    @Test
    void shouldNotCancelARunningTask() {
        assertFalse(TaskState.RUNNING.canTransitionTo(TaskState.CANCELLED));
        assertFalse(TaskState.RUNNING.isTerminal());
    }
}
