package dev.poniard.samples.trainer;

import java.io.IOException;
import java.io.InputStream;
import java.nio.file.Files;
import java.nio.file.Path;
import dev.poniard.trainer.EpochShards;
import java.util.ArrayList;
import java.util.List;
import org.deeplearning4j.nn.conf.MultiLayerConfiguration;
import org.nd4j.autodiff.samediff.SDVariable;
import org.nd4j.autodiff.samediff.SameDiff;
import org.nd4j.autodiff.samediff.TrainingConfig;
import org.deeplearning4j.nn.conf.NeuralNetConfiguration;
import org.deeplearning4j.nn.conf.inputs.InputType;
import org.deeplearning4j.nn.conf.layers.ConvolutionLayer;
import org.deeplearning4j.nn.conf.layers.DenseLayer;
import org.deeplearning4j.nn.conf.layers.OutputLayer;
import org.deeplearning4j.nn.conf.layers.GlobalPoolingLayer;
import org.deeplearning4j.nn.conf.layers.PoolingType;
import org.deeplearning4j.nn.conf.layers.SubsamplingLayer;
import org.deeplearning4j.nn.conf.layers.recurrent.TimeDistributed;
import org.deeplearning4j.nn.conf.RNNFormat;
import dev.poniard.moe.MoeLayer;
import org.deeplearning4j.nn.multilayer.MultiLayerNetwork;
import org.deeplearning4j.nn.weights.WeightInit;
import org.nd4j.linalg.activations.Activation;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.dataset.DataSet;
import org.nd4j.linalg.dataset.ViewIterator;
import org.nd4j.linalg.dataset.api.iterator.DataSetIterator;
import org.nd4j.linalg.factory.Nd4j;
import org.nd4j.linalg.indexing.INDArrayIndex;
import org.nd4j.linalg.indexing.NDArrayIndex;
import org.nd4j.linalg.learning.config.Adam;
import org.nd4j.linalg.lossfunctions.LossFunctions;

/** The samples {@code ./poniard train} knows: a model and its train/test data. */
public enum TrainingSample {
    /** An MLP on the 10,000-image MNIST subset shipped in the samples jar (the last 2,000 are the test set). */
    MNIST_MLP("mnist-mlp", 5, 32),
    /** The MLP of mnist-mlp written as a SameDiff graph, trained through the bridge. */
    MNIST_SAMEDIFF("mnist-samediff", 5, 32),
    /**
     * A deeper SameDiff MLP (784 → 256 → 128 → 10) on the shipped MNIST subset, trained with pipeline parallelism: its
     * ops cut into stages on in-process workers or on ranks ({@code SameDiffPipeline}); the batch is per step.
     */
    MNIST_PIPELINE("mnist-pipeline", 3, 64),
    /** A small CNN on Fashion-MNIST from Debian's dataset-fashion-mnist package. */
    FASHION_CNN("fashion-cnn", 2, 32),
    /**
     * Fashion-MNIST images as 16 tokens of 7 x 7 pixels through a Mixture-of-Experts FFN (8 experts, top-2),
     * trained against the same model with one dense FFN of the same active size (2 x the expert width).
     */
    FASHION_MOE("fashion-moe", 3, 64);

    /** Patch side, tokens per image side, and the token width of the fashion-moe models. */
    static final int PATCH = 7, GRID = 4, TOKEN_DIM = 64, EXPERTS = 8, TOP_K = 2, EXPERT_HIDDEN = 128;
    /** A token: its 7 x 7 pixels and a one-hot of its position among the 16 patches. */
    static final int TOKEN_FEATURES = PATCH * PATCH + GRID * GRID;

    /** Where Debian's package {@code dataset-fashion-mnist} installs the IDX files. */
    public static final Path FASHION_DIR = Path.of("/usr/share/datasets/fashion-mnist");
    static final int MNIST_TEST = 2_000;

    private final String cliName;
    private final int defaultEpochs;
    private final int defaultBatch;

    TrainingSample(String cliName, int defaultEpochs, int defaultBatch) {
        this.cliName = cliName;
        this.defaultEpochs = defaultEpochs;
        this.defaultBatch = defaultBatch;
    }

    /** Examples per worker per step unless {@code --batch} says otherwise. */
    public int defaultBatch() {
        return defaultBatch;
    }

