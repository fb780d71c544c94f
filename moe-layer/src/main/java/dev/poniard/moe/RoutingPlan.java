package dev.poniard.moe;

import java.util.Arrays;

/**
 * The router's decisions for one batch of tokens and everything the backward pass needs: probabilities, the k
 * chosen experts per token, their gates, which assignments survived the capacity limit, and the dispatch order
 * (kept assignments grouped by expert, tokens ascending within an expert).
 *
 * <p>Top-k is k rounds of argmax over the softmax (ties to the lower index); the top-k gates are the chosen
 * probabilities renormalised to sum to 1 when k > 1 (configurable). Capacity drops happen after gating, so a
 * dropped assignment keeps its share of the normalisation and contributes nothing to the output. The Switch
 * load-balancing loss α·E·Σ_e f_e·P_e uses f_e = routed assignments to e / (N·k) (before drops, treated as a
 * constant) and P_e = mean router probability; the z-loss is β·mean_n(logsumexp_n)².
 *
 * <p>Plans come from {@link #route} (token choice, optionally with selection biases) or {@link #expertChoice}; both
 * share this representation of k "slots" per token, so the layer's dispatch and backward are the same for both.
 */
public final class RoutingPlan {
    final int tokens;
    final int experts;
    final int k;
    final double[] probs;
    final double[] lse;
    final int[] choice;
    final double[] gate;
    final boolean[] kept;
    final int[] routed;
    final int[] offsets;
    final int[] dispatch;
    double auxLoss;
    final double zLoss;
    /** Switch loss's f_e: null = this batch's routed[e] / (tokens·k); set by {@link #useGlobalLoad}. */
    private double[] loadFraction;
    private final double auxWeight;
    private final double zWeight;
    private final boolean renormalize;

    private RoutingPlan(int tokens, int experts, int k, double[] probs, double[] lse, int[] choice, double[] gate,
                        boolean[] kept, int[] routed, int[] offsets, int[] dispatch, double auxLoss, double zLoss,
                        double auxWeight, double zWeight, boolean renormalize) {
        this.tokens = tokens;
        this.experts = experts;
        this.k = k;
        this.probs = probs;
        this.lse = lse;
        this.choice = choice;
        this.gate = gate;
        this.kept = kept;
        this.routed = routed;
        this.offsets = offsets;
        this.dispatch = dispatch;
        this.auxLoss = auxLoss;
        this.zLoss = zLoss;
        this.auxWeight = auxWeight;
        this.zWeight = zWeight;
        this.renormalize = renormalize;
    }

    /**
     * Routes {@code tokens} tokens given their router logits (row-major [tokens, experts]).
     *
     * @param capacity most assignments an expert keeps ({@code Integer.MAX_VALUE}: dropless)
     */
    public static RoutingPlan route(double[] logits, int tokens, int experts, int k, int capacity,
                                    TokenDropPolicy policy, boolean renormalize, double auxWeight, double zWeight) {
        return route(logits, tokens, experts, k, capacity, policy, renormalize, auxWeight, zWeight, null);
    }

