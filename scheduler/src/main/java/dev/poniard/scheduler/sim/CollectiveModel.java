package dev.poniard.scheduler.sim;

/**
 * α-β-γ cost models of collective algorithms (Thakur, Rabenseifner and Gropp, "Optimization of Collective
 * Communication Operations in MPICH", 2005; Patarasuk and Yuan 2009 for the bandwidth-optimal ring). For
 * {@code n} ranks and a message of {@code m} bytes over a link with latency α and per-byte time β, and a
 * per-byte reduction time γ:
 *
 * <pre>
 *   all-reduce  ring                 2(n-1)α + 2(n-1)/n·mβ + (n-1)/n·mγ
 *               recursive doubling   ⌈log n⌉(α + mβ + mγ)
 *               Rabenseifner         2⌈log n⌉α + 2(n-1)/n·mβ + (n-1)/n·mγ
 *               binomial tree        2⌈log n⌉(α + mβ) + ⌈log n⌉·mγ        (reduce, then broadcast)
 *   broadcast   binomial tree        ⌈log n⌉(α + mβ)
 *               pipelined chain      (n-2+k)(α + mβ/k), k chunks chosen optimally
 *   all-to-all  pairwise             (n-1)(α + mβ/n)                       (m: bytes each rank sends)
 * </pre>
 *
 * The simulator prices collectives with it; {@link #best} is the per-call choice a communicator makes.
 */
public final class CollectiveModel {
    private CollectiveModel() {
    }

    public enum Op { ALL_REDUCE, BROADCAST, ALL_TO_ALL }

    public enum Algorithm {
        RING(Op.ALL_REDUCE), RECURSIVE_DOUBLING(Op.ALL_REDUCE), RABENSEIFNER(Op.ALL_REDUCE),
        BINOMIAL_TREE(Op.ALL_REDUCE, Op.BROADCAST), PIPELINED_CHAIN(Op.BROADCAST), PAIRWISE(Op.ALL_TO_ALL);

        private final Op[] ops;

        Algorithm(Op... ops) {
            this.ops = ops;
        }

        public boolean implementsOp(Op op) {
            for (Op o : ops) {
                if (o == op) {
                    return true;
                }
            }
            return false;
        }
    }

    /** Estimated time in nanoseconds of {@code op} with {@code algorithm} over {@code n} ranks. */
    public static double timeNs(Op op, Algorithm algorithm, int n, double bytes, LinkSpec link, double gammaNsPerByte) {
        if (!algorithm.implementsOp(op)) {
            throw new IllegalArgumentException(algorithm + " does not implement " + op);
        }
        if (n < 1) {
            throw new IllegalArgumentException("a collective needs at least one rank, got " + n);
        }
        if (n == 1) {
            return 0;
        }
        double a = link.alphaNs(), b = link.nsPerByte(), g = gammaNsPerByte, m = bytes;
        double lg = Math.ceil(Math.log(n) / Math.log(2));
        double frac = (n - 1) / (double) n;
        switch (algorithm) {
            case RING:
                return 2 * (n - 1) * a + 2 * frac * m * b + frac * m * g;
            case RECURSIVE_DOUBLING:
                return lg * (a + m * b + m * g);
            case RABENSEIFNER:
                return 2 * lg * a + 2 * frac * m * b + frac * m * g;
            case BINOMIAL_TREE:
                return op == Op.BROADCAST ? lg * (a + m * b) : 2 * lg * (a + m * b) + lg * m * g;
            case PIPELINED_CHAIN: {
                // minimise (n-2+k)(a + m b / k) over k >= 1: k* = sqrt((n-2) m b / a)
                double k = a == 0 ? 1e9 : Math.max(1, Math.sqrt(Math.max(n - 2, 1) * m * b / a));
                return (n - 2 + k) * (a + m * b / k);
            }
            case PAIRWISE:
                return (n - 1) * (a + m / n * b);
            default:
                throw new AssertionError(algorithm);
        }
    }

    /** The algorithm with the least estimated time for this call. */
    public static Algorithm best(Op op, int n, double bytes, LinkSpec link, double gammaNsPerByte) {
        Algorithm best = null;
        double bestT = Double.POSITIVE_INFINITY;
        for (Algorithm alg : Algorithm.values()) {
            if (alg.implementsOp(op)) {
                double t = timeNs(op, alg, n, bytes, link, gammaNsPerByte);
                if (t < bestT) {
                    best = alg;
                    bestT = t;
                }
            }
        }
        return best;
    }
}
