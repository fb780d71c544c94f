package dev.poniard.moe;

import java.util.Collection;
import java.util.Map;
import org.deeplearning4j.nn.api.ParamInitializer;
import org.deeplearning4j.nn.conf.GradientNormalization;
import org.deeplearning4j.nn.conf.InputPreProcessor;
import org.deeplearning4j.nn.conf.NeuralNetConfiguration;
import org.deeplearning4j.nn.conf.inputs.InputType;
import org.deeplearning4j.nn.conf.layers.FeedForwardLayer;
import org.deeplearning4j.nn.conf.memory.LayerMemoryReport;
import org.deeplearning4j.optimize.api.TrainingListener;
import org.nd4j.linalg.activations.Activation;
import org.nd4j.linalg.activations.IActivation;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;

/**
 * Configuration of a Mixture-of-Experts layer for {@code MultiLayerNetwork} and {@code ComputationGraph}: a router
 * sends each token (a row of a [batch, d] input, or a time step of a [batch, d, T] sequence) to k of
 * {@code experts} feed-forward experts d → d_ff → d, and the layer's output is the gate-weighted sum of their
 * outputs plus the outputs of optional shared experts that see every token.
 *
 * <pre>{@code
 * new MoeLayer.Builder().nIn(256).nOut(256).experts(8).topK(2).expertHidden(1024)
 *         .expertActivation(Activation.GELU).capacityFactor(1.25).auxLossWeight(0.01).zLossWeight(1e-3)
 *         .workers(2).build();
 * }</pre>
 *
 * <p>The router is top-k by default; {@code .router(RouterType.NOISY_TOP_K | EXPERT_CHOICE | SOFT_MOE)} selects
 * another and {@code .biasBalancing(γ)} adds DeepSeek-V3's auxiliary-loss-free balancing to a top-k router (see
 * {@link RouterType}).
 *
 * <p>The Switch load-balancing loss and the router z-loss are added to the model's score through
 * {@code calcRegularizationScore} (the only per-layer score hook DL4J has) and their gradients to the router's.
 * With {@code workers > 1} each layer instance owns a Poniard scheduler that runs the expert work; close it with
 * {@link MoeModels#close} when the model is no longer used (its threads are daemons, so a forgotten one does not
 * keep the JVM alive).
 */
public class MoeLayer extends FeedForwardLayer {
    private static final long serialVersionUID = 1L;

    private int experts;
    private int topK;
    private int expertHidden;
    private IActivation expertActivation;
    private int sharedExperts;
    private double capacityFactor;
    private boolean dropless;
    private TokenDropPolicy dropPolicy;
    private boolean renormalizeGates;
    private double auxLossWeight;
    private double routerZLossWeight;
    private int workers;
    private int minChunkTokens;
    private int chunksPerWorker;
    // initialised here so that JSON written before these options existed reads back as plain top-k
    private RouterType router = RouterType.TOP_K;
    private double biasUpdateRate;
    private int slotsPerExpert = 1;

    /** For JSON deserialisation. */
    protected MoeLayer() {
    }

    protected MoeLayer(Builder b) {
        super(b);
        this.experts = b.experts;
        this.topK = b.topK;
        this.expertHidden = b.expertHidden;
        this.expertActivation = b.expertActivation;
        this.sharedExperts = b.sharedExperts;
        this.capacityFactor = b.capacityFactor;
        this.dropless = b.dropless;
        this.dropPolicy = b.dropPolicy;
        this.renormalizeGates = b.renormalizeGates;
        this.auxLossWeight = b.auxLossWeight;
        this.routerZLossWeight = b.zLossWeight;
        this.workers = b.workers;
        this.minChunkTokens = b.minChunkTokens;
        this.chunksPerWorker = b.chunksPerWorker;
        this.router = b.router;
        this.biasUpdateRate = b.biasUpdateRate;
        this.slotsPerExpert = b.slotsPerExpert;
        validate();
    }

