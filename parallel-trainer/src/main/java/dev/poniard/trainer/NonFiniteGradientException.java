package dev.poniard.trainer;

/**
 * Thrown under {@link NanPolicy#STOP} when a step's gradient or loss is NaN or infinite. The model is left as it
 * was before that step, so it can be checkpointed, inspected, or trained on with other data.
 */
public final class NonFiniteGradientException extends TrainerException {
    private static final long serialVersionUID = 1L;
    private final long step;
    private final int epoch;

    public NonFiniteGradientException(long step, int epoch, String message) {
        super(message);
        this.step = step;
        this.epoch = epoch;
    }

    /** The model's iteration count at the failed step (the number of steps applied before it). */
    public long step() {
        return step;
    }

    public int epoch() {
        return epoch;
    }
}
