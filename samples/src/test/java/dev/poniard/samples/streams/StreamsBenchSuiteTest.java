package dev.poniard.samples.streams;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeFalse;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import dev.poniard.samples.bench.BenchOptions;
import dev.poniard.samples.bench.BenchResult;
import dev.poniard.scheduler.stream.cuda.CudaDevices;
import java.nio.file.Path;
import java.util.List;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;

class StreamsBenchSuiteTest {
    @Test
    @Timeout(value = 30, unit = TimeUnit.SECONDS)
    void shouldSkipTheGpuCasesWithoutAGpu() throws Exception {
        assumeFalse(CudaDevices.detect().available(), "this machine has a GPU");
        assertTrue(new StreamsBenchSuite(false, true).run(new BenchOptions(true, 1), r -> { }).isEmpty());
    }

    @Test
    @Timeout(value = 120, unit = TimeUnit.SECONDS)
    void shouldWriteEveryCpuCaseWithItsOneStreamBaselineAndTheTileCasesTimelines(@TempDir Path dir) throws Exception {
        List<BenchResult> results = new StreamsBenchSuite(true, false).run(new BenchOptions(true, 1, dir), r -> { });
        assertEquals(List.of("cpu_independent_kernels", "cpu_copy_compute_pipeline", "cpu_bidirectional_copies",
                "cpu_mixed_dag", "cpu_tile_cholesky", "cpu_tile_gemm"),
                results.stream().map(BenchResult::caseName).toList());
        for (BenchResult r : results) {
            assertTrue(r.value() > 0 && r.baselineValue() > 0, r.toString());
        }
        for (String op : List.of("cpu_tile_cholesky", "cpu_tile_gemm")) {
            JsonNode events = new ObjectMapper().readTree(dir.resolve(op + ".json").toFile()).path("traceEvents");
            long kernels = 0;
            for (JsonNode e : events) {
                kernels += e.path("ph").asText().equals("X") && e.path("name").asText().startsWith("dgemm") ? 1 : 0;
            }
            // 8 x 8 tiles: GEMM runs 8^3 tile products; Cholesky's trailing updates 56 of them
            assertEquals(op.endsWith("gemm") ? 512 : 56, kernels, op);
        }
    }
}
