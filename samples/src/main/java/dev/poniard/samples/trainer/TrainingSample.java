package dev.poniard.samples.trainer;

import java.io.IOException;
import java.io.InputStream;
import java.nio.file.Files;
import java.nio.file.Path;
import dev.poniard.trainer.EpochShards;
import java.util.ArrayList;
import java.util.List;
import org.deeplearning4j.nn.conf.MultiLayerConfiguration;
import org.deeplearning4j.nn.conf.NeuralNetConfiguration;
import org.deeplearning4j.nn.conf.inputs.InputType;
import org.deeplearning4j.nn.conf.layers.ConvolutionLayer;
import org.deeplearning4j.nn.conf.layers.DenseLayer;
import org.deeplearning4j.nn.conf.layers.OutputLayer;
import org.deeplearning4j.nn.conf.layers.SubsamplingLayer;
import org.deeplearning4j.nn.multilayer.MultiLayerNetwork;
import org.deeplearning4j.nn.weights.WeightInit;
import org.nd4j.linalg.activations.Activation;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.dataset.DataSet;
import org.nd4j.linalg.dataset.ViewIterator;
import org.nd4j.linalg.dataset.api.iterator.DataSetIterator;
import org.nd4j.linalg.factory.Nd4j;
import org.nd4j.linalg.learning.config.Adam;
import org.nd4j.linalg.lossfunctions.LossFunctions;

/** The samples {@code ./poniard train} knows: a model and its train/test data. */
public enum TrainingSample {
    /** An MLP on the 10,000-image MNIST subset shipped in the samples jar (the last 2,000 are the test set). */
    MNIST_MLP("mnist-mlp", 5),
    /** A small CNN on Fashion-MNIST from Debian's dataset-fashion-mnist package. */
    FASHION_CNN("fashion-cnn", 2);

    /** Where Debian's package {@code dataset-fashion-mnist} installs the IDX files. */
    public static final Path FASHION_DIR = Path.of("/usr/share/datasets/fashion-mnist");
    static final int MNIST_TEST = 2_000;

    private final String cliName;
    private final int defaultEpochs;

    TrainingSample(String cliName, int defaultEpochs) {
        this.cliName = cliName;
        this.defaultEpochs = defaultEpochs;
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
        };
        MultiLayerNetwork net = new MultiLayerNetwork(conf);
        net.init();
        return net;
    }

    /** Train and test data, the train set cut to {@code trainLimit} and the test set to {@code testLimit} (0: all). */
    public Data load(int trainLimit, int testLimit) throws IOException {
        return switch (this) {
            case MNIST_MLP -> {
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
            case FASHION_CNN -> {
                if (!Files.isDirectory(FASHION_DIR)) {
                    throw new IOException("Fashion-MNIST is not installed: " + FASHION_DIR + " does not exist. Install it with"
                            + " 'apt-get install dataset-fashion-mnist' (Debian/Ubuntu), or use the default sample");
                }
                yield new Data(fashion("train", trainLimit), fashion("t10k", testLimit));
            }
        };
    }

    private static DataSet fashion(String prefix, int limit) throws IOException {
        Path im = find(prefix + "-images-idx3-ubyte"), lb = find(prefix + "-labels-idx1-ubyte");
        try (InputStream i = Files.newInputStream(im); InputStream l = Files.newInputStream(lb)) {
            return IdxData.read(i, l, im.toString(), 10, limit);
        }
    }

    private static Path find(String base) throws IOException {
        for (String name : List.of(base + ".gz", base, base.replace("-idx", ".idx") + ".gz")) {
            Path p = FASHION_DIR.resolve(name);
            if (Files.isRegularFile(p)) {
                return p;
            }
        }
        throw new IOException("Fashion-MNIST file " + base + "[.gz] not found in " + FASHION_DIR
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
        int[] idx = new int[end - from];
        for (int i = 0; i < idx.length; i++) {
            idx[i] = from + i;
        }
        return new DataSet(all.getFeatures().getRows(idx), all.getLabels().getRows(idx));
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
