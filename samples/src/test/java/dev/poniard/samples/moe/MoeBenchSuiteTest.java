package dev.poniard.samples.moe;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.poniard.samples.bench.BenchOptions;
import dev.poniard.samples.bench.BenchResult;
import java.util.List;
import java.util.stream.Collectors;
import org.junit.jupiter.api.Tag;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

class MoeBenchSuiteTest {
    static final List<String> CASES = List.of("makespan_e8k2_s0", "makespan_e8k2_s1.2", "speedup_vs_static_e8k2_s1.2",
            "sim_p8_e16k2_s1.2", "sim_p16_e16k2_s1.2");

    @Test
    void shouldBoundByTheLongestTaskOrTheAverageLoad() {
        assertEquals(10, MoeBenchSuite.lowerBound(new long[] {10, 2, 2}, 2));
        assertEquals(6, MoeBenchSuite.lowerBound(new long[] {4, 4, 4}, 2));
    }

    @Test
    @Tag("slow")
    @Timeout(120)
    void shouldReportEveryCaseInQuickMode() throws Exception {
        long t0 = System.nanoTime();
        List<BenchResult> results = new MoeBenchSuite().run(new BenchOptions(true, 2), r -> { });
        double seconds = (System.nanoTime() - t0) / 1e9;
        assertEquals(CASES, results.stream().map(BenchResult::caseName).collect(Collectors.toList()));
        for (BenchResult r : results) {
            assertTrue(r.value() >= 1.0 || r.caseName().startsWith("speedup"), r.toString());
        }
        assertTrue(seconds < 60, "quick mode took " + seconds + " s");
    }
}
