package dev.poniard.trainer;

/** Training could not go on: bad input, a failing data iterator, or a failed replica. The cause is the original error. */
public class TrainerException extends RuntimeException {
    private static final long serialVersionUID = 1L;

    public TrainerException(String message) {
        super(message);
    }

    public TrainerException(String message, Throwable cause) {
        super(message, cause);
    }
}
