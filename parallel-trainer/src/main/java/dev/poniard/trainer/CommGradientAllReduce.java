package dev.poniard.trainer;

import dev.poniard.scheduler.comm.Algorithm;
import dev.poniard.scheduler.comm.CommException;
import dev.poniard.scheduler.comm.Communicator;
import dev.poniard.scheduler.comm.DataType;
import dev.poniard.scheduler.comm.ReduceOp;
import java.util.Objects;
import org.nd4j.linalg.api.ndarray.INDArray;

/**
 * Combines the ranks' gradient sums with all-reduces over a {@link Communicator} (Aeron: shared memory between
 * processes of one host, UDP between hosts). The gradient is reduced in place in the model's own gradient
 * memory, by address, without a staging copy; the communicator's reduction order is fixed, so every rank gets
 * bit-identical sums and the replicas of all ranks stay identical.
 *
 * <p>The communicator belongs to the caller, who closes it after the trainer. A lost rank, an abort or a timeout
 * surfaces as a {@link TrainerException} whose cause is the communicator's exception (for a dead rank a
 * {@code RankLostException} naming it).
 */
public final class CommGradientAllReduce implements GradientAllReduce {
    private final Communicator comm;
    private final double[] totals = new double[3];

    public CommGradientAllReduce(Communicator comm) {
        this.comm = Objects.requireNonNull(comm, "comm");
    }

    @Override
    public int rank() {
        return comm.rank();
    }

    @Override
    public int worldSize() {
        return comm.size();
    }

    @Override
    public StepTotals allReduceTotals(StepTotals local) {
        // Doubles hold example counts exactly up to 2^53; one message instead of three.
        totals[0] = local.examples();
        totals[1] = local.lossSum();
        totals[2] = local.nonFiniteChunks();
        try {
            comm.allReduce(totals, ReduceOp.SUM);
        } catch (CommException e) {
            throw failed("step totals", e);
        }
        return new StepTotals((long) totals[0], totals[1], (long) totals[2]);
    }

    @Override
    public void allReduceGradient(INDArray sum) {
        DataType type = switch (sum.dataType()) {
            case FLOAT -> DataType.FLOAT32;
            case DOUBLE -> DataType.FLOAT64;
            default -> throw new TrainerException("cannot all-reduce " + sum.dataType() + " gradients across ranks;"
                    + " build the model with dataType(DataType.FLOAT) or DOUBLE");
        };
        if (sum.isView() || sum.offset() != 0 || sum.elementWiseStride() != 1) {
            // DL4J's flattened gradient is never a view; anything else goes through a contiguous copy.
            INDArray copy = sum.dup('c');
            allReduceGradient(copy);
            sum.assign(copy);
            return;
        }
        long bytes = sum.length() * sum.data().getElementSize();
        try {
            comm.allReduce(sum.data().address(), bytes, type, ReduceOp.SUM, Algorithm.AUTO);
        } catch (CommException e) {
            throw failed("gradient (" + bytes + " bytes)", e);
        }
    }

    private TrainerException failed(String what, CommException e) {
        return new TrainerException("all-reduce of the " + what + " across " + comm.size() + " ranks failed on rank "
                + comm.rank() + ": " + e.getMessage(), e);
    }

    @Override
    public String toString() {
        return "all-reduce over " + comm.size() + " ranks (this is rank " + comm.rank() + ")";
    }
}
