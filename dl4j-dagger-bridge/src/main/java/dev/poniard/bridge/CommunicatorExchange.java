package dev.poniard.bridge;

import dev.poniard.scheduler.comm.Algorithm;
import dev.poniard.scheduler.comm.Communicator;
import dev.poniard.scheduler.comm.ReduceOp;
import java.util.Objects;
import org.nd4j.linalg.api.ndarray.INDArray;

/**
 * The {@link GradientExchange} of a multi-rank run: an in-place all-reduce (SUM) of the gradient buffer over a
 * {@link Communicator}, straight from the array's native memory (no staging copy). The communicator's reductions run
 * in a fixed order, so every rank ends with bit-identical buffers and the replicas of all ranks stay identical.
 *
 * <p>Every rank must run the same program: the same graph (so the same buffer layout) and the same number of steps.
 */
public final class CommunicatorExchange implements GradientExchange {
    private final Communicator comm;

    public CommunicatorExchange(Communicator comm) {
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
    public void allReduceSum(INDArray buffer) {
        if (!buffer.isVector() || buffer.isView() && buffer.length() != buffer.data().length()) {
            throw new IllegalArgumentException("the gradient buffer must be a contiguous vector, got shape "
                    + java.util.Arrays.toString(buffer.shape()));
        }
        dev.poniard.scheduler.comm.DataType type = switch (buffer.dataType()) {
            case FLOAT -> dev.poniard.scheduler.comm.DataType.FLOAT32;
            case DOUBLE -> dev.poniard.scheduler.comm.DataType.FLOAT64;
            default -> throw new IllegalArgumentException("gradients of type " + buffer.dataType()
                    + " cannot be all-reduced; train in FLOAT or DOUBLE");
        };
        long width = buffer.dataType().width();
        long address = buffer.data().address() + buffer.offset() * width;
        comm.allReduce(address, buffer.length() * width, type, ReduceOp.SUM, Algorithm.AUTO);
    }

    @Override
    public String toString() {
        return "all-reduce over rank " + comm.rank() + " of " + comm.size();
    }
}
