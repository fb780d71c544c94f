package dev.poniard.moe;

import java.util.ArrayList;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import org.deeplearning4j.nn.api.ParamInitializer;
import org.deeplearning4j.nn.conf.NeuralNetConfiguration;
import org.deeplearning4j.nn.conf.layers.Layer;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.indexing.NDArrayIndex;

/**
 * Parameters of a {@link MoeLayer}, in this order in the flattened parameter vector: the router {@code Wr}
 * [d, E] ([d, E · slots] for Soft MoE), the noise weights {@code Wn} [d, E] (noisy top-k only), the selection
 * biases {@code Rb} [1, E] (bias balancing only; not trained by gradient descent and neither weight nor bias for
 * regularisation), then per routed expert e {@code e<e>W1} [d, d_ff], {@code e<e>b1} [1, d_ff],
 * {@code e<e>W2} [d_ff, d],
 * {@code e<e>b2} [1, d], then the same four per shared expert as {@code s<j>…}. Matrices are 'f'-order views of
 * the flattened vector, as DL4J's own layers keep theirs.
 */
public final class MoeParamInitializer implements ParamInitializer {
    public static final MoeParamInitializer INSTANCE = new MoeParamInitializer();
    /** DL4J splits gradient keys "layer_param" at the last underscore, so parameter names must not contain one. */
    public static final String ROUTER_W = "Wr";
    /** Noisy top-k's noise weights W_noise. */
    public static final String NOISE_W = "Wn";
    /** Per-expert selection biases of auxiliary-loss-free balancing. */
    public static final String SELECTION_BIAS = "Rb";

    private MoeParamInitializer() {
    }

    /** Name of a routed expert's parameter, e.g. {@code expertParam(3, "W1")} = {@code e3W1}. */
    public static String expertParam(int expert, String which) {
        return "e" + expert + which;
    }

    /** Name of a shared expert's parameter, e.g. {@code s0b2}. */
    public static String sharedParam(int shared, String which) {
        return "s" + shared + which;
    }

    private static MoeLayer moe(Layer layer) {
        if (!(layer instanceof MoeLayer)) {
            throw new IllegalArgumentException("MoeParamInitializer needs a MoeLayer, got " + layer);
        }
        return (MoeLayer) layer;
    }

    @Override
    public long numParams(NeuralNetConfiguration conf) {
        return numParams(conf.getLayer());
    }

    @Override
    public long numParams(Layer layer) {
        MoeLayer m = moe(layer);
        long d = m.getNIn();
        long h = m.hidden();
        long expert = d * h + h + h * d + d;
        return d * m.routerColumns() + routerExtras(m) + expert * (m.getExperts() + m.getSharedExperts());
    }

    private static long routerExtras(MoeLayer m) {
        long n = 0;
        if (m.getRouter() == RouterType.NOISY_TOP_K) {
            n += m.getNIn() * m.getExperts();
        }
        if (m.hasSelectionBias()) {
            n += m.getExperts();
        }
        return n;
    }

    @Override
    public List<String> paramKeys(Layer layer) {
        MoeLayer m = moe(layer);
        List<String> keys = new ArrayList<>();
        keys.add(ROUTER_W);
        if (m.getRouter() == RouterType.NOISY_TOP_K) {
            keys.add(NOISE_W);
        }
        if (m.hasSelectionBias()) {
            keys.add(SELECTION_BIAS);
        }
        for (int e = 0; e < m.getExperts(); e++) {
            for (String w : new String[] {"W1", "b1", "W2", "b2"}) {
                keys.add(expertParam(e, w));
            }
        }
        for (int s = 0; s < m.getSharedExperts(); s++) {
            for (String w : new String[] {"W1", "b1", "W2", "b2"}) {
                keys.add(sharedParam(s, w));
            }
        }
        return Collections.unmodifiableList(keys);
    }

    @Override
    public List<String> weightKeys(Layer layer) {
        List<String> out = new ArrayList<>();
        for (String k : paramKeys(layer)) {
            if (isWeight(k)) {
                out.add(k);
            }
        }
        return out;
    }

