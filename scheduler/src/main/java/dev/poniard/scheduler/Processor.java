package dev.poniard.scheduler;

/**
 * Something that runs tasks: a CPU worker today; GPU devices (with streams) and remote ranks share this
 * abstraction. Processors of one scheduler are numbered {@code 0..n-1}; {@link #memoryDomain()} tells which
 * processors share memory, so that the placement policy can charge for moving inputs between domains.
 */
public interface Processor {
    enum Kind { CPU, GPU, REMOTE }

    int id();

    String name();

    Kind kind();

    /** Processors with the same domain read each other's results without a transfer. */
    int memoryDomain();
}
