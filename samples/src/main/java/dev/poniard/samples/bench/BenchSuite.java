package dev.poniard.samples.bench;

import java.util.List;

/**
 * A named set of benchmark cases behind {@code ./poniard bench <name>}. Each case measures Poniard and its
 * baseline side by side in the same run, so the ratio means something on a shared, noisy machine.
 */
public interface BenchSuite {
    /** The suite name on the command line, e.g. {@code scheduler}. */
    String name();

    /** One line for {@code ./poniard bench --help}. */
    String description();

    /**
     * Runs every case.
     *
     * @param options quick mode, rank count and other suite options from the command line
     * @param progress receives a line as each case finishes, for the console
     */
    List<BenchResult> run(BenchOptions options, java.util.function.Consumer<BenchResult> progress) throws Exception;
}
