package dev.poniard.trainer;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertInstanceOf;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertSame;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;
import java.util.stream.Stream;
import org.deeplearning4j.nn.api.Model;
import org.deeplearning4j.nn.conf.MultiLayerConfiguration;
import org.deeplearning4j.nn.conf.NeuralNetConfiguration;
import org.deeplearning4j.nn.conf.layers.DenseLayer;
import org.deeplearning4j.nn.conf.layers.OutputLayer;
import org.deeplearning4j.nn.graph.ComputationGraph;
import org.deeplearning4j.nn.multilayer.MultiLayerNetwork;
import org.deeplearning4j.optimize.api.BaseTrainingListener;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.Arguments;
import org.junit.jupiter.params.provider.MethodSource;
import org.nd4j.linalg.activations.Activation;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.dataset.DataSet;
import org.nd4j.linalg.dataset.ViewIterator;
import org.nd4j.linalg.dataset.adapter.SingletonDataSetIterator;
import org.nd4j.linalg.dataset.api.iterator.DataSetIterator;
import org.nd4j.linalg.factory.Nd4j;
import org.nd4j.linalg.learning.config.Adam;
import org.nd4j.linalg.learning.config.IUpdater;
import org.nd4j.linalg.learning.config.Nesterovs;
import org.nd4j.linalg.learning.config.Sgd;
import org.nd4j.linalg.lossfunctions.LossFunctions;

@Timeout(value = 120, unit = TimeUnit.SECONDS, threadMode = Timeout.ThreadMode.SEPARATE_THREAD)
class ParallelTrainerTest {
    static final int IN = 12;
    static final int CLASSES = 4;
    /** 19 batches of 32 and a last one of 21: 20 steps, the last one with uneven shards. */
    static final int EXAMPLES = 19 * 32 + 21;

    static MultiLayerNetwork mlp(IUpdater updater, long seed) {
        MultiLayerConfiguration conf = new NeuralNetConfiguration.Builder().seed(seed).updater(updater)
                .dataType(DataType.FLOAT).list()
                .layer(new DenseLayer.Builder().nIn(IN).nOut(24).activation(Activation.TANH).build())
                .layer(new OutputLayer.Builder(LossFunctions.LossFunction.MCXENT).nIn(24).nOut(CLASSES)
                        .activation(Activation.SOFTMAX).build())
                .build();
        MultiLayerNetwork net = new MultiLayerNetwork(conf);
        net.init();
        return net;
    }

    static ComputationGraph graph(IUpdater updater, long seed) {
        ComputationGraph cg = new ComputationGraph(new NeuralNetConfiguration.Builder().seed(seed).updater(updater)
                .dataType(DataType.FLOAT).graphBuilder().addInputs("in")
                .addLayer("h", new DenseLayer.Builder().nIn(IN).nOut(24).activation(Activation.RELU).build(), "in")
                .addLayer("out", new OutputLayer.Builder(LossFunctions.LossFunction.MCXENT).nIn(24).nOut(CLASSES)
                        .activation(Activation.SOFTMAX).build(), "h")
                .setOutputs("out").build());
        cg.init();
        return cg;
    }

    /** Random features and one-hot labels that depend on them (so training has something to learn). */
    static DataSet data(int n, long seed) {
        System.out.println("data seed " + seed + ", " + n + " examples");
        Nd4j.getRandom().setSeed(seed);
        INDArray x = Nd4j.randn(DataType.FLOAT, n, IN);
        INDArray w = Nd4j.randn(DataType.FLOAT, IN, CLASSES);
        INDArray cls = x.mmul(w).argMax(1);
        INDArray y = Nd4j.zeros(DataType.FLOAT, n, CLASSES);
        for (int i = 0; i < n; i++) {
            y.putScalar(i, cls.getInt(i), 1f);
        }
        return new DataSet(x, y);
    }

    static DataSetIterator iterator(DataSet all, int batch) {
        return new ViewIterator(all, batch);
    }

    /** max |a - b| / max |b|: relative error of the whole vector. */
    static double relError(INDArray a, INDArray b) {
        double scale = Math.max(b.amaxNumber().doubleValue(), 1e-12);
        return a.sub(b).amaxNumber().doubleValue() / scale;
    }

    static Stream<Arguments> matchCases() {
        return Stream.of(
                Arguments.of("adam", new Adam(1e-2), 2, 16),
                Arguments.of("nesterovs", new Nesterovs(0.05, 0.9), 2, 16),
                Arguments.of("sgd", new Sgd(0.1), 3, 0),
                Arguments.of("adam", new Adam(1e-2), 3, 0));
    }

