package dev.poniard.moe;

import dev.poniard.scheduler.comm.Communicator;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.factory.Nd4j;

/**
 * A rank process for {@link ExpertParallelProcessTest}: rank and size from the launcher's environment, trains
 * {@link ExpertParallelTraining} with expert parallelism, checks it against the single-process run, and prints
 * {@code OK rank r hash h diff x}.
 */
public final class ExpertParallelWorker {
    private ExpertParallelWorker() {
    }

    public static void main(String[] args) {
        Nd4j.setDefaultDataTypes(DataType.DOUBLE, DataType.DOUBLE);
        int steps = Integer.parseInt(args[0]);
        try (Communicator comm = Communicator.connect(new Communicator.Context())) {
            ExpertParallelTraining run = new ExpertParallelTraining(61, comm.size(), 16, steps);
            List<String> log = new ArrayList<>();
            double[] params = run.trainOnRank(comm, new ExpertParallel.Context().shadowFactor(1.3), log);
            log.forEach(System.out::println);
            double diff = ExpertParallelTraining.relativeDifference(params, run.trainReference().params());
            System.out.println("OK rank " + comm.rank() + " hash " + Arrays.hashCode(params) + " diff " + diff);
        }
        System.exit(0);
    }
}
