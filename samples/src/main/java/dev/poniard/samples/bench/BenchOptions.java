package dev.poniard.samples.bench;

/**
 * Command-line options a suite may use.
 *
 * @param quick     fewer repetitions and smaller sizes, for CI and a first look
 * @param ranks     number of ranks for suites that start their own processes (comm, linalg)
 * @param timelines a folder for the timelines of suites that keep them (streams: the device's streams of its tile
 *                  cases), or null
 */
public record BenchOptions(boolean quick, int ranks, java.nio.file.Path timelines) {
    public BenchOptions(boolean quick, int ranks) {
        this(quick, ranks, null);
    }
}
