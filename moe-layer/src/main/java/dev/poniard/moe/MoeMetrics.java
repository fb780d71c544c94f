package dev.poniard.moe;

import java.util.Arrays;
import java.util.Locale;

/**
 * Load statistics of one MoE forward pass: tokens per expert (kept after the capacity limit, and routed before
 * it), max over mean, coefficient of variation, the fraction of assignments dropped, experts that got no token,
 * and the auxiliary losses.
 *
 * @param keptPerExpert assignments each expert processed
 * @param routedPerExpert assignments that chose each expert before the capacity limit
 * @param maxOverMean max / mean of {@code keptPerExpert} (1 = perfectly balanced)
 * @param coefficientOfVariation standard deviation / mean of {@code keptPerExpert}
 * @param dropRate dropped assignments / all assignments
 * @param deadExperts experts with no kept assignment
 * @param unservedTokens tokens that no expert processed (all their assignments dropped; with expert choice, tokens
 *     that no expert picked): their routed output is zero
 * @param expertParallel the step's expert parallelism across ranks (global load, shadowed experts, bytes
 *     exchanged), or null when the layer runs in one process
 */
public record MoeMetrics(int[] keptPerExpert, int[] routedPerExpert, double maxOverMean,
                         double coefficientOfVariation, double dropRate, int deadExperts, double auxLoss,
                         double zLoss, int unservedTokens, ExpertParallelStats expertParallel) {

    /** Metrics of a single-process step. */
    public MoeMetrics(int[] keptPerExpert, int[] routedPerExpert, double maxOverMean, double coefficientOfVariation,
                      double dropRate, int deadExperts, double auxLoss, double zLoss, int unservedTokens) {
        this(keptPerExpert, routedPerExpert, maxOverMean, coefficientOfVariation, dropRate, deadExperts, auxLoss, zLoss,
                unservedTokens, null);
    }

    /** These metrics (this rank's batch) with the step's expert-parallel statistics. */
    public MoeMetrics withExpertParallel(ExpertParallelStats stats) {
        return new MoeMetrics(keptPerExpert, routedPerExpert, maxOverMean, coefficientOfVariation, dropRate,
                deadExperts, auxLoss, zLoss, unservedTokens, stats);
    }

    /** The metrics of a routing plan. */
    public static MoeMetrics of(RoutingPlan plan) {
        int e = plan.experts();
        int[] kept = new int[e];
        int[] routed = new int[e];
        long keptSum = 0;
        long routedSum = 0;
        int dead = 0;
        int max = 0;
        for (int i = 0; i < e; i++) {
            kept[i] = plan.keptTokens(i);
            routed[i] = plan.routedTokens(i);
            keptSum += kept[i];
            routedSum += routed[i];
            max = Math.max(max, kept[i]);
            if (kept[i] == 0) {
                dead++;
            }
        }
        double mean = keptSum / (double) e;
        double var = 0;
        for (int k : kept) {
            var += (k - mean) * (k - mean);
        }
        double cv = mean > 0 ? Math.sqrt(var / e) / mean : 0;
        double drop = routedSum > 0 ? (routedSum - keptSum) / (double) routedSum : 0;
        return new MoeMetrics(kept, routed, mean > 0 ? max / mean : 0, cv, drop, dead, plan.auxLoss(), plan.zLoss(),
                plan.unservedTokens());
    }

    /** Every expert processed {@code rowsPerExpert} rows, nothing dropped (Soft MoE's slots). */
    public static MoeMetrics evenly(int experts, int rowsPerExpert) {
        int[] rows = new int[experts];
        Arrays.fill(rows, rowsPerExpert);
        return new MoeMetrics(rows, rows.clone(), rowsPerExpert > 0 ? 1 : 0, 0, 0, rowsPerExpert > 0 ? 0 : experts, 0,
                0, 0);
    }

    @Override
    public int[] keptPerExpert() {
        return keptPerExpert.clone();
    }

    @Override
    public int[] routedPerExpert() {
        return routedPerExpert.clone();
    }

    @Override
    public String toString() {
        return String.format(Locale.ROOT,
                "tokens/expert %s, max/mean %.3f, cv %.3f, drop %.4f, dead %d, unserved tokens %d, aux %.5f, z %.5f",
                Arrays.toString(keptPerExpert), maxOverMean, coefficientOfVariation, dropRate, deadExperts,
                unservedTokens, auxLoss, zLoss) + (expertParallel == null ? "" : "; " + expertParallel);
    }
}
