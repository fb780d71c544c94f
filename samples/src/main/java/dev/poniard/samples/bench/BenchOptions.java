package dev.poniard.samples.bench;

/**
 * Command-line options a suite may use.
 *
 * @param quick fewer repetitions and smaller sizes, for CI and a first look
 * @param ranks number of ranks for suites that start their own processes (comm, linalg)
 */
public record BenchOptions(boolean quick, int ranks) {
}