    @ParameterizedTest(name = "{0}, {2} workers, batch per worker {3}")
    @MethodSource("matchCases")
    void shouldMatchSingleModelFitAfter20Steps(String name, IUpdater updater, int workers, int perWorker) {
        DataSet all = data(EXAMPLES, 11);
        MultiLayerNetwork reference = mlp(updater, 7);
        MultiLayerNetwork net = reference.clone();
        reference.fit(iterator(all, 32));

        try (ParallelTrainer t = ParallelTrainer.launch(new ParallelTrainer.Context().model(net).workers(workers)
                .batchSizePerWorker(perWorker))) {
            t.fit(iterator(all, 32), 1);
            assertEquals(20, t.progress().steps());
        }
        assertEquals(20, net.getIterationCount());
        assertEquals(1, net.getEpochCount());
        double err = relError(net.params(), reference.params());
        System.out.printf("%s, %d workers: relative parameter error after 20 steps %.3e%n", name, workers, err);
        assertTrue(err <= 1e-5, "parameters differ from model.fit by " + err + " (relative)");
        assertNotEquals(0.0, relError(net.params(), mlp(updater, 7).params()), "training must change the parameters");
        if (reference.getUpdater().getStateViewArray() != null) {
            assertTrue(relError(net.getUpdater().getStateViewArray(), reference.getUpdater().getStateViewArray()) <= 1e-5,
                    "updater state differs from model.fit");
        }
    }

    @Test
    void shouldMatchSingleModelFitForAComputationGraph() {
        DataSet all = data(EXAMPLES, 12);
        ComputationGraph reference = graph(new Adam(1e-2), 3);
        ComputationGraph cg = reference.clone();
        reference.fit(iterator(all, 32), 2);
        try (ParallelTrainer t = ParallelTrainer.launch(new ParallelTrainer.Context().model(cg).workers(2))) {
            t.fit(iterator(all, 32), 2);
        }
        double err = relError(cg.params(), reference.params());
        System.out.printf("ComputationGraph, 2 workers, 2 epochs: relative parameter error %.3e%n", err);
        assertTrue(err <= 1e-5, "parameters differ from ComputationGraph.fit by " + err);
        assertEquals(40, cg.getIterationCount());
        assertEquals(2, cg.getEpochCount());
    }

    /** Records what a listener sees, as DL4J calls it. */
    static final class Recorder extends BaseTrainingListener {
        final List<String> events = new ArrayList<>();
        final List<Double> scores = new ArrayList<>();

        @Override
        public void onEpochStart(Model model) {
            events.add("start " + ((MultiLayerNetwork) model).getEpochCount());
        }

        @Override
        public void onEpochEnd(Model model) {
            events.add("end " + ((MultiLayerNetwork) model).getEpochCount());
        }

        @Override
        public void iterationDone(Model model, int iteration, int epoch) {
            events.add("iter " + iteration + "/" + epoch);
            scores.add(model.score());
        }
    }

    @Test
    void shouldCallListenersAsModelFitDoes() {
        DataSet all = data(100, 13);
        MultiLayerNetwork reference = mlp(new Adam(1e-2), 5);
        MultiLayerNetwork net = reference.clone();
        Recorder expected = new Recorder();
        Recorder actual = new Recorder();
        reference.setListeners(expected);
        net.setListeners(actual);
        reference.fit(iterator(all, 25), 2);
        try (ParallelTrainer t = ParallelTrainer.launch(new ParallelTrainer.Context().model(net).workers(2))) {
            t.fit(iterator(all, 25), 2);
        }
        System.out.println("listener events: " + actual.events);
        assertEquals(expected.events, actual.events);
        assertEquals(expected.scores.size(), actual.scores.size());
        for (int i = 0; i < expected.scores.size(); i++) {
            assertEquals(expected.scores.get(i), actual.scores.get(i), 1e-5 * Math.abs(expected.scores.get(i)),
                    "score of iteration " + i);
        }
    }

    /** The data with NaN features in global batch {@code bad} (of 32 examples). */
    static DataSet poisoned(DataSet all, int bad) {
        DataSet copy = all.copy();
        copy.getFeatures().putScalar(new long[] {bad * 32L + 3, 2}, Float.NaN);
        return copy;
    }

    /** The data without global batch {@code bad}. */
    static DataSet without(DataSet all, int bad) {
        List<DataSet> rows = new ArrayList<>(all.asList());
        rows.subList(bad * 32, bad * 32 + 32).clear();
        return DataSet.merge(rows);
    }