    @Override
    public List<String> biasKeys(Layer layer) {
        List<String> out = new ArrayList<>();
        for (String k : paramKeys(layer)) {
            if (isBias(k)) {
                out.add(k);
            }
        }
        return out;
    }

    private static boolean isBias(String key) {
        return key.matches("[es]\\d+b[12]");
    }

    private static boolean isWeight(String key) {
        return !isBias(key) && !SELECTION_BIAS.equals(key);
    }

    @Override
    public boolean isWeightParam(Layer layer, String key) {
        return isWeight(key);
    }

    @Override
    public boolean isBiasParam(Layer layer, String key) {
        return isBias(key);
    }

    @Override
    public Map<String, INDArray> init(NeuralNetConfiguration conf, INDArray paramsView, boolean initializeParams) {
        MoeLayer m = moe(conf.getLayer());
        Map<String, INDArray> views = slice(m, paramsView);
        if (initializeParams) {
            long d = m.getNIn();
            long h = m.hidden();
            for (Map.Entry<String, INDArray> e : views.entrySet()) {
                INDArray v = e.getValue();
                String k = e.getKey();
                if (isBias(k)) {
                    v.assign(m.getBiasInit());
                } else if (k.equals(NOISE_W) || k.equals(SELECTION_BIAS)) {
                    // zero noise weights give every logit the same noise scale softplus(0) (as Shazeer et al.);
                    // balancing starts from no bias
                    v.assign(0);
                } else if (k.equals(ROUTER_W)) {
                    m.getWeightInitFn().init(d, m.routerColumns(), v.shape(), 'f', v);
                } else if (k.endsWith("W1")) {
                    m.getWeightInitFn().init(d, h, v.shape(), 'f', v);
                } else {
                    m.getWeightInitFn().init(h, d, v.shape(), 'f', v);
                }
            }
        }
        return views;
    }

    @Override
    public Map<String, INDArray> getGradientsFromFlattened(NeuralNetConfiguration conf, INDArray gradientView) {
        return slice(moe(conf.getLayer()), gradientView);
    }

    /** Views of the flattened vector, one per parameter, in {@link #paramKeys} order. */
    static Map<String, INDArray> slice(MoeLayer m, INDArray flat) {
        long expected = INSTANCE.numParams(m);
        if (flat.length() != expected) {
            throw new IllegalArgumentException("MoeLayer expects " + expected + " parameters, got a view of " + flat.length());
        }
        INDArray row = flat.reshape(flat.length());
        long d = m.getNIn();
        long h = m.hidden();
        Map<String, INDArray> out = new LinkedHashMap<>();
        long[] at = {0};
        out.put(ROUTER_W, take(row, at, d, m.routerColumns()));
        if (m.getRouter() == RouterType.NOISY_TOP_K) {
            out.put(NOISE_W, take(row, at, d, m.getExperts()));
        }
        if (m.hasSelectionBias()) {
            out.put(SELECTION_BIAS, take(row, at, 1, m.getExperts()));
        }
        for (int e = 0; e < m.getExperts() + m.getSharedExperts(); e++) {
            boolean shared = e >= m.getExperts();
            int i = shared ? e - m.getExperts() : e;
            out.put(shared ? sharedParam(i, "W1") : expertParam(i, "W1"), take(row, at, d, h));
            out.put(shared ? sharedParam(i, "b1") : expertParam(i, "b1"), take(row, at, 1, h));
            out.put(shared ? sharedParam(i, "W2") : expertParam(i, "W2"), take(row, at, h, d));
            out.put(shared ? sharedParam(i, "b2") : expertParam(i, "b2"), take(row, at, 1, d));
        }
        return out;
    }

    private static INDArray take(INDArray row, long[] at, long rows, long cols) {
        long n = rows * cols;
        INDArray v = row.get(NDArrayIndex.interval(at[0], at[0] + n)).reshape('f', rows, cols);
        at[0] += n;
        return v;
    }
}
