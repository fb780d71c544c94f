package dev.poniard.samples.cli;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.poniard.scheduler.stream.cuda.CudaDevices;
import java.util.concurrent.TimeUnit;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import org.junit.jupiter.api.Assumptions;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

/** {@code ./poniard linalg OP --device cpu|gpu}: the operations as stream DAGs on one device, or a device per rank. */
@Timeout(value = 180, unit = TimeUnit.SECONDS, threadMode = Timeout.ThreadMode.SEPARATE_THREAD)
class LinalgDeviceCommandTest {
    @ParameterizedTest(name = "{0}")
    @ValueSource(strings = {"gemm", "cholesky", "lu", "qr"})
    void shouldRunTheOperationOnTheEmulatedDeviceAndCheckItsResidual(String op) {
        CliRun run = CliRun.of("linalg", op, "--n", "300", "--tile", "64", "--device", "cpu");
        assertEquals(0, run.code(), run.out() + run.err());
        Matcher m = Pattern.compile(op + " n=300 tile=64 on cpu-device \\(3 compute streams\\): .* GFLOP/s, scaled "
                + "residual (\\S+)").matcher(run.out());
        assertTrue(m.find(), run.out());
        assertTrue(Double.parseDouble(m.group(1)) < 10, m.group());
    }

    @ParameterizedTest(name = "{0}")
    @ValueSource(strings = {"gemm", "cholesky", "lu", "qr"})
    void shouldRunTheOperationOverTwoRankProcessesEachOnItsEmulatedDevice(String op) {
        CliRun run = CliRun.of("linalg", op, "--n", "300", "--tile", "64", "--ranks", "2", "--device", "cpu");
        assertEquals(0, run.code(), run.out() + run.err());
        Matcher m = Pattern.compile("\\[rank 0\\] " + op + " n=300 tile=64 ranks=2 \\(.*\\) on a device each "
                + "\\(cpu-device on rank 0\\): .* scaled residual (\\S+)").matcher(run.out());
        assertTrue(m.find(), run.out());
        assertTrue(Double.parseDouble(m.group(1)) < 10, m.group());
    }

    @Test
    void shouldRefuseWhatTheDevicePathDoesNotRun() {
        CliRun run = CliRun.of("linalg", "solve", "--n", "100", "--device", "cpu");
        assertEquals(2, run.code());
        assertTrue(run.err().contains("--device cpu runs gemm, cholesky, lu or qr") && run.err().contains("got solve"),
                run.err());
        run = CliRun.of("linalg", "lu", "--n", "100", "--device", "cpu", "--trace", "x.json");
        assertEquals(2, run.code());
        assertTrue(run.err().contains("got lu with --trace"), run.err());
    }

    @Test
    void shouldSayThereIsNoGpuAndWhatToRunInstead() {
        Assumptions.assumeFalse(CudaDevices.detect().available(), "this host has a GPU");
        for (String ranks : new String[] {"1", "2"}) { // with 2, before any rank process starts
            CliRun run = CliRun.of("linalg", "cholesky", "--n", "100", "--device", "gpu", "--ranks", ranks);
            assertEquals(2, run.code());
            assertTrue(run.err().contains("--device gpu: no CUDA GPU here") && run.err().contains("--device cpu"),
                    run.err());
            assertTrue(!run.out().contains("[rank"), run.out());
        }
    }
}
