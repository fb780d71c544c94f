package dev.poniard.trainer;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.List;
import java.util.concurrent.TimeUnit;
import java.util.function.UnaryOperator;
import java.util.stream.Stream;
import org.deeplearning4j.nn.conf.GradientNormalization;
import org.deeplearning4j.nn.conf.MultiLayerConfiguration;
import org.deeplearning4j.nn.conf.NeuralNetConfiguration;
import org.deeplearning4j.nn.conf.constraint.MaxNormConstraint;
import org.deeplearning4j.nn.conf.layers.BatchNormalization;
import org.deeplearning4j.nn.conf.layers.DenseLayer;
import org.deeplearning4j.nn.conf.layers.OutputLayer;
import org.deeplearning4j.nn.graph.ComputationGraph;
import org.deeplearning4j.nn.multilayer.MultiLayerNetwork;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.Arguments;
import org.junit.jupiter.params.provider.MethodSource;
import org.nd4j.linalg.activations.Activation;
import org.nd4j.evaluation.classification.Evaluation;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.dataset.DataSet;
import org.nd4j.linalg.learning.config.AMSGrad;
import org.nd4j.linalg.learning.config.AdaDelta;
import org.nd4j.linalg.learning.config.AdaGrad;
import org.nd4j.linalg.learning.config.AdaMax;
import org.nd4j.linalg.learning.config.Adam;
import org.nd4j.linalg.learning.config.IUpdater;
import org.nd4j.linalg.learning.config.Nadam;
import org.nd4j.linalg.learning.config.Nesterovs;
import org.nd4j.linalg.learning.config.NoOp;
import org.nd4j.linalg.learning.config.RmsProp;
import org.nd4j.linalg.learning.config.Sgd;
import org.nd4j.linalg.lossfunctions.LossFunctions;

/** The sharded update must reproduce the model's own serial update exactly, whatever the updater and regularisation. */
@Timeout(value = 120, unit = TimeUnit.SECONDS, threadMode = Timeout.ThreadMode.SEPARATE_THREAD)
class ShardedUpdateTest {
    private static final int IN = ParallelTrainerTest.IN;
    private static final int CLASSES = ParallelTrainerTest.CLASSES;

    /** Dense → batch norm (its mean and variance are neither divided by the batch nor updated) → softmax output. */
    static MultiLayerNetwork model(IUpdater updater, UnaryOperator<NeuralNetConfiguration.Builder> extra) {
        MultiLayerConfiguration conf = extra.apply(new NeuralNetConfiguration.Builder().seed(5).updater(updater)
                        .dataType(DataType.FLOAT)).list()
                .layer(new DenseLayer.Builder().nIn(IN).nOut(24).activation(Activation.TANH).build())
                .layer(new BatchNormalization.Builder().nOut(24).build())
                .layer(new OutputLayer.Builder(LossFunctions.LossFunction.MCXENT).nIn(24).nOut(CLASSES)
                        .activation(Activation.SOFTMAX).updater(new Sgd(0.05)).build())
                .build();
        MultiLayerNetwork net = new MultiLayerNetwork(conf);
        net.init();
        return net;
    }

    static Stream<Arguments> updaters() {
        return Stream.of(new Adam(1e-2), new AdaDelta(), new AdaGrad(0.1), new AdaMax(1e-2),
                        new AMSGrad(1e-2), new Nadam(1e-2), new Nesterovs(0.05, 0.9), new NoOp(), new RmsProp(1e-2),
                        new Sgd(0.1))
                .flatMap(u -> Stream.of(
                        Arguments.of(u.getClass().getSimpleName(), u, "none", UnaryOperator.<NeuralNetConfiguration.Builder>identity()),
                        Arguments.of(u.getClass().getSimpleName(), u, "l1+l2",
                                (UnaryOperator<NeuralNetConfiguration.Builder>) b -> b.l1(1e-3).l2(2e-3).l2Bias(1e-3)),
                        Arguments.of(u.getClass().getSimpleName(), u, "weight decay",
                                (UnaryOperator<NeuralNetConfiguration.Builder>) b -> b.weightDecay(1e-2))));
    }

