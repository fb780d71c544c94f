package dev.poniard.trainer;

import java.util.Collection;
import java.util.List;
import org.deeplearning4j.nn.api.Layer;
import org.deeplearning4j.nn.api.Model;
import org.deeplearning4j.nn.api.Updater;
import org.deeplearning4j.nn.gradient.Gradient;
import org.deeplearning4j.nn.graph.ComputationGraph;
import org.deeplearning4j.nn.multilayer.MultiLayerNetwork;
import org.deeplearning4j.nn.workspace.LayerWorkspaceMgr;
import org.deeplearning4j.optimize.api.TrainingListener;
import org.nd4j.linalg.api.ndarray.INDArray;

/**
 * The few operations the trainer needs from a DL4J model, over {@link MultiLayerNetwork} and single-input,
 * single-output {@link ComputationGraph}. One instance wraps one model; it is used by one thread at a time.
 */
abstract class ModelReplica {
    final Model model;

    private ModelReplica(Model model) {
        this.model = model;
    }

    static ModelReplica of(Model model) {
        if (model instanceof MultiLayerNetwork mln) {
            return new Mln(mln);
        }
        if (model instanceof ComputationGraph cg) {
            if (cg.getNumInputArrays() != 1 || cg.getNumOutputArrays() != 1) {
                throw new IllegalArgumentException("ParallelTrainer supports ComputationGraphs with one input and one output"
                        + " (DataSet); this graph has " + cg.getNumInputArrays() + " inputs and " + cg.getNumOutputArrays()
                        + " outputs");
            }
            return new Graph(cg);
        }
        throw new IllegalArgumentException("ParallelTrainer supports MultiLayerNetwork and ComputationGraph, got "
                + (model == null ? "null" : model.getClass().getName()));
    }

    /** An independent copy: same configuration, parameters and updater state, no listeners. */
    abstract ModelReplica copy();

    abstract void setData(INDArray features, INDArray labels, INDArray featuresMask, INDArray labelsMask);

    abstract void clearData();

    /** Forward and backward pass on the data set by {@link #setData}; fills {@link #gradientView()}. */
    final void computeGradientAndScore() {
        // The no-argument form uses the workspace mode of the model's configuration, as model.fit does.
        if (model instanceof MultiLayerNetwork mln) {
            mln.computeGradientAndScore();
        } else {
            ((ComputationGraph) model).computeGradientAndScore();
        }
    }

    final double score() {
        return model.score();
    }

    final void setScore(double score) {
        if (model instanceof MultiLayerNetwork mln) {
            mln.setScore(score);
        } else {
            ((ComputationGraph) model).setScore(score);
        }
    }

    /** The flattened parameter vector (a view the layers share). */
    final INDArray params() {
        return model.params();
    }

    abstract INDArray gradientView();

    /** The last computed gradient; its per-variable arrays are views of {@link #gradientView()}. */
    final Gradient gradient() {
        return model.gradient();
    }

    /** Runs the model's own updater over {@link #gradient()}: afterwards the gradient view holds the update. */
    abstract void applyUpdater(int iteration, int epoch, int batchSize);

    /** The updater's flattened state (Adam moments...), or null for a stateless updater such as SGD. */
    abstract INDArray updaterState();

    /** The model's updater, created on first use as {@code model.fit} creates it. */
    abstract Updater updater();

    /** Whether any layer has constraints (max-norm...), which the update must apply after {@code params -= update}. */
    abstract boolean hasConstraints();

    /** Whether the updater divides gradients by the minibatch size (the configuration's {@code miniBatch}). */
    final boolean miniBatch() {
        return model.conf().isMiniBatch();
    }

    static boolean hasConstraints(Layer[] layers) {
        for (Layer l : layers) {
            if (l.conf() != null && l.conf().getLayer() != null && l.conf().getLayer().getConstraints() != null
                    && !l.conf().getLayer().getConstraints().isEmpty()) {
                return true;
            }
        }
        return false;
    }

    abstract INDArray output(INDArray features, INDArray featuresMask);

    abstract int iterationCount();

    abstract void iterationCount(int value);

    abstract int epochCount();

    abstract void epochCount(int value);

    abstract Collection<TrainingListener> listeners();

    abstract void clearListeners();

    abstract String configurationJson();

    final void applyConstraints(int iteration, int epoch) {
        model.applyConstraints(iteration, epoch);
    }

    private static final class Mln extends ModelReplica {
        private final MultiLayerNetwork net;

