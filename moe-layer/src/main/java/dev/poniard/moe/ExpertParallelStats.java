package dev.poniard.moe;

import java.util.Arrays;
import java.util.Locale;

/**
 * One step of a MoE layer's expert parallelism across ranks, as seen by one rank. Identical on every rank except
 * {@code rank}, {@code rowsComputed} and the byte counts.
 *
 * @param rank this rank
 * @param ranks ranks taking part
 * @param globalTokensPerExpert kept assignments per expert summed over all ranks (the load shadowing decides on)
 * @param shadowedExperts experts computed locally by every rank for its own tokens this step (ascending)
 * @param rowsComputed token rows this rank ran through routed experts: its owned experts' rows from every rank plus
 *     its own rows of shadowed experts
 * @param bytesSent bytes this rank sent to other ranks in the forward's two all-to-alls (tokens out, outputs
 *     back; the backward moves the same amounts again), headers included, the copy to itself excluded
 * @param bytesReceived bytes this rank received from other ranks in the forward, likewise
 */
public record ExpertParallelStats(int rank, int ranks, long[] globalTokensPerExpert, int[] shadowedExperts,
                                  long rowsComputed, long bytesSent, long bytesReceived) {

    @Override
    public long[] globalTokensPerExpert() {
        return globalTokensPerExpert.clone();
    }

    @Override
    public int[] shadowedExperts() {
        return shadowedExperts.clone();
    }

    /** The rank that owns expert {@code e} among {@code ranks}: e mod ranks. */
    public static int owner(int e, int ranks) {
        return e % ranks;
    }

    @Override
    public String toString() {
        return String.format(Locale.ROOT, "rank %d/%d: global tokens/expert %s, shadowed %s, rows computed %d, "
                        + "bytes sent %d, received %d", rank, ranks, Arrays.toString(globalTokensPerExpert),
                Arrays.toString(shadowedExperts), rowsComputed, bytesSent, bytesReceived);
    }
}