    /** Throws {@link IllegalArgumentException} naming the bad value; called on build and on first use. */
    public void validate() {
        require(experts >= 1, "experts must be >= 1, got " + experts);
        require(topK >= 1, "topK must be >= 1, got " + topK);
        require(topK <= experts, "topK = " + topK + " exceeds the number of experts (" + experts + ")");
        require(expertHidden >= 0, "expertHidden (d_ff) must be >= 1 (or 0 for 4·d), got " + expertHidden);
        require(sharedExperts >= 0, "sharedExperts must be >= 0, got " + sharedExperts);
        require(dropless || capacityFactor > 0,
                "capacityFactor must be > 0 (or use dropless(true)), got " + capacityFactor);
        require(!Double.isNaN(capacityFactor), "capacityFactor is NaN");
        require(auxLossWeight >= 0, "auxLossWeight must be >= 0, got " + auxLossWeight);
        require(routerZLossWeight >= 0, "zLossWeight must be >= 0, got " + routerZLossWeight);
        require(workers >= 1, "workers must be >= 1, got " + workers);
        require(minChunkTokens >= 1, "minChunkTokens must be >= 1, got " + minChunkTokens);
        require(chunksPerWorker >= 1, "chunksPerWorker must be >= 1, got " + chunksPerWorker);
        require(expertActivation != null, "expertActivation must be set");
        require(dropPolicy != null, "dropPolicy must be set");
        require(router != null, "router must be set (RouterType.TOP_K, NOISY_TOP_K, EXPERT_CHOICE or SOFT_MOE)");
        require(biasUpdateRate >= 0 && !Double.isNaN(biasUpdateRate),
                "biasBalancing update rate must be >= 0 (0 disables it), got " + biasUpdateRate);
        require(biasUpdateRate == 0 || router == RouterType.TOP_K || router == RouterType.NOISY_TOP_K,
                "biasBalancing(" + biasUpdateRate + ") needs a token-choice router (TOP_K or NOISY_TOP_K), got "
                        + router + ": expert choice is balanced by construction and Soft MoE has no discrete choice");
        // the bias step travels as Rb's "gradient": renormalising the layer's gradient would rescale it
        require(biasUpdateRate == 0 || (gradientNormalization != GradientNormalization.RenormalizeL2PerLayer
                        && gradientNormalization != GradientNormalization.RenormalizeL2PerParamType),
                "biasBalancing cannot be combined with gradientNormalization(" + gradientNormalization + "), which would"
                        + " rescale the ±γ bias step: use a clipping mode or none");
        require(!(dropless && router == RouterType.EXPERT_CHOICE),
                "dropless(true) does not apply to RouterType.EXPERT_CHOICE, whose capacity is what each expert picks:"
                        + " set capacityFactor instead");
        require(slotsPerExpert >= 1, "slotsPerExpert must be >= 1, got " + slotsPerExpert);
        require(nIn <= 0 || nOut <= 0 || nIn == nOut,
                "a MoE layer maps d -> d: nIn (" + nIn + ") must equal nOut (" + nOut + ")");
    }

    private static void require(boolean ok, String message) {
        if (!ok) {
            throw new IllegalArgumentException("MoeLayer: " + message);
        }
    }

    @Override
    public org.deeplearning4j.nn.api.Layer instantiate(NeuralNetConfiguration conf,
                                                       Collection<TrainingListener> trainingListeners,
                                                       int layerIndex, INDArray layerParamsView,
                                                       boolean initializeParams, DataType networkDataType) {
        validate();
        MoeLayerImpl layer = new MoeLayerImpl(conf, networkDataType);
        layer.setListeners(trainingListeners);
        layer.setIndex(layerIndex);
        layer.setParamsViewArray(layerParamsView);
        Map<String, INDArray> table = initializer().init(conf, layerParamsView, initializeParams);
        layer.setParamTable(table);
        layer.setConf(conf);
        return layer;
    }

    @Override
    public ParamInitializer initializer() {
        return MoeParamInitializer.INSTANCE;
    }

    @Override
    public InputType getOutputType(int layerIndex, InputType inputType) {
        if (inputType != null && inputType.getType() == InputType.Type.RNN) {
            InputType.InputTypeRecurrent r = (InputType.InputTypeRecurrent) inputType;
            return InputType.recurrent(nOut, r.getTimeSeriesLength(), r.getFormat());
        }
        return super.getOutputType(layerIndex, inputType);
    }

    @Override
    public void setNIn(InputType inputType, boolean override) {
        if (inputType != null && inputType.getType() == InputType.Type.RNN) {
            if (nIn <= 0 || override) {
                nIn = ((InputType.InputTypeRecurrent) inputType).getSize();
            }
            return;
        }
        super.setNIn(inputType, override);
    }

    @Override
    public InputPreProcessor getPreProcessorForInputType(InputType inputType) {
        // sequences are routed per time step by the layer itself, so no RNN -> FF preprocessor
        if (inputType != null && inputType.getType() == InputType.Type.RNN) {
            return null;
        }
        return super.getPreProcessorForInputType(inputType);
    }