    /**
     * Top-k routing whose choice (not gates) uses {@code probability + selectionBias[e]}: auxiliary-loss-free
     * balancing (DeepSeek-V3). A null bias is plain top-k.
     */
    public static RoutingPlan route(double[] logits, int tokens, int experts, int k, int capacity,
                                    TokenDropPolicy policy, boolean renormalize, double auxWeight, double zWeight,
                                    double[] selectionBias) {
        if (k < 1 || k > experts) {
            throw new IllegalArgumentException("top-k needs 1 <= k <= experts, got k = " + k + ", experts = " + experts);
        }
        checkLogits(logits, tokens, experts);
        if (capacity < 0) {
            throw new IllegalArgumentException("capacity must be >= 0, got " + capacity);
        }
        if (selectionBias != null && selectionBias.length != experts) {
            throw new IllegalArgumentException("selection bias holds " + selectionBias.length + " values, expected one per"
                    + " expert (" + experts + ")");
        }
        double[] probs = new double[logits.length];
        double[] lse = new double[tokens];
        int[] choice = new int[tokens * k];
        double[] gate = new double[tokens * k];
        int[] routed = new int[experts];
        double zSum = softmax(logits, tokens, experts, probs, lse);
        boolean[] taken = new boolean[experts];
        for (int n = 0; n < tokens; n++) {
            int row = n * experts;
            Arrays.fill(taken, false);
            double chosen = 0;
            for (int j = 0; j < k; j++) {
                int best = -1;
                for (int e = 0; e < experts; e++) {
                    if (!taken[e] && (best < 0 || (selectionBias == null ? probs[row + e] > probs[row + best]
                            : probs[row + e] + selectionBias[e] > probs[row + best] + selectionBias[best]))) {
                        best = e;
                    }
                }
                taken[best] = true;
                choice[n * k + j] = best;
                gate[n * k + j] = probs[row + best];
                chosen += probs[row + best];
                routed[best]++;
            }
            if (renormalize && k > 1) {
                for (int j = 0; j < k; j++) {
                    gate[n * k + j] /= chosen;
                }
            }
        }
        boolean[] kept = new boolean[tokens * k];
        int[] keptCount = new int[experts];
        for (int a : fillOrder(tokens, k, gate, choice, probs, experts, policy)) {
            int e = choice[a];
            if (keptCount[e] < capacity) {
                keptCount[e]++;
                kept[a] = true;
            }
        }
        double aux = 0;
        if (auxWeight > 0 && tokens > 0) {
            for (int e = 0; e < experts; e++) {
                double p = 0;
                for (int n = 0; n < tokens; n++) {
                    p += probs[n * experts + e];
                }
                aux += (routed[e] / (double) (tokens * k)) * (p / tokens);
            }
            aux *= auxWeight * experts;
        }
        double z = tokens > 0 ? zWeight * zSum / tokens : 0;
        return assemble(tokens, experts, k, probs, lse, choice, gate, kept, keptCount, routed, aux, z, auxWeight,
                zWeight, renormalize);
    }

    /**
     * Expert-choice routing (Zhou et al. 2022): every expert takes the {@code capacity} tokens (at most all of them)
     * with the highest probability for it, ties to the earlier token. Represented with one slot per expert (slot e
     * of token n is expert e, kept when e took n), gates are the raw probabilities, and no load-balancing loss.
     */
    public static RoutingPlan expertChoice(double[] logits, int tokens, int experts, int capacity, double zWeight) {
        checkLogits(logits, tokens, experts);
        if (capacity < 0) {
            throw new IllegalArgumentException("capacity must be >= 0, got " + capacity);
        }
        int c = Math.min(capacity, tokens);
        double[] probs = new double[logits.length];
        double[] lse = new double[tokens];
        double zSum = softmax(logits, tokens, experts, probs, lse);
        int[] choice = new int[tokens * experts];
        double[] gate = new double[tokens * experts];
        boolean[] kept = new boolean[tokens * experts];
        int[] keptCount = new int[experts];
        for (int n = 0; n < tokens; n++) {
            for (int e = 0; e < experts; e++) {
                choice[n * experts + e] = e;
                gate[n * experts + e] = probs[n * experts + e];
            }
        }
        Integer[] order = new Integer[tokens];
        for (int e = 0; e < experts; e++) {
            for (int n = 0; n < tokens; n++) {
                order[n] = n;
            }
            final int ex = e;
            // stable: equal scores keep token order
            Arrays.sort(order, (x, y) -> Double.compare(probs[y * experts + ex], probs[x * experts + ex]));
            for (int i = 0; i < c; i++) {
                kept[order[i] * experts + e] = true;
            }
            keptCount[e] = c;
        }
        double z = tokens > 0 ? zWeight * zSum / tokens : 0;
        // "routed" = kept: an expert's choice is never over its capacity
        return assemble(tokens, experts, experts, probs, lse, choice, gate, kept, keptCount, keptCount.clone(), 0, z,
                0, zWeight, false);
    }

    private static void checkLogits(double[] logits, int tokens, int experts) {
        if (logits.length != (long) tokens * experts) {
            throw new IllegalArgumentException("logits hold " + logits.length + " values, expected tokens * experts = "
                    + (long) tokens * experts);
        }
    }

