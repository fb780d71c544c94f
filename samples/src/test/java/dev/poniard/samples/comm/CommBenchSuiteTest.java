package dev.poniard.samples.comm;

import dev.poniard.samples.bench.BenchOptions;
import dev.poniard.samples.bench.BenchResult;
import org.junit.jupiter.api.Tag;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

import java.util.List;
import java.util.stream.Collectors;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

class CommBenchSuiteTest {
    static final List<String> CASES = List.of("pingpong_latency_8B", "pingpong_latency_64KiB", "allreduce_busbw_4KiB",
        "allreduce_busbw_1MiB", "allreduce_busbw_64MiB", "allreduce_busbw_256MiB", "alltoall_busbw_16MiB",
        "broadcast_busbw_64MiB", "rma_put_latency_1MiB");

    @Test
    void shouldCarryResultsFromRankZeroIntact() {
        final BenchResult a = BenchResult.higherIsBetter("allreduce_busbw_1MiB", "bus bandwidth", "GB/s", 1.5,
            "memcpy", 10.0);
        assertEquals(a, CommBenchSuite.parse(CommBenchSuite.format(a).substring(CommBenchSuite.PREFIX.length())));
        final BenchResult b = BenchResult.standalone("pingpong_latency_8B", "half round trip", "us", 12.5);
        final BenchResult back = CommBenchSuite.parse(CommBenchSuite.format(b).substring(CommBenchSuite.PREFIX.length()));
        assertEquals(b.caseName(), back.caseName());
        assertEquals(b.value(), back.value());
        assertEquals(null, back.baseline());
        assertTrue(Double.isNaN(back.ratio()));
    }

    @Test
    @Tag("slow")
    @Timeout(120)
    void shouldReportEveryCaseInQuickMode() throws Exception {
        final long t0 = System.nanoTime();
        final List<BenchResult> results = new CommBenchSuite().run(new BenchOptions(true, 2), r -> { });
        final double seconds = (System.nanoTime() - t0) / 1e9;
        assertEquals(CASES, results.stream().map(BenchResult::caseName).collect(Collectors.toList()));
        assertTrue(seconds < 60, "quick mode took " + seconds + " s");
    }
}