    public String cliName() {
        return cliName;
    }

    public int defaultEpochs() {
        return defaultEpochs;
    }

    public static TrainingSample byName(String name) {
        List<String> names = new ArrayList<>();
        for (TrainingSample s : values()) {
            if (s.cliName.equals(name)) {
                return s;
            }
            names.add(s.cliName);
        }
        throw new IllegalArgumentException("unknown sample '" + name + "'; available: " + String.join(", ", names));
    }

    /** The SameDiff samples' prediction (class probabilities) variable. */
    public static final String SAMEDIFF_OUTPUT = "softmax";

    /** A model to train and the name it is reported under: a DL4J network or a SameDiff graph. */
    public record Model(String label, MultiLayerNetwork net, SameDiff sameDiff) {
    }

    /** The models this sample trains, in order: one, or the MoE model and its dense baseline. */
    public List<Model> models(long seed) {
        return switch (this) {
            case FASHION_MOE -> List.of(new Model("moe", tokenModel(seed, EXPERTS, TOP_K, EXPERT_HIDDEN), null),
                    new Model("dense", tokenModel(seed, 1, 1, TOP_K * EXPERT_HIDDEN), null));
            case MNIST_SAMEDIFF -> List.of(new Model(cliName, null, sameDiffMlp(seed, 256)));
            case MNIST_PIPELINE -> List.of(new Model(cliName, null, sameDiffMlp(seed, 256, 128)));
            default -> List.of(new Model(cliName, model(seed), null));
        };
    }

    /**
     * 784 → hidden (ReLU) … → 10 softmax with cross-entropy and Adam, in SameDiff: {256} is mnist-mlp's model, {256,
     * 128} has enough layers to cut into pipeline stages. He initialisation for the ReLU layers, Xavier for the
     * output, as the DL4J sample's WeightInit.
     */
    private static SameDiff sameDiffMlp(long seed, int... hidden) {
        SameDiff sd = SameDiff.create();
        Nd4j.getRandom().setSeed(seed);
        SDVariable x = sd.placeHolder("in", DataType.FLOAT, -1, 784);
        SDVariable label = sd.placeHolder("label", DataType.FLOAT, -1, 10);
        int fanIn = 784;
        for (int l = 0; l < hidden.length; l++) {
            SDVariable w = sd.var("w" + l, Nd4j.randn(DataType.FLOAT, fanIn, hidden[l]).muli(Math.sqrt(2.0 / fanIn)));
            SDVariable b = sd.var("b" + l, Nd4j.zeros(DataType.FLOAT, hidden[l]));
            x = sd.nn.relu(x.mmul(w).add(b), 0);
            fanIn = hidden[l];
        }
        int out = hidden.length;
        SDVariable w = sd.var("w" + out, Nd4j.randn(DataType.FLOAT, fanIn, 10).muli(Math.sqrt(2.0 / (fanIn + 10))));
        SDVariable b = sd.var("b" + out, Nd4j.zeros(DataType.FLOAT, 10));
        SDVariable logits = x.mmul(w).add(b);
        sd.nn.softmax(SAMEDIFF_OUTPUT, logits);
        sd.loss.softmaxCrossEntropy("loss", label, logits, null);
        sd.setLossVariables("loss");
        sd.setTrainingConfig(TrainingConfig.builder().updater(new Adam(1e-3)).dataSetFeatureMapping("in")
                .dataSetLabelMapping("label").build());
        return sd;
    }