    /** Row-wise softmax into {@code probs}, log-sum-exp into {@code lse}; returns Σ lse². */
    private static double softmax(double[] logits, int tokens, int experts, double[] probs, double[] lse) {
        double zSum = 0;
        for (int n = 0; n < tokens; n++) {
            int row = n * experts;
            double max = Double.NEGATIVE_INFINITY;
            for (int e = 0; e < experts; e++) {
                max = Math.max(max, logits[row + e]);
            }
            double sum = 0;
            for (int e = 0; e < experts; e++) {
                double v = Math.exp(logits[row + e] - max);
                probs[row + e] = v;
                sum += v;
            }
            for (int e = 0; e < experts; e++) {
                probs[row + e] /= sum;
            }
            lse[n] = max + Math.log(sum);
            zSum += lse[n] * lse[n];
        }
        return zSum;
    }

    /** Builds the dispatch order (kept assignments by expert, ascending assignment index within one). */
    private static RoutingPlan assemble(int tokens, int experts, int k, double[] probs, double[] lse, int[] choice,
                                        double[] gate, boolean[] kept, int[] keptCount, int[] routed, double aux,
                                        double z, double auxWeight, double zWeight, boolean renormalize) {
        int[] offsets = new int[experts + 1];
        for (int e = 0; e < experts; e++) {
            offsets[e + 1] = offsets[e] + keptCount[e];
        }
        int[] dispatch = new int[offsets[experts]];
        int[] cursor = Arrays.copyOf(offsets, experts);
        for (int a = 0; a < tokens * k; a++) { // ascending a = ascending token within each expert
            if (kept[a]) {
                dispatch[cursor[choice[a]]++] = a;
            }
        }
        return new RoutingPlan(tokens, experts, k, probs, lse, choice, gate, kept, routed, offsets, dispatch, aux, z,
                auxWeight, zWeight, renormalize);
    }

    /** Assignment indices (n·k + j) in the order they claim capacity. */
    private static int[] fillOrder(int tokens, int k, double[] gate, int[] choice, double[] probs, int experts,
                                   TokenDropPolicy policy) {
        int total = tokens * k;
        int[] order = new int[total];
        int i = 0;
        for (int j = 0; j < k; j++) {
            for (int n = 0; n < tokens; n++) {
                order[i++] = n * k + j;
            }
        }
        if (policy == TokenDropPolicy.BY_SCORE) {
            Integer[] boxed = new Integer[total];
            for (int a = 0; a < total; a++) {
                boxed[a] = order[a];
            }
            // stable sort: equal scores keep the position order
            Arrays.sort(boxed, (x, y) -> Double.compare(probs[(y / k) * experts + choice[y]],
                    probs[(x / k) * experts + choice[x]]));
            for (int a = 0; a < total; a++) {
                order[a] = boxed[a];
            }
        }
        return order;
    }

    /**
     * Gradient of the loss with respect to the router logits (row-major [tokens, experts]), given the loss's
     * gradient with respect to each assignment's gate ({@code dGate[n·k + j]}, zero for dropped assignments), plus
     * the load-balancing and z-loss terms.
     *
     * @param auxScale factor on the load-balancing and z-loss gradients. DL4J's updater divides every gradient by
     *     the minibatch size, which is right for the task loss (summed over examples in backprop) but not for these
     *     terms, which are already means: pass the minibatch size to cancel the division.
     */
    public double[] backward(double[] dGate, double auxScale) {
        double[] dProb = new double[tokens * experts];
        for (int n = 0; n < tokens; n++) {
            int base = n * k;
            if (renormalize && k > 1) {
                // g_j = p_j / S with S = Σ p_i over the chosen: dp_j = (dg_j − Σ_i dg_i g_i) / S
                double s = 0;
                double dot = 0;
                for (int j = 0; j < k; j++) {
                    s += probs[n * experts + choice[base + j]];
                    dot += dGate[base + j] * gate[base + j];
                }
                for (int j = 0; j < k; j++) {
                    dProb[n * experts + choice[base + j]] += (dGate[base + j] - dot) / s;
                }
            } else {
                for (int j = 0; j < k; j++) {
                    dProb[n * experts + choice[base + j]] += dGate[base + j];
                }
            }
        }
        if (auxWeight > 0 && tokens > 0) {
            for (int e = 0; e < experts; e++) {
                double f = loadFraction != null ? loadFraction[e] : routed[e] / (double) (tokens * k);
                double c = auxScale * auxWeight * experts * f / tokens;
                for (int n = 0; n < tokens; n++) {
                    dProb[n * experts + e] += c;
                }
            }
        }
        double[] dLogits = new double[tokens * experts];
        for (int n = 0; n < tokens; n++) {
            int row = n * experts;
            double dot = 0;
            for (int e = 0; e < experts; e++) {
                dot += probs[row + e] * dProb[row + e];
            }
            double zc = zWeight > 0 ? auxScale * 2 * zWeight * lse[n] / tokens : 0;
            for (int e = 0; e < experts; e++) {
                dLogits[row + e] = probs[row + e] * (dProb[row + e] - dot) + zc * probs[row + e];
            }
        }
        return dLogits;
    }

