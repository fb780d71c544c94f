package dev.poniard.samples.streams;

import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeFalse;

import dev.poniard.samples.bench.BenchOptions;
import dev.poniard.scheduler.stream.cuda.CudaDevices;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

class StreamsBenchSuiteTest {
    @Test
    @Timeout(value = 30, unit = TimeUnit.SECONDS)
    void shouldSkipTheGpuCasesWithoutAGpu() throws Exception {
        assumeFalse(CudaDevices.detect().available(), "this machine has a GPU");
        assertTrue(new StreamsBenchSuite(false, true).run(new BenchOptions(true, 1), r -> { }).isEmpty());
    }
}
