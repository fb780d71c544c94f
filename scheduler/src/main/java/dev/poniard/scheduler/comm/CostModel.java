package dev.poniard.scheduler.comm;

/**
 * The α-β(-γ) model that picks collective algorithms: sending m bytes costs α + mβ, reducing m bytes costs
 * mγ (Thakur, Rabenseifner and Gropp 2005). The cluster simulator prices collectives with the same model, so
 * its predictions follow the communicator's own choices. Parameters are measured when the world communicator connects (rank 0 measures, everyone receives the
 * same figures) unless the context overrides them, so every rank makes the same choice for the same call.
 *
 * @param alpha seconds per message
 * @param beta seconds per byte sent
 * @param gamma seconds per byte reduced
 */
public record CostModel(double alpha, double beta, double gamma) {
    /** Per-message latency over IPC and ~4 GB/s, the figures of DESIGN §4, used when nothing was measured. */
    public static final CostModel DEFAULT = new CostModel(5e-6, 1.0 / 4e9, 1.0 / 2e9);

    public CostModel {
        if (!(alpha >= 0) || !(beta >= 0) || !(gamma >= 0)) {
            throw new IllegalArgumentException("cost model parameters must be >= 0: alpha=" + alpha + " beta=" + beta
                + " gamma=" + gamma);
        }
    }

    static int log2Ceil(int p) {
        return 32 - Integer.numberOfLeadingZeros(Math.max(1, p - 1));
    }

    /** Predicted all-reduce time of {@code algorithm} on p ranks for m bytes. */
    public double allReduce(Algorithm algorithm, int p, long m) {
        final int lg = log2Ceil(p);
        final boolean pow2 = Integer.bitCount(p) == 1;
        final double fold = pow2 ? 0 : 2 * (alpha + m * beta) + m * gamma;
        return switch (algorithm) {
            case RING -> 2.0 * (p - 1) * alpha + 2.0 * (p - 1) / p * m * beta + (p - 1.0) / p * m * gamma;
            case RECURSIVE_DOUBLING -> fold + lg * (alpha + m * beta + m * gamma);
            case RABENSEIFNER -> fold + 2.0 * lg * alpha + 2.0 * (p - 1) / p * m * beta + (p - 1.0) / p * m * gamma;
            // reduce to a root, then broadcast: what a plain tree all-reduce costs (predictions only)
            case BINOMIAL_TREE -> 2.0 * lg * (alpha + m * beta) + lg * m * gamma;
            default -> Double.POSITIVE_INFINITY;
        };
    }

    /**
     * Least-squares intercept and slope of {@code y} over {@code x}: fits t = α + β·m to times measured at several
     * message sizes, which a single pair of sizes does too noisily on a shared machine.
     */
    public static double[] fitLine(int[] x, double[] y) {
        double mx = 0;
        double my = 0;
        for (int i = 0; i < x.length; i++) {
            mx += x[i];
            my += y[i];
        }
        mx /= x.length;
        my /= x.length;
        double sxy = 0;
        double sxx = 0;
        for (int i = 0; i < x.length; i++) {
            sxy += (x[i] - mx) * (y[i] - my);
            sxx += (x[i] - mx) * (x[i] - mx);
        }
        final double slope = sxy / sxx;
        return new double[] {my - slope * mx, slope};
    }

    /** Predicted pairwise all-to-all time on p ranks when each rank sends m bytes in all (m / p to each peer). */
    public double allToAll(int p, long m) {
        return p <= 1 ? 0 : (p - 1) * (alpha + (double) m / p * beta);
    }

    /** The cheapest all-reduce algorithm the communicator implements (ring, recursive doubling, Rabenseifner). */
    public Algorithm chooseAllReduce(int p, long m) {
        Algorithm best = Algorithm.RING;
        double cost = allReduce(Algorithm.RING, p, m);
        for (Algorithm a : new Algorithm[]{Algorithm.RECURSIVE_DOUBLING, Algorithm.RABENSEIFNER}) {
            final double c = allReduce(a, p, m);
            if (c < cost) {
                cost = c;
                best = a;
            }
        }
        return best;
    }

    /** The number of pipeline segments that minimises (p - 2 + k)(α + mβ/k) for the chain broadcast. */
    public int chainSegments(int p, long m) {
        if (m <= 0 || alpha <= 0) {
            return 1;
        }
        final double k = Math.sqrt(Math.max(1, p - 2) * m * beta / alpha);
        return (int) Math.max(1, Math.min(4096, Math.round(k)));
    }

    /** Predicted broadcast time. */
    public double broadcast(Algorithm algorithm, int p, long m) {
        if (algorithm == Algorithm.CHAIN) {
            final int k = chainSegments(p, m);
            return (p - 2 + k) * (alpha + (double) m / k * beta);
        }
        return log2Ceil(p) * (alpha + m * beta);
    }

    /** The cheaper broadcast algorithm. */
    public Algorithm chooseBroadcast(int p, long m) {
        return broadcast(Algorithm.CHAIN, p, m) < broadcast(Algorithm.BINOMIAL_TREE, p, m)
            ? Algorithm.CHAIN : Algorithm.BINOMIAL_TREE;
    }
}