        Mln(MultiLayerNetwork net) {
            super(net);
            this.net = net;
            if (net.getGradientsViewArray() == null) {
                net.initGradientsView(); // a fresh or cloned network creates it lazily, on its first fit
            }
        }

        @Override
        ModelReplica copy() {
            MultiLayerNetwork c = net.clone();
            c.setListeners(List.of());
            return new Mln(c);
        }

        @Override
        void setData(INDArray features, INDArray labels, INDArray featuresMask, INDArray labelsMask) {
            net.setInput(features);
            net.setLabels(labels);
            if (featuresMask != null || labelsMask != null) {
                net.setLayerMaskArrays(featuresMask, labelsMask);
            } else {
                net.clearLayerMaskArrays();
            }
        }

        @Override
        void clearData() {
            net.setInput(null);
            net.setLabels(null);
            net.clearLayerMaskArrays();
        }

        @Override
        INDArray gradientView() {
            return net.getGradientsViewArray();
        }

        @Override
        void applyUpdater(int iteration, int epoch, int batchSize) {
            net.getUpdater().update(net, net.gradient(), iteration, epoch, batchSize, LayerWorkspaceMgr.noWorkspaces());
        }

        @Override
        INDArray updaterState() {
            return net.getUpdater().getStateViewArray();
        }

        @Override
        Updater updater() {
            return net.getUpdater();
        }

        @Override
        boolean hasConstraints() {
            return hasConstraints(net.getLayers());
        }

        @Override
        INDArray output(INDArray features, INDArray featuresMask) {
            return net.output(features, false, featuresMask, null);
        }

        @Override
        int iterationCount() {
            return net.getIterationCount();
        }

        @Override
        void iterationCount(int value) {
            net.setIterationCount(value);
        }

        @Override
        int epochCount() {
            return net.getEpochCount();
        }

        @Override
        void epochCount(int value) {
            net.setEpochCount(value);
        }

        @Override
        Collection<TrainingListener> listeners() {
            return net.getListeners();
        }

        @Override
        void clearListeners() {
            net.setListeners(List.of());
        }

        @Override
        String configurationJson() {
            return net.getLayerWiseConfigurations().toJson();
        }
    }

    private static final class Graph extends ModelReplica {
        private final ComputationGraph cg;

        Graph(ComputationGraph cg) {
            super(cg);
            this.cg = cg;
            if (cg.getGradientsViewArray() == null) {
                cg.initGradientsView();
            }
        }

        @Override
        ModelReplica copy() {
            ComputationGraph c = cg.clone();
            c.setListeners(List.of());
            return new Graph(c);
        }

        @Override
        void setData(INDArray features, INDArray labels, INDArray featuresMask, INDArray labelsMask) {
            cg.setInputs(features);
            cg.setLabels(labels);
            if (featuresMask != null || labelsMask != null) {
                cg.setLayerMaskArrays(featuresMask == null ? null : new INDArray[] {featuresMask},
                        labelsMask == null ? null : new INDArray[] {labelsMask});
            } else {
                cg.clearLayerMaskArrays();
            }
        }

        @Override
        void clearData() {
            cg.clearLayerMaskArrays();
            cg.clear();
        }

        @Override
        INDArray gradientView() {
            return cg.getGradientsViewArray();
        }

        @Override
        void applyUpdater(int iteration, int epoch, int batchSize) {
            cg.getUpdater().update(cg.gradient(), iteration, epoch, batchSize, LayerWorkspaceMgr.noWorkspaces());
        }

        @Override
        INDArray updaterState() {
            return cg.getUpdater().getStateViewArray();
        }

        @Override
        Updater updater() {
            return cg.getUpdater();
        }

        @Override
        boolean hasConstraints() {
            return hasConstraints(cg.getLayers());
        }

        @Override
        INDArray output(INDArray features, INDArray featuresMask) {
            return cg.output(false, new INDArray[] {features}, featuresMask == null ? null : new INDArray[] {featuresMask})[0];
        }

        @Override
        int iterationCount() {
            return cg.getIterationCount();
        }

        @Override
        void iterationCount(int value) {
            cg.getConfiguration().setIterationCount(value);
        }

        @Override
        int epochCount() {
            return cg.getEpochCount();
        }

        @Override
        void epochCount(int value) {
            cg.getConfiguration().setEpochCount(value);
        }

        @Override
        Collection<TrainingListener> listeners() {
            return cg.getListeners();
        }

        @Override
        void clearListeners() {
            cg.setListeners(List.of());
        }

        @Override
        String configurationJson() {
            return cg.getConfiguration().toJson();
        }
    }
}
