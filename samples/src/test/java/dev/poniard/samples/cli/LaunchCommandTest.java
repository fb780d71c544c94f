package dev.poniard.samples.cli;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.poniard.samples.cli.LaunchCommand.Jit;
import java.util.List;
import org.junit.jupiter.api.Test;

class LaunchCommandTest {
    private static final String C1 = "-XX:TieredStopAtLevel=1";
    private static final int CORES = Runtime.getRuntime().availableProcessors();

    @Test
    void shouldRunTrainingRanksOnC1OnlyWhenTheyAreAtLeastTheCores() {
        List<String> crowded = LaunchCommand.rankCommand(CORES, List.of("train", "--epochs", "1"), Jit.AUTO);
        assertEquals(C1, crowded.get(1), "the flag goes right after the java executable: " + crowded);
        assertTrue(crowded.get(0).endsWith("java"), crowded.get(0));
        if (CORES > 1) {
            assertFalse(LaunchCommand.rankCommand(CORES - 1, List.of("train"), Jit.AUTO).contains(C1));
        }
    }

    @Test
    void shouldKeepTieredCompilationForOtherSubCommandsAndWhenAskedTo() {
        assertFalse(LaunchCommand.rankCommand(CORES, List.of("bench", "comm"), Jit.AUTO).contains(C1));
        assertFalse(LaunchCommand.rankCommand(CORES, List.of("train"), Jit.TIERED).contains(C1));
        assertTrue(LaunchCommand.rankCommand(1, List.of("linalg", "gemm"), Jit.C1).contains(C1));
    }

    @Test
    void shouldEndWithTheCliMainClassAndTheSubCommand() {
        List<String> cmd = LaunchCommand.rankCommand(CORES, List.of("train", "--epochs", "1"), Jit.AUTO);
        assertEquals(List.of(LaunchCommand.CLI_MAIN_CLASS, "train", "--epochs", "1"), cmd.subList(cmd.size() - 4, cmd.size()));
    }
}