    /**
     * Patch tokens → per-token linear embedding → an FFN as a MoE layer → mean over tokens → softmax. One expert
     * with k = 1 is exactly a dense FFN (its gate is 1), so both models share every other line of code.
     */
    private static MultiLayerNetwork tokenModel(long seed, int experts, int topK, int hidden) {
        MultiLayerConfiguration conf = new NeuralNetConfiguration.Builder().seed(seed).dataType(DataType.FLOAT)
                .weightInit(WeightInit.RELU).updater(new Adam(2e-3)).list()
                .layer(new TimeDistributed(new DenseLayer.Builder().nIn(TOKEN_FEATURES).nOut(TOKEN_DIM)
                        .activation(Activation.RELU).build(), RNNFormat.NCW))
                .layer(new MoeLayer.Builder().size(TOKEN_DIM).experts(experts).topK(topK).expertHidden(hidden)
                        .expertActivation(Activation.GELU).dropless(true).auxLossWeight(experts > 1 ? 0.01 : 0)
                        .biasBalancing(experts > 1 ? 1e-3 : 0)
                        .workers(1).build())
                .layer(new GlobalPoolingLayer.Builder(PoolingType.AVG).build())
                .layer(new OutputLayer.Builder(LossFunctions.LossFunction.MCXENT).nOut(10)
                        .activation(Activation.SOFTMAX).weightInit(WeightInit.XAVIER).build())
                .setInputType(InputType.recurrent(TOKEN_FEATURES, GRID * GRID, RNNFormat.NCW)).build();
        MultiLayerNetwork net = new MultiLayerNetwork(conf);
        net.init();
        return net;
    }

    /** Images [n, 784] as [n, 49, 16]: token t = (row block, column block), feature f = (row, column) in the patch. */
    static DataSet patchTokens(DataSet images) {
        long n = images.numExamples();
        INDArray pixels = images.getFeatures().reshape('c', n, GRID, PATCH, GRID, PATCH).permute(0, 2, 4, 1, 3)
                .dup('c').reshape('c', n, PATCH * PATCH, GRID * GRID);
        // A one-hot position per token: blank patches are common and would otherwise be identical tokens, which no
        // router can spread over experts.
        INDArray position = Nd4j.eye(GRID * GRID).castTo(pixels.dataType()).reshape(1, GRID * GRID, GRID * GRID)
                .broadcast(n, GRID * GRID, GRID * GRID);
        return new DataSet(Nd4j.concat(1, pixels, position), images.getLabels());
    }

    public MultiLayerNetwork model(long seed) {
        NeuralNetConfiguration.ListBuilder b = new NeuralNetConfiguration.Builder().seed(seed).dataType(DataType.FLOAT)
                .weightInit(WeightInit.RELU).updater(new Adam(1e-3)).list();
        MultiLayerConfiguration conf = switch (this) {
            case MNIST_MLP -> b
                    .layer(new DenseLayer.Builder().nIn(784).nOut(256).activation(Activation.RELU).build())
                    .layer(new OutputLayer.Builder(LossFunctions.LossFunction.MCXENT).nOut(10)
                            .activation(Activation.SOFTMAX).weightInit(WeightInit.XAVIER).build())
                    .setInputType(InputType.feedForward(784)).build();
            case FASHION_CNN -> b
                    .layer(new ConvolutionLayer.Builder(5, 5).nOut(16).activation(Activation.RELU).build())
                    .layer(new SubsamplingLayer.Builder(SubsamplingLayer.PoolingType.MAX).kernelSize(2, 2).stride(2, 2).build())
                    .layer(new ConvolutionLayer.Builder(3, 3).nOut(32).activation(Activation.RELU).build())
                    .layer(new SubsamplingLayer.Builder(SubsamplingLayer.PoolingType.MAX).kernelSize(2, 2).stride(2, 2).build())
                    .layer(new DenseLayer.Builder().nOut(128).activation(Activation.RELU).build())
                    .layer(new OutputLayer.Builder(LossFunctions.LossFunction.MCXENT).nOut(10)
                            .activation(Activation.SOFTMAX).weightInit(WeightInit.XAVIER).build())
                    .setInputType(InputType.convolutionalFlat(28, 28, 1)).build();
            case FASHION_MOE, MNIST_SAMEDIFF, MNIST_PIPELINE -> throw new IllegalStateException(cliName + " is not a single DL4J network:"
                    + " use models(seed)");
        };
        MultiLayerNetwork net = new MultiLayerNetwork(conf);
        net.init();
        return net;
    }

    /** Train and test data, the train set cut to {@code trainLimit} and the test set to {@code testLimit} (0: all). */
    public Data load(int trainLimit, int testLimit) throws IOException {
        return load(trainLimit, testLimit, FASHION_DIR);
    }

