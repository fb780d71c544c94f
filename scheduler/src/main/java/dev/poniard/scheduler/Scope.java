package dev.poniard.scheduler;

import java.util.Arrays;
import java.util.BitSet;

/**
 * Which processors may run a task: any, those of one kind, or an explicit set of processor ids. Work
 * stealing honours scopes, so a scoped task never runs outside its scope.
 */
public final class Scope {
    private static final Scope ANY = new Scope(null, null, "any");

    private final Processor.Kind kind;
    private final BitSet ids;
    private final String text;
    private final int only;

    private Scope(Processor.Kind kind, BitSet ids, String text) {
        this.kind = kind;
        this.ids = ids;
        this.text = text;
        this.only = ids != null && ids.cardinality() == 1 ? ids.nextSetBit(0) : -1;
    }

    public static Scope any() {
        return ANY;
    }

    public static Scope kind(Processor.Kind kind) {
        return new Scope(kind, null, kind.name().toLowerCase() + " processors");
    }

    public static Scope cpu() {
        return kind(Processor.Kind.CPU);
    }

    /** Exactly the processors with these ids. */
    public static Scope processors(int... processorIds) {
        if (processorIds.length == 0) {
            throw new IllegalArgumentException("Scope.processors needs at least one processor id");
        }
        BitSet set = new BitSet();
        for (int id : processorIds) {
            if (id < 0) {
                throw new IllegalArgumentException("processor id must be >= 0, got " + id);
            }
            set.set(id);
        }
        return new Scope(null, set, "processors " + Arrays.toString(processorIds));
    }

    public boolean allows(Processor p) {
        return (kind == null || p.kind() == kind) && (ids == null || ids.get(p.id()));
    }

    /** The one processor id this scope allows when it names exactly one, else -1 (a placement shortcut). */
    public int singleProcessor() {
        return only;
    }

    /** Whether every processor is allowed. */
    public boolean isAny() {
        return this == ANY;
    }

    @Override
    public String toString() {
        return text;
    }
}
