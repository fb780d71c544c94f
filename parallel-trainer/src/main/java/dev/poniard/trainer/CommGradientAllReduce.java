package dev.poniard.trainer;

import dev.poniard.bridge.CommunicatorExchange;
import dev.poniard.scheduler.comm.CommException;
import dev.poniard.scheduler.comm.Communicator;
import dev.poniard.scheduler.comm.ReduceOp;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.util.Objects;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;

/**
 * Combines the ranks' gradient sums with all-reduces over a {@link Communicator} (Aeron: shared memory between
 * processes of one host, UDP between hosts). The gradient is reduced in place in the model's own gradient
 * memory, by address, without a staging copy; the communicator's reduction order is fixed, so every rank gets
 * bit-identical sums and the replicas of all ranks stay identical. Under a {@link GradientCompression} each rank
 * encodes its sum (with error feedback), the messages are all-gathered, and every rank decodes and adds them in
 * rank order, so the ranks stay identical there too.
 *
 * <p>The communicator belongs to the caller, who closes it after the trainer. A lost rank, an abort or a timeout
 * surfaces as a {@link TrainerException} whose cause is the communicator's exception (for a dead rank a
 * {@code RankLostException} naming it).
 */
public final class CommGradientAllReduce implements GradientAllReduce {
    private final Communicator comm;
    private final GradientCompression compression;
    private final CommunicatorExchange exact;
    private final double[] totals = new double[3];
    private GradientCodec codec;
    private ByteBuffer message;
    private ByteBuffer gathered;
    private float[] decoded;

    /** An exact all-reduce. */
    public CommGradientAllReduce(Communicator comm) {
        this(comm, GradientCompression.none());
    }

    /** Exchanges gradients under {@code compression} (see {@link GradientCompression}). */
    public CommGradientAllReduce(Communicator comm, GradientCompression compression) {
        this.comm = Objects.requireNonNull(comm, "comm");
        this.compression = Objects.requireNonNull(compression, "compression");
        this.exact = new CommunicatorExchange(comm);
    }

    /** How gradients travel between ranks. */
    public GradientCompression compression() {
        return compression;
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
        if (!(compression instanceof GradientCompression.None)) {
            compressed(sum);
            return;
        }
        if (sum.isView() || sum.elementWiseStride() != 1) {
            // DL4J's flattened gradient is never a view; anything else goes through a contiguous copy.
            INDArray copy = sum.dup('c');
            allReduceGradient(copy);
            sum.assign(copy);
            return;
        }
        try {
            exact.allReduceSum(sum); // in place, by address; refuses types other than FLOAT and DOUBLE
        } catch (CommException e) {
            throw failed("gradient (" + sum.length() * sum.dataType().width() + " bytes)", e);
        } catch (IllegalArgumentException e) {
            throw new TrainerException("cannot all-reduce the gradient across ranks: " + e.getMessage(), e);
        }
    }

    /** All-gathers every rank's compressed message and sums them in rank order, the same on every rank. */
    private void compressed(INDArray sum) {
        if (sum.length() > Integer.MAX_VALUE / 8) {
            throw new TrainerException("a gradient of " + sum.length() + " entries is too large to compress; use"
                    + " GradientCompression.none()");
        }
        int n = (int) sum.length();
        if (codec == null) {
            codec = new GradientCodec(compression, n);
            message = ByteBuffer.allocateDirect(codec.messageBytes()).order(ByteOrder.LITTLE_ENDIAN);
            gathered = ByteBuffer.allocateDirect(codec.messageBytes() * comm.size()).order(ByteOrder.LITTLE_ENDIAN);
            decoded = new float[n];
        } else if (codec.length() != n) {
            throw new TrainerException("the gradient changed from " + codec.length() + " to " + n + " entries; use one"
                    + " CommGradientAllReduce per model");
        }
        codec.encode(sum.reshape(n).toFloatVector(), message);
        message.clear();
        gathered.clear();
        try {
            comm.allGather(message, gathered);
        } catch (CommException e) {
            throw failed(compression + " gradient (" + message.capacity() + " bytes per rank)", e);
        }
        codec.decodeSum(gathered, comm.size(), decoded);
        if (sum.dataType() == org.nd4j.linalg.api.buffer.DataType.FLOAT && !sum.isView()) {
            sum.data().setData(decoded);
        } else {
            sum.assign(Nd4j.createFromArray(decoded).reshape(sum.shape()));
        }
    }

    private TrainerException failed(String what, CommException e) {
        return new TrainerException("all-reduce of the " + what + " across " + comm.size() + " ranks failed on rank "
                + comm.rank() + ": " + e.getMessage(), e);
    }

    @Override
    public String toString() {
        return "all-reduce over " + comm.size() + " ranks (this is rank " + comm.rank() + "), compression " + compression;
    }
}