    @Override
    public LayerMemoryReport getMemoryReport(InputType inputType) {
        long params = initializer().numParams(this);
        return new LayerMemoryReport.Builder(layerName, MoeLayer.class, inputType, getOutputType(-1, inputType))
                .standardMemory(params, params).workingMemory(0, 0, 0, 0).cacheMemory(0, 0).build();
    }

    public int getExperts() {
        return experts;
    }

    public int getTopK() {
        return topK;
    }

    /** The configured d_ff, 0 meaning 4·d; see {@link #hidden()}. */
    public int getExpertHidden() {
        return expertHidden;
    }

    /** The experts' hidden width d_ff. */
    public int hidden() {
        return expertHidden > 0 ? expertHidden : (int) (4 * nIn);
    }

    public IActivation getExpertActivation() {
        return expertActivation;
    }

    public int getSharedExperts() {
        return sharedExperts;
    }

    public double getCapacityFactor() {
        return capacityFactor;
    }

    public boolean isDropless() {
        return dropless;
    }

    public TokenDropPolicy getDropPolicy() {
        return dropPolicy;
    }

    public boolean isRenormalizeGates() {
        return renormalizeGates;
    }

    public double getAuxLossWeight() {
        return auxLossWeight;
    }

    /** Weight of the router z-loss (named so that its JSON property matches the field). */
    public double getRouterZLossWeight() {
        return routerZLossWeight;
    }

    public int getWorkers() {
        return workers;
    }

    public int getMinChunkTokens() {
        return minChunkTokens;
    }

    public int getChunksPerWorker() {
        return chunksPerWorker;
    }

    public RouterType getRouter() {
        return router;
    }

    /** γ of auxiliary-loss-free bias balancing, 0 when off; see {@link Builder#biasBalancing(double)}. */
    public double getBiasUpdateRate() {
        return biasUpdateRate;
    }

    /** Whether the layer keeps per-expert selection biases (parameter {@code Rb}). */
    public boolean hasSelectionBias() {
        return biasUpdateRate > 0;
    }

    /** Slots per expert of {@link RouterType#SOFT_MOE}. */
    public int getSlotsPerExpert() {
        return slotsPerExpert;
    }

    /** Columns of the router matrix {@code Wr}: E, or E · slots for Soft MoE. */
    public int routerColumns() {
        return router == RouterType.SOFT_MOE ? experts * slotsPerExpert : experts;
    }

    /**
     * The bias parameter is not trained by gradient descent: its "gradient" is minus the balancing step, applied
     * unchanged (no updater, not divided by the minibatch size, see {@link MoeLayerImpl#updaterDivideByMinibatch}).
     */
    @Override
    public org.nd4j.linalg.learning.config.IUpdater getUpdaterByParam(String paramName) {
        if (MoeParamInitializer.SELECTION_BIAS.equals(paramName)) {
            return new org.nd4j.linalg.learning.config.NoOp();
        }
        return super.getUpdaterByParam(paramName);
    }

    /** Expert capacity in assignments for {@code tokens} tokens; {@code Integer.MAX_VALUE} when dropless. */
    public int capacity(int tokens) {
        if (dropless) {
            return Integer.MAX_VALUE;
        }
        return (int) Math.max(1, Math.ceil(capacityFactor * tokens * topK / experts));
    }

    @Override
    public String toString() {
        return "MoeLayer(d=" + nIn + ", router=" + router + ", experts=" + experts + ", topK=" + topK
                + (biasUpdateRate > 0 ? ", biasBalancing=" + biasUpdateRate : "")
                + (router == RouterType.SOFT_MOE ? ", slotsPerExpert=" + slotsPerExpert : "") + ", d_ff=" + expertHidden
                + ", shared=" + sharedExperts + (dropless ? ", dropless" : ", capacityFactor=" + capacityFactor)
                + ", workers=" + workers + ")";
    }

    /** Builder; defaults: 8 experts, top-2, d_ff = 4·d, ReLU experts, capacity factor 1.25, aux 0.01, z 1e-3. */
    public static class Builder extends FeedForwardLayer.Builder<Builder> {
        private int experts = 8;
        private int topK = 2;
        private int expertHidden;
        private IActivation expertActivation = Activation.RELU.getActivationFunction();
        private int sharedExperts;
        private double capacityFactor = 1.25;
        private boolean dropless;
        private TokenDropPolicy dropPolicy = TokenDropPolicy.BY_POSITION;
        private boolean renormalizeGates = true;
        private double auxLossWeight = 0.01;
        private double zLossWeight = 1e-3;
        private int workers = 1;
        private int minChunkTokens = 64;
        private int chunksPerWorker = 4;
        private RouterType router = RouterType.TOP_K;
        private double biasUpdateRate;
        private int slotsPerExpert = 1;

