package dev.poniard.trainer;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.util.Arrays;
import java.util.Random;
import org.junit.jupiter.api.Test;

class GradientCodecTest {
    @Test
    void shouldRoundTripEveryHalfFloat() {
        for (int h = 0; h < 0x10000; h++) {
            boolean nan = (h & 0x7C00) == 0x7C00 && (h & 0x3FF) != 0;
            if (!nan) {
                assertEquals((short) h, GradientCodec.toHalf(GradientCodec.fromHalf((short) h)), "half " + Integer.toHexString(h));
            }
        }
        assertTrue(Float.isNaN(GradientCodec.fromHalf(GradientCodec.toHalf(Float.NaN))));
        assertEquals(Float.POSITIVE_INFINITY, GradientCodec.fromHalf(GradientCodec.toHalf(70_000f)));
        assertEquals(0x1p-24f, GradientCodec.fromHalf(GradientCodec.toHalf(0x1p-24f)));
    }

    @Test
    void shouldRoundFloatsToTheNearestHalf() {
        long seed = System.nanoTime();
        System.out.println("seed " + seed);
        Random rnd = new Random(seed);
        for (int i = 0; i < 200_000; i++) {
            float f = (float) (rnd.nextGaussian() * Math.pow(2, rnd.nextInt(40) - 26));
            short h = GradientCodec.toHalf(f);
            double err = Math.abs(f - GradientCodec.fromHalf(h));
            for (int d : new int[] {-1, 1}) {
                short other = (short) (h + d);
                if ((other & 0x7C00) != 0x7C00 && Integer.signum(other) == Integer.signum(h)) {
                    assertTrue(err <= Math.abs(f - GradientCodec.fromHalf(other)), "seed " + seed + ": " + f + " -> " + h);
                }
            }
        }
    }

    private static ByteBuffer buffer(int bytes) {
        return ByteBuffer.allocate(bytes).order(ByteOrder.LITTLE_ENDIAN);
    }

    @Test
    void shouldSendTheLargestEntriesAndKeepTheRestForLater() {
        GradientCodec codec = new GradientCodec(GradientCompression.topK(0.25), 8);
        assertEquals(2 * 8, codec.messageBytes());
        float[] g = {0.1f, -5f, 0.2f, 3f, 0f, -0.3f, 0.05f, 1f};
        ByteBuffer msg = buffer(codec.messageBytes());
        codec.encode(g, msg);
        float[] sum = new float[8];
        codec.decodeSum(msg, 1, sum);
        assertEquals("[0.0, -5.0, 0.0, 3.0, 0.0, 0.0, 0.0, 0.0]", Arrays.toString(sum));
        assertEquals("[0.1, 0.0, 0.2, 0.0, 0.0, -0.3, 0.05, 1.0]", Arrays.toString(codec.residual()));
        codec.encode(new float[8], msg); // nothing new: the residual's largest go out now
        codec.decodeSum(msg, 1, sum);
        assertEquals("[0.0, 0.0, 0.0, 0.0, 0.0, -0.3, 0.0, 1.0]", Arrays.toString(sum));
    }

    @Test
    void shouldConserveTheGradientWithErrorFeedback() {
        Random rnd = new Random(3);
        for (GradientCompression c : new GradientCompression[] {GradientCompression.topK(0.05), GradientCompression.fp16()}) {
            int n = 1000;
            GradientCodec codec = new GradientCodec(c, n);
            ByteBuffer msg = buffer(codec.messageBytes());
            double[] input = new double[n];
            double[] sent = new double[n];
            float[] step = new float[n];
            for (int s = 0; s < 50; s++) {
                float[] g = new float[n];
                for (int i = 0; i < n; i++) {
                    g[i] = (float) (rnd.nextGaussian() * (i % 10 == 0 ? 10 : 0.1));
                    input[i] += g[i];
                }
                codec.encode(g, msg);
                codec.decodeSum(msg, 1, step);
                for (int i = 0; i < n; i++) {
                    sent[i] += step[i];
                }
            }
            for (int i = 0; i < n; i++) {
                assertEquals(input[i], sent[i] + codec.residual()[i], 1e-3, c + ": entry " + i + " lost mass");
            }
        }
    }

    @Test
    void shouldSumRanksInRankOrder() {
        GradientCodec a = new GradientCodec(GradientCompression.fp16(), 3);
        GradientCodec b = new GradientCodec(GradientCompression.fp16(), 3);
        ByteBuffer all = buffer(2 * a.messageBytes());
        a.encode(new float[] {1f, 1e-3f, -2f}, all.slice(0, a.messageBytes()).order(ByteOrder.LITTLE_ENDIAN));
        b.encode(new float[] {0.5f, 0f, 4096f}, all.slice(a.messageBytes(), a.messageBytes()).order(ByteOrder.LITTLE_ENDIAN));
        float[] sum = new float[3];
        a.decodeSum(all, 2, sum);
        assertEquals(1.5f, sum[0], 1e-3);
        assertEquals(1e-3f, sum[1], 1e-6);
        assertEquals(4094f, sum[2], 4);
    }

    @Test
    void shouldRejectACorruptTopKIndex() {
        GradientCodec codec = new GradientCodec(GradientCompression.topK(0.5), 4);
        ByteBuffer msg = buffer(codec.messageBytes());
        msg.putInt(0, 7);
        TrainerException e = assertThrows(TrainerException.class, () -> codec.decodeSum(msg, 1, new float[4]));
        assertTrue(e.getMessage().contains("index 7 outside [0, 4)"), e.getMessage());
    }

    @Test
    void shouldParseCompressionNames() {
        assertEquals(GradientCompression.none(), GradientCompression.parse("none"));
        assertEquals(GradientCompression.fp16(), GradientCompression.parse("FP16"));
        assertEquals(GradientCompression.topK(0.01), GradientCompression.parse("topk:0.01"));
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> GradientCompression.parse("topk:2"));
        assertTrue(e.getMessage().contains("(0, 1]"), e.getMessage());
        assertThrows(IllegalArgumentException.class, () -> GradientCompression.parse("zip"));
    }
}