    /** As {@link #load(int, int)}, reading Fashion-MNIST's IDX files from {@code fashionDir}. */
    public Data load(int trainLimit, int testLimit, Path fashionDir) throws IOException {
        return switch (this) {
            case MNIST_MLP, MNIST_SAMEDIFF, MNIST_PIPELINE -> {
                DataSet all;
                try (InputStream im = resource("data/mnist-10k-images-idx3-ubyte.gz");
                     InputStream lb = resource("data/mnist-10k-labels-idx1-ubyte.gz")) {
                    all = IdxData.read(im, lb, "MNIST subset", 10, 0);
                }
                int n = all.numExamples();
                DataSet train = rows(all, 0, n - MNIST_TEST, trainLimit);
                DataSet test = rows(all, n - MNIST_TEST, n, testLimit);
                yield new Data(train, test);
            }
            case FASHION_CNN, FASHION_MOE -> {
                if (!Files.isDirectory(fashionDir)) {
                    throw new IOException("Fashion-MNIST is not installed: " + fashionDir + " does not exist. Install it with"
                            + " 'apt-get install dataset-fashion-mnist' (Debian/Ubuntu), or use the default sample");
                }
                DataSet train = fashion(fashionDir, "train", trainLimit), test = fashion(fashionDir, "t10k", testLimit);
                yield this == FASHION_MOE ? new Data(patchTokens(train), patchTokens(test)) : new Data(train, test);
            }
        };
    }

    private static DataSet fashion(Path dir, String prefix, int limit) throws IOException {
        Path im = find(dir, prefix + "-images-idx3-ubyte"), lb = find(dir, prefix + "-labels-idx1-ubyte");
        try (InputStream i = Files.newInputStream(im); InputStream l = Files.newInputStream(lb)) {
            return IdxData.read(i, l, im.toString(), 10, limit);
        }
    }

    private static Path find(Path dir, String base) throws IOException {
        for (String name : List.of(base + ".gz", base, base.replace("-idx", ".idx") + ".gz")) {
            Path p = dir.resolve(name);
            if (Files.isRegularFile(p)) {
                return p;
            }
        }
        throw new IOException("Fashion-MNIST file " + base + "[.gz] not found in " + dir
                + "; reinstall the package: apt-get install --reinstall dataset-fashion-mnist");
    }

    private static InputStream resource(String name) throws IOException {
        InputStream in = TrainingSample.class.getClassLoader().getResourceAsStream(name);
        if (in == null) {
            throw new IOException("resource " + name + " is missing from the class path; build the samples module"
                    + " (./mvnw -pl samples -am package) or run through ./poniard");
        }
        return in;
    }

    private static DataSet rows(DataSet all, int from, int to, int limit) {
        int end = limit > 0 ? Math.min(to, from + limit) : to;
        return new DataSet(rows(all.getFeatures(), from, end), rows(all.getLabels(), from, end));
    }

    /**
     * Rows {@code [from, end)} of {@code a} as a copy of their own. One interval copy: {@code getRows} of the row
     * indices copied row by row, ~1 s of CPU for the 10,000 MNIST images, a sixth of {@code ./poniard train}.
     */
    private static INDArray rows(INDArray a, int from, int end) {
        INDArrayIndex[] idx = new INDArrayIndex[a.rank()];
        idx[0] = NDArrayIndex.interval(from, end);
        for (int d = 1; d < idx.length; d++) {
            idx[d] = NDArrayIndex.all();
        }
        return a.get(idx).dup('c');
    }

    /** Train and test sets of a sample. */
    public record Data(DataSet train, DataSet test) {
        /**
         * Rank {@code rank}'s share of epoch {@code epoch}'s training data ({@link EpochShards}): the train set shuffled
         * by {@code seed} and the epoch number, so a run resumed from a checkpoint sees the same order as an
         * uninterrupted one, cut into global batches of {@code globalBatch} shared among {@code ranks} ranks.
         */
        public DataSetIterator trainEpoch(long seed, int epoch, int globalBatch, int rank, int ranks) {
            return EpochShards.forRank(train, seed, epoch, globalBatch, rank, ranks);
        }

        /** Epoch {@code epoch}'s training data for a single process, in batches of {@code batch}. */
        public DataSetIterator trainEpoch(long seed, int epoch, int batch) {
            return trainEpoch(seed, epoch, batch, 0, 1);
        }

        public DataSetIterator testIterator(int batch) {
            return new ViewIterator(test, batch);
        }
    }
}
