package dev.poniard.scheduler.comm;

/** A peer rank died or stopped answering heartbeats; every pending and later operation fails with it. */
public class RankLostException extends CommException {
    private static final long serialVersionUID = 1L;
    private final int lostRank;

    public RankLostException(int lostRank, String message) {
        super(message);
        this.lostRank = lostRank;
    }

    /** The world rank that was lost. */
    public int lostRank() {
        return lostRank;
    }
}