    @ParameterizedTest(name = "{0}, regularisation {2}")
    @MethodSource("updaters")
    void shouldUpdateBitForBitAsTheModelsOwnUpdater(String name, IUpdater updater, String regularisation,
                                                    UnaryOperator<NeuralNetConfiguration.Builder> extra) {
        DataSet batch = ParallelTrainerTest.data(40, 3);
        MultiLayerNetwork serial = model(updater, extra);
        MultiLayerNetwork sharded = serial.clone();
        MultiLayerNetwork copy = serial.clone();
        ModelReplica s = ModelReplica.of(serial);
        ModelReplica p = ModelReplica.of(sharded);
        // Three shards over two blocks (the output layer has its own updater) and the batch norm's undivided statistics.
        ShardedUpdate update = ShardedUpdate.of(List.of(p, ModelReplica.of(copy)), 3);
        assertNotNull(update, "a model of built-in updaters and regularisations must be shardable");
        assertEquals(3, update.shards());
        for (int iteration = 0; iteration < 3; iteration++) {
            for (ModelReplica r : List.of(s, p)) {
                r.setData(batch.getFeatures(), batch.getLabels(), null, null);
                r.computeGradientAndScore();
            }
            assertEquals(s.gradientView(), p.gradientView(), "same model and data must give the same gradient");
            s.applyUpdater(iteration, 0, 40);
            s.params().subi(s.gradientView().reshape(s.params().shape()));
            for (int shard = 2; shard >= 0; shard--) { // any order: shards touch disjoint elements
                update.apply(shard, iteration, 0, 40);
            }
            assertEquals(s.params(), p.params(), "parameters after iteration " + iteration);
            assertEquals(s.gradientView(), p.gradientView(), "update after iteration " + iteration);
            if (s.updaterState() != null) {
                assertEquals(s.updaterState(), p.updaterState(), "updater state after iteration " + iteration);
            }
            assertEquals(p.params(), copy.params(), "the other replica must receive the new parameters");
        }
        if (!(updater instanceof NoOp)) {
            assertNotEquals(model(updater, extra).params(), sharded.params(), "the update must change the parameters");
        }
    }

    @Test
    void shouldLeaveUpdatesThatAreNotElementWiseToTheSerialUpdater() {
        MultiLayerNetwork normalised = model(new Adam(1e-2), b -> b.gradientNormalization(
                GradientNormalization.RenormalizeL2PerLayer));
        assertNull(ShardedUpdate.of(List.of(ModelReplica.of(normalised)), 2), "per-layer norms need whole layers");
        MultiLayerNetwork constrained = model(new Adam(1e-2), b -> b.constrainWeights(new MaxNormConstraint(1.0, 1)));
        assertNull(ShardedUpdate.of(List.of(ModelReplica.of(constrained)), 2), "constraints follow the whole update");
    }

    @Test
    void shouldShardAComputationGraphsUpdate() {
        ComputationGraph cg = ParallelTrainerTest.graph(new Adam(1e-2), 4);
        ModelReplica r = ModelReplica.of(cg);
        ShardedUpdate update = ShardedUpdate.of(List.of(r), 2);
        assertNotNull(update);
        assertTrue(update.appliesTo(ModelReplica.of(cg)), "a graph's update must stay sharded from step to step");
    }

    @Test
    void shouldTrainIdenticallyWithAndWithoutTheShardedUpdate() {
        DataSet all = ParallelTrainerTest.data(ParallelTrainerTest.EXAMPLES, 23);
        MultiLayerNetwork init = model(new Adam(1e-2), b -> b.l2(1e-3));
        INDArray serialParams = null;
        for (boolean sharded : new boolean[] {false, true}) {
            MultiLayerNetwork net = init.clone();
            try (ParallelTrainer t = ParallelTrainer.launch(new ParallelTrainer.Context().model(net).workers(2)
                    .shardedUpdate(sharded))) {
                assertEquals(sharded ? 2 : 1, t.updateShards());
                t.fit(ParallelTrainerTest.iterator(all, 32), 2);
                // Evaluation runs on every replica: after a sharded update they hold the parameters the shards copied.
                Evaluation ours = t.evaluate(ParallelTrainerTest.iterator(all, 32));
                Evaluation single = net.evaluate(ParallelTrainerTest.iterator(all, 32));
                assertEquals(single.getConfusionMatrix(), ours.getConfusionMatrix());
                assertTrue(ours.accuracy() > 0.5, "accuracy " + ours.accuracy());
            }
            if (serialParams == null) {
                serialParams = net.params().dup();
            } else {
                assertEquals(serialParams, net.params(), "sharded and serial updates must give the same parameters");
            }
        }
    }

    @Test
    void shouldUpdateSeriallyWhenTheModelNeedsIt() {
        MultiLayerNetwork net = model(new Adam(1e-2), b -> b.gradientNormalization(GradientNormalization.ClipL2PerLayer)
                .gradientNormalizationThreshold(1.0));
        try (ParallelTrainer t = ParallelTrainer.launch(new ParallelTrainer.Context().model(net).workers(2))) {
            assertEquals(1, t.updateShards());
        }
    }
}