    /**
     * Uses the load of the whole data-parallel batch (all ranks' routed assignments and tokens) as the Switch
     * loss's f_e, so that with equal batches per rank the ranks' summed gradients are the whole batch's; P_e stays
     * this batch's mean probability. Recomputes {@link #auxLoss()}.
     */
    void useGlobalLoad(long[] routedAll, long tokensAll) {
        if (routedAll.length != experts || tokensAll < 0) {
            throw new IllegalArgumentException("global load needs " + experts + " counts and tokens >= 0, got "
                    + routedAll.length + " counts and " + tokensAll + " tokens");
        }
        double[] f = new double[experts];
        for (int e = 0; e < experts; e++) {
            f[e] = tokensAll > 0 ? routedAll[e] / (double) (tokensAll * k) : 0;
        }
        loadFraction = f;
        double aux = 0;
        if (auxWeight > 0 && tokens > 0) {
            for (int e = 0; e < experts; e++) {
                double p = 0;
                for (int n = 0; n < tokens; n++) {
                    p += probs[n * experts + e];
                }
                aux += f[e] * (p / tokens);
            }
            aux *= auxWeight * experts;
        }
        auxLoss = aux;
    }

    public int tokens() {
        return tokens;
    }

    public int experts() {
        return experts;
    }

    /** Slots per token: k for top-k, E for expert choice. */
    public int k() {
        return k;
    }

    /** Tokens that no kept assignment serves (their routed output is zero). */
    public int unservedTokens() {
        int none = 0;
        for (int n = 0; n < tokens; n++) {
            boolean any = false;
            for (int j = 0; j < k && !any; j++) {
                any = kept[n * k + j];
            }
            if (!any) {
                none++;
            }
        }
        return none;
    }

    /** Kept assignments in dispatch order. */
    public int dispatched() {
        return dispatch.length;
    }

    /** Kept assignments of expert e. */
    public int keptTokens(int e) {
        return offsets[e + 1] - offsets[e];
    }

    /** Assignments that chose expert e before the capacity limit. */
    public int routedTokens(int e) {
        return routed[e];
    }

    /** The token of the assignment at dispatch position {@code pos}. */
    public int tokenAt(int pos) {
        return dispatch[pos] / k;
    }

    /** Tokens in dispatch order. */
    public int[] dispatchTokens() {
        int[] t = new int[dispatch.length];
        for (int i = 0; i < t.length; i++) {
            t[i] = dispatch[i] / k;
        }
        return t;
    }

    /** For slot j, each token's dispatch position, or {@link #dispatched()} (a zero row) when dropped. */
    public int[] slotPositions(int j) {
        int[] pos = new int[tokens];
        Arrays.fill(pos, dispatch.length);
        for (int p = 0; p < dispatch.length; p++) {
            int a = dispatch[p];
            if (a % k == j) {
                pos[a / k] = p;
            }
        }
        return pos;
    }

    /** Gates in dispatch order. */
    public double[] dispatchGates() {
        double[] g = new double[dispatch.length];
        for (int i = 0; i < g.length; i++) {
            g[i] = gate[dispatch[i]];
        }
        return g;
    }

    /** Expert chosen by token n in slot j. */
    public int choice(int n, int j) {
        return choice[n * k + j];
    }

    public double gate(int n, int j) {
        return gate[n * k + j];
    }

    public boolean kept(int n, int j) {
        return kept[n * k + j];
    }

    public double auxLoss() {
        return auxLoss;
    }

    public double zLoss() {
        return zLoss;
    }

    /** Scatters per-dispatch-position gate gradients to assignment order (zero for dropped assignments). */
    double[] toAssignmentOrder(double[] dGateDispatch) {
        double[] out = new double[tokens * k];
        for (int p = 0; p < dispatch.length; p++) {
            out[dispatch[p]] = dGateDispatch[p];
        }
        return out;
    }
}
