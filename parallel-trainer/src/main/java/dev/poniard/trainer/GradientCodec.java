package dev.poniard.trainer;

import java.nio.ByteBuffer;

/**
 * One rank's encoder for a compressed gradient exchange, with its error-feedback residual, and the decoder that
 * sums all ranks' messages. Message layouts (little-endian):
 * <pre>
 *   fp16:  | scale: float32 | h[0]: fp16 | h[1]: fp16 | ... | h[n-1]: fp16 |      value i = h[i] * scale
 *   top-k: | index: int32 | value: float32 | ... k pairs, indices ascending ... |
 * </pre>
 */
final class GradientCodec {
    private final GradientCompression compression;
    private final int n;
    private final int k;
    private final float[] residual;
    private final float[] scratch;

    GradientCodec(GradientCompression compression, int n) {
        if (compression instanceof GradientCompression.None) {
            throw new IllegalArgumentException("no codec for uncompressed gradients");
        }
        this.compression = compression;
        this.n = n;
        this.k = compression instanceof GradientCompression.TopK t ? t.count(n) : n;
        this.residual = new float[n];
        this.scratch = compression instanceof GradientCompression.TopK ? new float[n] : null;
    }

    int length() {
        return n;
    }

    /** Bytes of one rank's message. */
    int messageBytes() {
        return compression instanceof GradientCompression.Fp16 ? 4 + 2 * n : 8 * k;
    }

    /** What was left unsent so far (tests). */
    float[] residual() {
        return residual;
    }

    /**
     * Adds the residual to {@code g}, writes the message for the sum at {@code out}'s positions 0..messageBytes, and
     * keeps what the message does not carry as the new residual.
     */
    void encode(float[] g, ByteBuffer out) {
        float[] r = residual;
        for (int i = 0; i < n; i++) {
            r[i] += g[i];
        }
        if (compression instanceof GradientCompression.Fp16) {
            float absMax = 0;
            for (int i = 0; i < n; i++) {
                absMax = Math.max(absMax, Math.abs(r[i]));
            }
            // A power of two puts the largest magnitude in [2^14, 2^15): far from fp16's overflow at 65504, and
            // dividing by it is exact.
            float scale = absMax > 0 && Float.isFinite(absMax) ? Math.scalb(1f, Math.getExponent(absMax) - 14) : 1f;
            out.putFloat(0, scale);
            for (int i = 0; i < n; i++) {
                short h = toHalf(r[i] / scale);
                out.putShort(4 + 2 * i, h);
                r[i] -= fromHalf(h) * scale;
            }
            return;
        }
        float threshold = kthLargestMagnitude(r, k);
        int taken = 0;
        int ties = k - countAbove(r, threshold);
        for (int i = 0; i < n && taken < k; i++) {
            float a = Math.abs(r[i]);
            if (a > threshold || (a == threshold && ties-- > 0)) {
                out.putInt(8 * taken, i);
                out.putFloat(8 * taken + 4, r[i]);
                r[i] = 0;
                taken++;
            }
        }
    }

    /** Sums the messages of {@code ranks} ranks, back to back in {@code all}, into {@code result}, in rank order. */
    void decodeSum(ByteBuffer all, int ranks, float[] result) {
        java.util.Arrays.fill(result, 0f);
        int bytes = messageBytes();
        for (int j = 0; j < ranks; j++) {
            int base = j * bytes;
            if (compression instanceof GradientCompression.Fp16) {
                float scale = all.getFloat(base);
                for (int i = 0; i < n; i++) {
                    result[i] += fromHalf(all.getShort(base + 4 + 2 * i)) * scale;
                }
            } else {
                for (int p = 0; p < k; p++) {
                    int idx = all.getInt(base + 8 * p);
                    if (idx < 0 || idx >= n) {
                        throw new TrainerException("corrupt top-k gradient message from rank " + j + ": index " + idx
                                + " outside [0, " + n + ")");
                    }
                    result[idx] += all.getFloat(base + 8 * p + 4);
                }
            }
        }
    }

    private int countAbove(float[] r, float threshold) {
        int c = 0;
        for (float v : r) {
            if (Math.abs(v) > threshold) {
                c++;
            }
        }
        return c;
    }

    /** The k-th largest |r[i]| by quickselect (Hoare), O(n) expected. */
    private float kthLargestMagnitude(float[] r, int kth) {
        float[] a = scratch;
        for (int i = 0; i < n; i++) {
            a[i] = Math.abs(r[i]);
        }
        int target = n - kth; // index of the k-th largest in ascending order
        int lo = 0, hi = n - 1;
        while (lo < hi) {
            int mid = (lo + hi) >>> 1;
            float pivot = median(a[lo], a[mid], a[hi]);
            int i = lo, j = hi;
            while (i <= j) {
                while (a[i] < pivot) {
                    i++;
                }
                while (a[j] > pivot) {
                    j--;
                }
                if (i <= j) {
                    float t = a[i];
                    a[i] = a[j];
                    a[j] = t;
                    i++;
                    j--;
                }
            }
            if (target <= j) {
                hi = j;
            } else if (target >= i) {
                lo = i;
            } else {
                return a[target];
            }
        }
        return a[target];
    }

    private static float median(float x, float y, float z) {
        return Math.max(Math.min(x, y), Math.min(Math.max(x, y), z));
    }

    /** IEEE 754 binary16 nearest to {@code f} (round half to even; overflow to infinity; subnormals kept). */
    static short toHalf(float f) {
        int bits = Float.floatToRawIntBits(f);
        int sign = (bits >>> 16) & 0x8000;
        int exp = (bits >>> 23) & 0xFF;
        int mant = bits & 0x7FFFFF;
        if (exp == 0xFF) {
            return (short) (sign | 0x7C00 | (mant != 0 ? 0x200 : 0));
        }
        int e = exp - 127 + 15;
        if (e >= 0x1F) {
            return (short) (sign | 0x7C00);
        }
        if (e <= 0) {
            int shift = 14 - e; // the float's 24-bit significand, in units of 2^-24 (fp16's smallest subnormal)
            if (shift > 24) {
                return (short) sign;
            }
            int m = mant | 0x800000;
            int h = m >> shift;
            int rem = m & ((1 << shift) - 1);
            int half = 1 << (shift - 1);
            if (rem > half || (rem == half && (h & 1) == 1)) {
                h++; // may carry into the smallest normal: still the right encoding
            }
            return (short) (sign | h);
        }
        int h = sign | (e << 10) | (mant >> 13);
        int rem = mant & 0x1FFF;
        if (rem > 0x1000 || (rem == 0x1000 && (h & 1) == 1)) {
            h++; // a carry into the exponent rounds up to the next binade, or to infinity: both correct
        }
        return (short) h;
    }

    static float fromHalf(short half) {
        int h = half & 0xFFFF;
        int sign = (h & 0x8000) << 16;
        int exp = (h >>> 10) & 0x1F;
        int mant = h & 0x3FF;
        if (exp == 0x1F) {
            return Float.intBitsToFloat(sign | 0x7F800000 | (mant << 13));
        }
        if (exp == 0) {
            float v = mant * 0x1p-24f;
            return sign != 0 ? -v : v;
        }
        return Float.intBitsToFloat(sign | ((exp + 112) << 23) | (mant << 13));
    }
}
