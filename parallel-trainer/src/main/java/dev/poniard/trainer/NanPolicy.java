package dev.poniard.trainer;

/** What a step does when its averaged gradient or its loss is not finite (NaN or infinite). */
public enum NanPolicy {
    /** Leave parameters and updater state untouched, log a warning, count the step as skipped, go on. */
    SKIP_STEP,
    /** Leave parameters and updater state untouched and throw {@link NonFiniteGradientException}. */
    STOP
}
