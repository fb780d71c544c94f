package dev.poniard.scheduler.comm;

/** Collective algorithms. AUTO lets the α-β cost model choose per call (the same choice on every rank). */
public enum Algorithm {
    AUTO,
    /** Ring reduce-scatter + ring all-gather: bandwidth optimal, 2(p-1) latency terms. */
    RING,
    /** Recursive doubling on whole vectors: log p latency terms, for small messages. */
    RECURSIVE_DOUBLING,
    /** Rabenseifner: recursive-halving reduce-scatter + recursive-doubling all-gather. */
    RABENSEIFNER,
    /** Binomial tree (broadcast, reduce). */
    BINOMIAL_TREE,
    /** Pipelined chain (broadcast): segments flow down the chain rank to rank. */
    CHAIN,
    /** All-reduce through shared memory among ranks of one host: each rank reduces its slice from the others' copies. */
    SHARED_MEMORY
}
