package dev.poniard.moe;

/** How a {@link MoeLayer} assigns tokens to experts; chosen with {@code MoeLayer.Builder.router(...)}. */
public enum RouterType {
    /**
     * Token choice: softmax over the experts, each token takes its k most probable experts (k rounds of argmax), gates
     * renormalised over the chosen k; capacity and drop policy apply (GShard, Switch Transformer).
     */
    TOP_K,
    /**
     * Noisy top-k gating (Shazeer et al. 2017): in training, logits x·W_r + softplus(x·W_noise) · ε with ε ~ N(0, 1)
     * drawn from a generator seeded by the network seed, the layer index and the iteration/epoch counters (so one
     * step sees one fixed noise draw, and a gradient check sees the same noise on every forward); without noise at
     * inference. Then routed as {@link #TOP_K}; in training the load-balancing and z-losses see the noisy logits.
     * Adds the parameter {@code Wn} [d, E], initialised to zero.
     */
    NOISY_TOP_K,
    /**
     * Expert choice (Zhou et al. 2022): softmax over the experts per token, then every expert takes the C tokens with
     * the highest score for it, C = min(tokens, ceil(capacityFactor · tokens · k / E)), so k is the average number
     * of experts per token; a token may get 0..E experts, each with its unrenormalised probability as gate. Load is
     * balanced by construction: the Switch load-balancing loss does not apply (the z-loss does), and neither do
     * dropless mode, drop policies or bias balancing. As in the paper, a token's experts depend on the other tokens
     * of its batch, at inference too.
     */
    EXPERT_CHOICE,
    /**
     * Soft MoE (Puigcerver et al. 2023): no discrete routing. Per group of tokens (one sequence of a [b, d, T] input;
     * a single token of a [b, d] input), every expert has {@code slotsPerExpert} slots whose inputs are
     * softmax-over-tokens weighted sums of the group's tokens, and each token's output is a softmax-over-slots
     * weighted sum of the slot outputs. Router parameter {@code Wr} is [d, E · slots]. Nothing is dropped and no
     * balancing loss applies (the z-loss does not either); topK, capacity and drop settings are ignored. With
     * feed-forward rows every slot of an expert sees the same token, so slotsPerExpert 1 is the sensible setting.
     */
    SOFT_MOE
}
