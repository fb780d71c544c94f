package dev.poniard.bridge;

import java.util.Map;
import java.util.Random;
import org.nd4j.autodiff.samediff.SDVariable;
import org.nd4j.autodiff.samediff.SameDiff;
import org.nd4j.autodiff.samediff.TrainingConfig;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.api.ops.impl.layers.convolution.config.Conv2DConfig;
import org.nd4j.linalg.api.ops.impl.layers.convolution.config.Pooling2DConfig;
import org.nd4j.linalg.factory.Nd4j;
import org.nd4j.linalg.learning.config.IUpdater;

/** Small SameDiff models for the tests: placeholders "in" and "label", a mean loss "loss". */
final class Models {
    static final DataType DT = DataType.DOUBLE;

    private Models() {
    }

    /** A named model factory, so parameterised tests print the model's name. */
    interface Builder {
        SameDiff build(IUpdater updater, DataType dt);
    }

    interface Batcher {
        Map<String, INDArray> batch(int n, long seed, DataType dt);
    }

    record Factory(String name, Builder builder, Batcher batcher) {
        /** The model in double precision. */
        java.util.function.Function<IUpdater, SameDiff> build() {
            return u -> builder.build(u, DT);
        }

        java.util.function.BiFunction<Integer, Long, Map<String, INDArray>> batch() {
            return (n, seed) -> batcher.batch(n, seed, DT);
        }

        @Override
        public String toString() {
            return name;
        }
    }

    static Factory[] all() {
        return new Factory[] {
            new Factory("mlp", Models::mlp, Models::mlpBatch),
            new Factory("cnn", Models::cnn, Models::cnnBatch),
            new Factory("transformer", Models::transformer, Models::transformerBatch),
        };
    }

    static INDArray randn(Random r, double scale, long... shape) {
        return randn(r, DT, scale, shape);
    }

    static INDArray randn(Random r, DataType dt, double scale, long... shape) {
        long n = 1;
        for (long s : shape) {
            n *= s;
        }
        double[] d = new double[(int) n];
        for (int i = 0; i < d.length; i++) {
            d[i] = r.nextGaussian() * scale;
        }
        return Nd4j.create(d, shape, dt);
    }

    static INDArray oneHot(Random r, int rows, int classes) {
        return oneHot(r, DT, rows, classes);
    }

    static INDArray oneHot(Random r, DataType dt, int rows, int classes) {
        INDArray y = Nd4j.zeros(dt, rows, classes);
        for (int i = 0; i < rows; i++) {
            y.putScalar(i, r.nextInt(classes), 1.0);
        }
        return y;
    }

    private static void train(SameDiff sd, IUpdater updater) {
        sd.setTrainingConfig(TrainingConfig.builder().updater(updater)
                .dataSetFeatureMapping("in").dataSetLabelMapping("label").build());
    }

    /** 8 → 16 (tanh) → 16 (relu) → 4, softmax cross-entropy. */
    static SameDiff mlp(IUpdater updater) {
        return mlp(updater, DT);
    }

    static SameDiff mlp(IUpdater updater, DataType dt) {
        Random r = new Random(1);
        SameDiff sd = SameDiff.create();
        SDVariable in = sd.placeHolder("in", dt, -1, 8);
        SDVariable label = sd.placeHolder("label", dt, -1, 4);
        SDVariable h1 = sd.nn.tanh("h1", sd.nn.linear("l1", in, sd.var("w1", randn(r, dt, 0.4, 8, 16)),
                sd.var("b1", randn(r, dt, 0.1, 16))));
        SDVariable h2 = sd.nn.relu("h2", sd.nn.linear("l2", h1, sd.var("w2", randn(r, dt, 0.3, 16, 16)),
                sd.var("b2", randn(r, dt, 0.1, 16))), 0.0);
        SDVariable logits = sd.mmul("logits0", h2, sd.var("w3", randn(r, dt, 0.3, 16, 4))).add("logits", sd.var("b3", randn(r, dt, 0.1, 4)));
        sd.nn.softmax("out", logits, 1);
        sd.loss.softmaxCrossEntropy("loss", label, logits, null);
        train(sd, updater);
        return sd;
    }