    @Test
    void shouldSkipANonFiniteStepUnderSkipStep() {
        DataSet all = data(8 * 32, 14);
        MultiLayerNetwork reference = mlp(new Sgd(0.1), 9);
        MultiLayerNetwork net = reference.clone();
        reference.fit(iterator(without(all, 5), 32));
        try (ParallelTrainer t = ParallelTrainer.launch(new ParallelTrainer.Context().model(net).workers(2)
                .nanPolicy(NanPolicy.SKIP_STEP))) {
            t.fit(iterator(poisoned(all, 5), 32), 1);
            assertEquals(1, t.progress().skippedSteps());
            assertEquals(7, t.progress().steps());
        }
        assertEquals(7, net.getIterationCount());
        double err = relError(net.params(), reference.params());
        assertTrue(err <= 1e-5, "skipping the NaN step must equal training without that batch; error " + err);
    }

    @Test
    void shouldStopAtTheNonFiniteStepUnderStop() {
        DataSet all = data(8 * 32, 15);
        MultiLayerNetwork reference = mlp(new Adam(1e-2), 9);
        MultiLayerNetwork net = reference.clone();
        reference.fit(iterator(DataSet.merge(all.asList().subList(0, 5 * 32)), 32));
        try (ParallelTrainer t = ParallelTrainer.launch(new ParallelTrainer.Context().model(net).workers(2)
                .nanPolicy(NanPolicy.STOP))) {
            NonFiniteGradientException e = assertThrows(NonFiniteGradientException.class,
                    () -> t.fit(iterator(poisoned(all, 5), 32), 1));
            System.out.println("stopped: " + e.getMessage());
            assertEquals(5, e.step());
            assertEquals(0, e.epoch());
            assertTrue(e.getMessage().contains("step 5"), e.getMessage());
            assertTrue(e.getMessage().contains("NaN"), e.getMessage());
        }
        double err = relError(net.params(), reference.params());
        assertTrue(err <= 1e-5, "parameters must be those before the NaN step; error " + err);
        assertEquals(5, net.getIterationCount());
    }

    /** Yields the data's batches and throws at batch {@code failAt} (1-based). */
    static final class FailingIterator extends ViewIterator {
        private final int failAt;
        private int served;

        FailingIterator(DataSet all, int batch, int failAt) {
            super(all, batch);
            this.failAt = failAt;
        }

        @Override
        public DataSet next() {
            if (++served == failAt) {
                throw new IllegalStateException("disk read failed at record " + served);
            }
            return super.next();
        }
    }

    @Test
    void shouldSurfaceAnIteratorExceptionWithItsCause() {
        DataSet all = data(8 * 32, 16);
        MultiLayerNetwork net = mlp(new Adam(1e-2), 9);
        try (ParallelTrainer t = ParallelTrainer.launch(new ParallelTrainer.Context().model(net).workers(2))) {
            TrainerException e = assertThrows(TrainerException.class, () -> t.fit(new FailingIterator(all, 32, 4), 1));
            System.out.println("iterator failure: " + e.getMessage());
            assertInstanceOf(IllegalStateException.class, e.getCause());
            assertTrue(e.getCause().getMessage().contains("disk read failed"), e.getCause().getMessage());
            assertTrue(e.getMessage().contains("batch 4"), e.getMessage());
            assertEquals(3, t.progress().steps(), "the three batches before the failure are trained");
            // the trainer stays usable after a failed epoch
            t.fit(iterator(all, 32), 1);
            assertEquals(11, t.progress().steps());
        }
    }

    @Test
    void shouldRejectMismatchedFeaturesAndLabels() {
        MultiLayerNetwork net = mlp(new Adam(1e-2), 9);
        DataSet bad = new DataSet(Nd4j.rand(DataType.FLOAT, 8, IN), Nd4j.zeros(DataType.FLOAT, 6, CLASSES));
        try (ParallelTrainer t = ParallelTrainer.launch(new ParallelTrainer.Context().model(net).workers(2))) {
            TrainerException e = assertThrows(TrainerException.class,
                    () -> t.fit(new SingletonDataSetIterator(bad), 1));
            assertTrue(e.getMessage().contains("8 feature rows but 6 label rows"), e.getMessage());
        }
    }

    @Test
    void shouldReportAFailingReplicaWithTheOriginalCause() {
        MultiLayerNetwork net = mlp(new Adam(1e-2), 9);
        DataSet wrongWidth = new DataSet(Nd4j.rand(DataType.FLOAT, 8, IN + 3), Nd4j.zeros(DataType.FLOAT, 8, CLASSES));
        try (ParallelTrainer t = ParallelTrainer.launch(new ParallelTrainer.Context().model(net).workers(2))) {
            TrainerException e = assertThrows(TrainerException.class,
                    () -> t.fit(new SingletonDataSetIterator(wrongWidth), 1));
            System.out.println("replica failure: " + e.getMessage());
            assertTrue(e.getMessage().contains("grad"), e.getMessage());
            assertTrue(e.getCause() != null && !(e.getCause() instanceof TrainerException), "cause: " + e.getCause());
        }
    }

