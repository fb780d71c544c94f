package dev.poniard.bridge;

import java.util.List;

/**
 * One pipeline stage: the contiguous ops {@code [firstOp, endOp)} of a graph's topological order.
 *
 * @param index         0-based stage number
 * @param firstOp       index of the stage's first op in {@link SameDiffDag#ops()}
 * @param endOp         one past the stage's last op
 * @param costNanos     time of the stage's forward ops on one worker (sum of {@link OpCost#nanos()})
 * @param backwardNanos time of their backward (sum of {@link SameDiffDag.OpNode#trainingNanos()} less the forward)
 * @param parameterBytes bytes of the trainable parameters first used in this stage
 * @param parameters    names of those parameters
 * @param inputs        activations and placeholders the stage reads that it does not produce
 * @param outputs       activations the stage produces that later stages read
 */
public record Stage(int index, int firstOp, int endOp, double costNanos, double backwardNanos, long parameterBytes,
                    List<String> parameters,
                    List<String> inputs, List<String> outputs) {
    public Stage {
        parameters = List.copyOf(parameters);
        inputs = List.copyOf(inputs);
        outputs = List.copyOf(outputs);
    }

    /** Number of ops in the stage. */
    public int size() {
        return endOp - firstOp;
    }
}