        public Builder() {
            activation(Activation.IDENTITY);
        }

        /** The routing algorithm (default {@link RouterType#TOP_K}); see {@link RouterType} for each one's settings. */
        public Builder router(RouterType value) {
            router = value;
            return this;
        }

        /**
         * Auxiliary-loss-free load balancing (DeepSeek-V3) with update rate γ (0 disables it; DeepSeek-V3 uses
         * 0.001): a per-expert bias b_e is added to the router probabilities for choosing the top k only (gates use
         * the unbiased probabilities), and after each training step b_e += γ · sign(mean load − load_e), the load
         * being the assignments that chose e in that step's batch. The biases are the non-trainable parameter
         * {@code Rb}, saved with the model. For TOP_K and NOISY_TOP_K; usually with {@code auxLossWeight(0)}. The
         * step is delivered as Rb's gradient, so gradient-clipping modes that see the whole layer also see it, and the
         * renormalising modes are refused.
         */
        public Builder biasBalancing(double updateRate) {
            biasUpdateRate = updateRate;
            return this;
        }

        /** Slots per expert for {@link RouterType#SOFT_MOE} (default 1). */
        public Builder slotsPerExpert(int value) {
            slotsPerExpert = value;
            return this;
        }

        /** Number of routed experts E. */
        public Builder experts(int value) {
            experts = value;
            return this;
        }

        /** Experts per token k (k rounds of argmax). */
        public Builder topK(int value) {
            topK = value;
            return this;
        }

        /** Hidden width d_ff of every expert (default 4·d). */
        public Builder expertHidden(int value) {
            expertHidden = value;
            return this;
        }

        public Builder expertActivation(Activation value) {
            return expertActivation(value.getActivationFunction());
        }

        public Builder expertActivation(IActivation value) {
            expertActivation = value;
            return this;
        }

        /** Experts that every token passes through with gate 1 (DeepSeekMoE's shared experts). */
        public Builder sharedExperts(int value) {
            sharedExperts = value;
            return this;
        }

        /** Capacity per expert = ceil(factor · tokens · k / E); assignments beyond it are dropped. */
        public Builder capacityFactor(double value) {
            capacityFactor = value;
            return this;
        }

        /** No capacity limit: no token is ever dropped. */
        public Builder dropless(boolean value) {
            dropless = value;
            return this;
        }

        public Builder dropPolicy(TokenDropPolicy value) {
            dropPolicy = value;
            return this;
        }

        /**
         * Whether gates of k > 1 are renormalised to sum to 1 over the chosen experts (default true). With k = 1 the
         * gate is always the raw probability, as in Switch; a renormalised single gate would be 1 and the router
         * would get no gradient from the task loss.
         */
        public Builder renormalizeGates(boolean value) {
            renormalizeGates = value;
            return this;
        }

        /** Weight α of the Switch load-balancing loss α · E · Σ f_e · P_e (0 disables it). */
        public Builder auxLossWeight(double value) {
            auxLossWeight = value;
            return this;
        }

        /** Weight of the router z-loss mean((logsumexp logits)²) (ST-MoE; 0 disables it). */
        public Builder zLossWeight(double value) {
            zLossWeight = value;
            return this;
        }

        /** Scheduler workers for the expert work; 1 runs it inline on the calling thread. */
        public Builder workers(int value) {
            workers = value;
            return this;
        }

        /** Experts are never split into chunks smaller than this many tokens. */
        public Builder minChunkTokens(int value) {
            minChunkTokens = value;
            return this;
        }

        /** Target number of (expert, chunk) tasks per worker when splitting hot experts. */
        public Builder chunksPerWorker(int value) {
            chunksPerWorker = value;
            return this;
        }

        /** Sets nIn = nOut = d. */
        public Builder size(int d) {
            nIn(d);
            return nOut(d);
        }

        @Override
        @SuppressWarnings("unchecked")
        public MoeLayer build() {
            if (nOut <= 0 && nIn > 0) {
                nOut = nIn;
            }
            return new MoeLayer(this);
        }
    }
}