    /**
     * A regression MLP 8 → 12 (tanh) → 4 whose loss sums over examples ({@code LossReduce.SUM}), trained with L2 and
     * weight decay: exercises {@link LossReduction#SUM} and regularization before and after the updater.
     */
    static SameDiff summedRegularized(IUpdater updater) {
        Random r = new Random(5);
        SameDiff sd = SameDiff.create();
        SDVariable in = sd.placeHolder("in", DT, -1, 8);
        SDVariable label = sd.placeHolder("label", DT, -1, 4);
        SDVariable h = sd.nn.tanh("h", sd.nn.linear("l1", in, sd.var("w1", randn(r, 0.4, 8, 12)), sd.var("b1", randn(r, 0.1, 12))));
        SDVariable out = sd.nn.linear("out", h, sd.var("w2", randn(r, 0.3, 12, 4)), sd.var("b2", randn(r, 0.1, 4)));
        sd.loss.meanSquaredError("loss", label, out, null, org.nd4j.autodiff.loss.LossReduce.SUM);
        sd.setTrainingConfig(TrainingConfig.builder().updater(updater).l2(1e-2).weightDecay(1e-3, true)
                .dataSetFeatureMapping("in").dataSetLabelMapping("label").build());
        return sd;
    }

    static Map<String, INDArray> regressionBatch(int n, long seed) {
        Random r = new Random(seed);
        return Map.of("in", randn(r, 1.0, n, 8), "label", randn(r, 1.0, n, 4));
    }

    static Map<String, INDArray> mlpBatch(int n, long seed) {
        return mlpBatch(n, seed, DT);
    }

    static Map<String, INDArray> mlpBatch(int n, long seed, DataType dt) {
        Random r = new Random(seed);
        return Map.of("in", randn(r, dt, 1.0, n, 8), "label", oneHot(r, dt, n, 4));
    }

    /**
     * NCHW 1×6×6 → conv 3×3 (4 channels, relu) → max-pool 2×2 → dense 12 (tanh) → dense 3, softmax cross-entropy. The
     * two dense layers are a column→row pair for tensor parallelism.
     */
    static SameDiff cnn(IUpdater updater) {
        return cnn(updater, DT);
    }

    static SameDiff cnn(IUpdater updater, DataType dt) {
        Random r = new Random(2);
        SameDiff sd = SameDiff.create();
        SDVariable in = sd.placeHolder("in", dt, -1, 1, 6, 6);
        SDVariable label = sd.placeHolder("label", dt, -1, 3);
        SDVariable conv = sd.cnn.conv2d("conv", in, sd.var("cw", randn(r, dt, 0.4, 3, 3, 1, 4)), sd.var("cb", randn(r, dt, 0.1, 4)),
                Conv2DConfig.builder().kH(3).kW(3).sH(1).sW(1).dataFormat("NCHW").build());
        SDVariable act = sd.nn.relu("act", conv, 0.0);
        SDVariable pool = sd.cnn.maxPooling2d("pool", act, Pooling2DConfig.builder().kH(2).kW(2).sH(2).sW(2)
                .isNHWC(false).build());
        SDVariable flat = sd.reshape("flat", pool, -1, 16);
        SDVariable hidden = sd.nn.tanh("hidden", sd.nn.linear("dense", flat, sd.var("hw", randn(r, dt, 0.3, 16, 12)),
                sd.var("hb", randn(r, dt, 0.1, 12))));
        SDVariable logits = sd.nn.linear("logits", hidden, sd.var("dw", randn(r, dt, 0.3, 12, 3)), sd.var("db", randn(r, dt, 0.1, 3)));
        sd.nn.softmax("out", logits, 1);
        sd.loss.softmaxCrossEntropy("loss", label, logits, null);
        train(sd, updater);
        return sd;
    }

    static Map<String, INDArray> cnnBatch(int n, long seed) {
        return cnnBatch(n, seed, DT);
    }

    static Map<String, INDArray> cnnBatch(int n, long seed, DataType dt) {
        Random r = new Random(seed);
        return Map.of("in", randn(r, dt, 1.0, n, 1, 6, 6), "label", oneHot(r, dt, n, 3));
    }

