package dev.poniard.moe;

import java.util.Map;
import org.deeplearning4j.nn.api.Model;
import org.deeplearning4j.optimize.api.BaseTrainingListener;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * A training listener that reads every MoE layer's {@link MoeMetrics} after each iteration, keeps the latest, and
 * logs them every {@code frequency} iterations.
 */
public class MoeMetricsListener extends BaseTrainingListener {
    private static final Logger LOG = LoggerFactory.getLogger(MoeMetricsListener.class);
    private final int frequency;
    private volatile Map<Integer, MoeMetrics> last = Map.of();
    private volatile long iterations;

    /** @param frequency log every this many iterations (0: never log, only record) */
    public MoeMetricsListener(int frequency) {
        if (frequency < 0) {
            throw new IllegalArgumentException("frequency must be >= 0, got " + frequency);
        }
        this.frequency = frequency;
    }

    @Override
    public void iterationDone(Model model, int iteration, int epoch) {
        last = Map.copyOf(MoeModels.metrics(model));
        iterations++;
        if (frequency > 0 && iteration % frequency == 0) {
            last.forEach((layer, m) -> LOG.info("epoch {} iteration {} MoE layer {}: {}", epoch, iteration, layer, m));
        }
    }

    /** Latest metrics per MoE layer index. */
    public Map<Integer, MoeMetrics> last() {
        return last;
    }

    /** Iterations seen. */
    public long iterations() {
        return iterations;
    }
}
