package dev.poniard.bridge;

import java.util.Map;
import org.nd4j.autodiff.samediff.SameDiff;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.dataset.api.DataSet;
import org.nd4j.linalg.dataset.api.MultiDataSet;
import org.nd4j.linalg.dataset.api.iterator.DataSetIterator;

/**
 * What the bridge's ways of training one SameDiff graph on several devices ({@link SameDiffDataParallel},
 * {@link SameDiffPipeline}, {@link SameDiffTensorParallel}) share: a synchronous {@link #step} on placeholders by name,
 * and {@code fit} on DL4J data mapped to placeholders by the graph's training config, as {@code sd.fit} takes it.
 */
public interface SameDiffTraining {
    /** The graph being trained: its training config maps data to placeholders and counts iterations and epochs. */
    SameDiff sameDiff();

    /** One synchronous step on a global batch (placeholders by name); returns the loss before the step. */
    double step(Map<String, INDArray> batch);

    /** One step on a {@code DataSet}, mapped to placeholders by the training config; returns the loss before it. */
    default double fit(DataSet batch) {
        return fit(batch.toMultiDataSet());
    }

    /** One step on a {@code MultiDataSet}, mapped to placeholders by the training config; returns the loss before it. */
    default double fit(MultiDataSet batch) {
        return step(Batches.placeholders(sameDiff(), batch));
    }

    /** {@code epochs} passes over {@code data}, counting epochs in the training config as {@code sd.fit} does. */
    default void fit(DataSetIterator data, int epochs) {
        for (int e = 0; e < epochs; e++) {
            if (e > 0 || !data.hasNext()) {
                data.reset();
            }
            while (data.hasNext()) {
                fit(data.next());
            }
            sameDiff().getTrainingConfig().incrementEpochCount();
        }
    }
}