    static final int T = 4;
    static final int D = 8;
    static final int HEADS = 2;

    /**
     * One transformer block on sequences [N, T, D]: two-head scaled dot-product attention (batched matmul over [N, H,
     * T, D/H]), output projection, residual + layer norm, a GELU MLP, residual + layer norm; mean squared error against
     * a target. Tensor parallelism splits the attention by heads and the MLP by its hidden columns.
     */
    static SameDiff transformer(IUpdater updater) {
        return transformer(updater, DT);
    }

    static SameDiff transformer(IUpdater updater, DataType dt) {
        return transformer(updater, dt, HEADS, D);
    }

    /** The block with {@code heads} heads of width {@code d / heads} on sequences [N, T, d]. */
    static SameDiff transformer(IUpdater updater, DataType dt, int heads, int d) {
        Random r = new Random(3);
        SameDiff sd = SameDiff.create();
        SDVariable in = sd.placeHolder("in", dt, -1, T, d);
        SDVariable label = sd.placeHolder("label", dt, -1, T, d);
        SDVariable x2 = sd.reshape("x2", in, -1, d);
        SDVariable q = heads(sd, "q", heads, d, sd.mmul("q2", x2, sd.var("wq", randn(r, dt, 0.3, d, d))));
        SDVariable k = heads(sd, "k", heads, d, sd.mmul("k2", x2, sd.var("wk", randn(r, dt, 0.3, d, d))));
        SDVariable v = heads(sd, "v", heads, d, sd.mmul("v2", x2, sd.var("wv", randn(r, dt, 0.3, d, d))));
        SDVariable scores = sd.mmul("scores", q, k, false, true, false).mul("scaled", 1.0 / Math.sqrt(d / heads));
        SDVariable att = sd.nn.softmax("att", scores, 3);
        SDVariable ctx = sd.permute("ctxT", sd.mmul("ctx", att, v), 0, 2, 1, 3);
        SDVariable ctx2 = sd.reshape("ctx2", ctx, -1, d);
        SDVariable proj = sd.nn.linear("proj", ctx2, sd.var("wo", randn(r, dt, 0.3, d, d)), sd.var("bo", randn(r, dt, 0.1, d)));
        SDVariable n1 = sd.nn.layerNorm("ln1", x2.add("res1", proj), sd.var("g1", Nd4j.ones(dt, d)),
                sd.var("be1", Nd4j.zeros(dt, d)), false, 1);
        SDVariable ff = sd.nn.gelu("gelu", sd.nn.linear("ff1", n1, sd.var("f1", randn(r, dt, 0.3, d, 2 * d)),
                sd.var("fb1", randn(r, dt, 0.1, 2 * d))));
        SDVariable ff2 = sd.nn.linear("ff2", ff, sd.var("f2", randn(r, dt, 0.3, 2 * d, d)), sd.var("fb2", randn(r, dt, 0.1, d)));
        SDVariable n2 = sd.nn.layerNorm("ln2", n1.add("res2", ff2), sd.var("g2", Nd4j.ones(dt, d)),
                sd.var("be2", Nd4j.zeros(dt, d)), false, 1);
        SDVariable out = sd.reshape("out", n2, -1, T, d);
        sd.loss.meanSquaredError("loss", label, out, null);
        train(sd, updater);
        return sd;
    }

    /** [N·T, D] → [N, H, T, D/H]. */
    private static SDVariable heads(SameDiff sd, String name, int heads, int d, SDVariable x) {
        return sd.permute(name, sd.reshape(name + "4", x, -1, T, heads, d / heads), 0, 2, 1, 3);
    }

    static Map<String, INDArray> transformerBatch(int n, long seed) {
        return transformerBatch(n, seed, DT);
    }

    static Map<String, INDArray> transformerBatch(int n, long seed, DataType dt) {
        Random r = new Random(seed);
        return Map.of("in", randn(r, dt, 1.0, n, T, D), "label", randn(r, dt, 1.0, n, T, D));
    }
}
