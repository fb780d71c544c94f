package dev.poniard.trainer;

import java.util.Locale;

/**
 * How ranks exchange their gradient sums (see {@link CommGradientAllReduce}). Compression trades exactness for
 * bytes on the wire; every compressed scheme keeps an error-feedback residual per rank (what was not sent is
 * added to the next step's gradient, as in Stich et al., "Sparsified SGD with Memory", NeurIPS 2018), so nothing
 * is lost over time, only delayed. Ranks still end every step bit-identical: each decodes all ranks' messages and
 * adds them in rank order.
 *
 * <ul>
 *   <li>{@link #none()}: an exact all-reduce of the float32/float64 gradient (the default).</li>
 *   <li>{@link #fp16()}: each rank sends its gradient as IEEE half floats scaled by a power of two (no overflow,
 *       no extra rounding from the scale): 2 bytes per parameter instead of 4, by all-gather.</li>
 *   <li>{@link #topK(double)}: each rank sends the {@code fraction} of entries largest in magnitude as (index,
 *       value) pairs, 8 bytes each (Aji and Heafield 2017; Lin et al., "Deep Gradient Compression", 2018).</li>
 * </ul>
 * Compression pays across machines, where bandwidth is scarce; between processes of one host the exact
 * all-reduce is usually as fast. The residual lives in memory only: a run resumed from a checkpoint starts with an
 * empty one.
 */
public sealed interface GradientCompression {
    static GradientCompression none() {
        return None.INSTANCE;
    }

    static GradientCompression fp16() {
        return Fp16.INSTANCE;
    }

    /** Keeps the {@code fraction} (0 < fraction <= 1) of entries largest in magnitude per step and rank. */
    static GradientCompression topK(double fraction) {
        return new TopK(fraction);
    }

    /** Parses {@code none}, {@code fp16} or {@code topk:FRACTION} (e.g. {@code topk:0.01}). */
    static GradientCompression parse(String text) {
        String t = text.trim().toLowerCase(Locale.ROOT);
        if (t.equals("none")) {
            return none();
        }
        if (t.equals("fp16")) {
            return fp16();
        }
        if (t.startsWith("topk:")) {
            try {
                return topK(Double.parseDouble(t.substring(5)));
            } catch (NumberFormatException e) {
                throw new IllegalArgumentException("bad top-k fraction in '" + text + "': write e.g. topk:0.01", e);
            }
        }
        throw new IllegalArgumentException("unknown gradient compression '" + text + "': use none, fp16 or topk:FRACTION");
    }

    /** Exact all-reduce. */
    final class None implements GradientCompression {
        static final None INSTANCE = new None();

        private None() {
        }

        @Override
        public String toString() {
            return "none";
        }
    }

    /** Half-precision values with a power-of-two scale per rank and step. */
    final class Fp16 implements GradientCompression {
        static final Fp16 INSTANCE = new Fp16();

        private Fp16() {
        }

        @Override
        public String toString() {
            return "fp16";
        }
    }

    /** The largest entries by magnitude, as (index, value) pairs. */
    record TopK(double fraction) implements GradientCompression {
        public TopK {
            if (!(fraction > 0 && fraction <= 1)) {
                throw new IllegalArgumentException("top-k fraction must be in (0, 1], got " + fraction);
            }
        }

        /** Entries sent per rank for a gradient of {@code n} entries (at least one). */
        public int count(int n) {
            return (int) Math.max(1, Math.min(n, Math.ceil(fraction * n)));
        }

        @Override
        public String toString() {
            return "topk:" + fraction;
        }
    }
}
