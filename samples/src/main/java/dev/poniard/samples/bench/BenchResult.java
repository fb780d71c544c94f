package dev.poniard.samples.bench;

/**
 * One row of a benchmark report (DESIGN §3). {@code ratio} is always "ours over the baseline" in the
 * metric's better direction: greater than 1 means Poniard did better.
 *
 * @param baseline what ran side by side in the same run, or null when the case has none
 * @param baselineValue the baseline's figure in the same metric and unit, or NaN
 * @param ratio ours over the baseline in the better direction, or NaN without a baseline
 */
public record BenchResult(String caseName, String metric, String unit, double value,
                          String baseline, double baselineValue, double ratio) {

    /** A case measured against a baseline where larger values are better (throughput, bandwidth). */
    public static BenchResult higherIsBetter(String caseName, String metric, String unit, double value,
                                             String baseline, double baselineValue) {
        return new BenchResult(caseName, metric, unit, value, baseline, baselineValue, value / baselineValue);
    }

    /** A case measured against a baseline where smaller values are better (time, latency). */
    public static BenchResult lowerIsBetter(String caseName, String metric, String unit, double value,
                                            String baseline, double baselineValue) {
        return new BenchResult(caseName, metric, unit, value, baseline, baselineValue, baselineValue / value);
    }

    /** A case without a baseline: only its value is reported. */
    public static BenchResult standalone(String caseName, String metric, String unit, double value) {
        return new BenchResult(caseName, metric, unit, value, null, Double.NaN, Double.NaN);
    }
}