    @Test
    void shouldEvaluateAsTheSingleModelDoes() {
        DataSet all = data(301, 17);
        MultiLayerNetwork net = mlp(new Adam(1e-2), 9);
        try (ParallelTrainer t = ParallelTrainer.launch(new ParallelTrainer.Context().model(net).workers(2))) {
            t.fit(iterator(all, 32), 2);
            var ours = t.evaluate(iterator(all, 50));
            var theirs = net.evaluate(iterator(all, 50));
            assertEquals(301, ours.getNumRowCounter(), 0.0);
            assertEquals(theirs.accuracy(), ours.accuracy(), 1e-12);
            assertTrue(ours.accuracy() > 0.5, "training should beat chance (0.25), got " + ours.accuracy());
        }
    }

    /** Stands in for a second rank that trained on the same shard: the cross-rank sum is twice the local one. */
    static final class MirroredRank implements GradientAllReduce {
        int calls;

        @Override
        public int rank() {
            return 0;
        }

        @Override
        public int worldSize() {
            return 2;
        }

        @Override
        public StepTotals allReduceTotals(StepTotals local) {
            return local.plus(local);
        }

        @Override
        public void allReduceGradient(INDArray localGradientSum) {
            calls++;
            localGradientSum.muli(2);
        }
    }

    @Test
    void shouldApplyTheCrossRankSumOfAPluggedInAllReduce() {
        DataSet all = data(6 * 32, 18);
        MultiLayerNetwork reference = mlp(new Adam(1e-2), 6);
        MultiLayerNetwork net = reference.clone();
        List<DataSet> doubled = new ArrayList<>();
        for (DataSet b : all.batchBy(32)) {
            doubled.add(DataSet.merge(List.of(b, b)));
        }
        reference.fit(new ViewIterator(DataSet.merge(doubled), 64));
        MirroredRank twoRanks = new MirroredRank();
        try (ParallelTrainer t = ParallelTrainer.launch(new ParallelTrainer.Context().model(net).workers(2).allReduce(twoRanks))) {
            t.fit(iterator(all, 32), 1);
            assertEquals(6 * 32 * 2, t.progress().examples());
        }
        assertEquals(6, twoRanks.calls);
        double err = relError(net.params(), reference.params());
        assertTrue(err <= 1e-5, "a world of two identical ranks must train as model.fit on each batch twice; error " + err);
    }

    @Test
    void shouldTrainIdenticallyWhateverThePrefetchDepthAndBucketSize() {
        DataSet all = data(EXAMPLES, 19);
        MultiLayerNetwork init = mlp(new Adam(1e-2), 3);
        INDArray first = null;
        for (int[] setting : new int[][] {{0, 0}, {3, 0}, {1, 97}}) {
            MultiLayerNetwork net = init.clone();
            try (ParallelTrainer t = ParallelTrainer.launch(new ParallelTrainer.Context().model(net).workers(2)
                    .prefetch(setting[0]).bucketSize(setting[1]))) {
                t.fit(iterator(all, 32), 2);
            }
            if (first == null) {
                first = net.params().dup();
            } else {
                assertEquals(first, net.params(), "prefetch " + setting[0] + ", bucket size " + setting[1]);
            }
        }
    }

    @Test
    void shouldNameTheBadSetting() {
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> ParallelTrainer.launch(new ParallelTrainer.Context().model(mlp(new Sgd(0.1), 1)).workers(0)));
        assertTrue(e.getMessage().contains("workers must be >= 1, got 0"), e.getMessage());
        e = assertThrows(IllegalArgumentException.class,
                () -> ParallelTrainer.launch(new ParallelTrainer.Context().model(mlp(new Sgd(0.1), 1)).prefetch(-1)));
        assertTrue(e.getMessage().contains("prefetch must be >= 0"), e.getMessage());
        e = assertThrows(IllegalArgumentException.class, () -> ParallelTrainer.launch(new ParallelTrainer.Context()));
        assertTrue(e.getMessage().contains("model must be set"), e.getMessage());
    }

    @Test
    void shouldCutShardsAsEvenlyAsPossible() {
        assertEquals(List.of(11, 11, 10), box(Batches.shardSizes(32, 3)));
        assertEquals(List.of(1, 1, 0), box(Batches.shardSizes(2, 3)));
        assertEquals(List.of(16, 16), box(Batches.shardSizes(32, 2)));
        assertSame(NanPolicy.STOP, new ParallelTrainer.Context().nanPolicy());
    }

    private static List<Integer> box(int[] a) {
        List<Integer> l = new ArrayList<>();
        for (int x : a) {
            l.add(x);
        }
        return l;
    }
}
