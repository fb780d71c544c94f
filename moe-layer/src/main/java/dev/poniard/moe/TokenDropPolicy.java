package dev.poniard.moe;

/** Which assignments an expert keeps when more tokens choose it than its capacity allows. */
public enum TokenDropPolicy {
    /**
     * First come, first served in (slot, position) order: every token's first choice before any second choice,
     * earlier tokens first within a slot (GShard, Switch Transformer).
     */
    BY_POSITION,
    /** Highest router probability first, whatever the position ("batch prioritized routing", Riquelme et al. 2021). */
    BY_SCORE
}
