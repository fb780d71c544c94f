package dev.poniard.trainer;

import dev.poniard.bridge.GradientExchange;
import dev.poniard.bridge.SameDiffDataParallel;
import dev.poniard.scheduler.Scheduler;
import org.nd4j.autodiff.samediff.SameDiff;
import org.nd4j.evaluation.classification.Evaluation;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.dataset.DataSet;
import org.nd4j.linalg.dataset.api.iterator.DataSetIterator;

/**
 * The SameDiff side of {@link ParallelTrainer}: global batches as the trainer forms them (per-worker batch size,
 * prefetching, rank shards), each trained by the bridge's {@link SameDiffDataParallel} (one replica graph per
 * worker, example-weighted gradients, the training config's updater applied once), with the ranks' gradient sums
 * combined through the trainer's {@link GradientAllReduce}.
 */
final class SameDiffRun implements AutoCloseable {
    private final ParallelTrainer.Context ctx;
    private final SameDiff sd;
    private final SameDiffDataParallel dp;
    private long stepInEpoch;
    private long examples;
    private double lastLoss = Double.NaN;

    SameDiffRun(ParallelTrainer.Context ctx) {
        this.ctx = ctx;
        this.sd = ctx.sameDiff();
        GradientAllReduce ar = ctx.allReduce();
        GradientExchange exchange = ar.worldSize() == 1 ? GradientExchange.singleRank() : new GradientExchange() {
            @Override
            public int rank() {
                return ar.rank();
            }

            @Override
            public int worldSize() {
                return ar.worldSize();
            }

            @Override
            public void allReduceSum(INDArray buffer) {
                ar.allReduceGradient(buffer);
            }

            @Override
            public String toString() {
                return ar.toString();
            }
        };
        this.dp = SameDiffDataParallel.launch(new SameDiffDataParallel.Context().sameDiff(sd).workers(ctx.workers())
                .seed(ctx.seed()).trace(ctx.trace()).exchange(exchange));
    }

    Scheduler scheduler() {
        return dp.scheduler();
    }

    ParallelTrainer.Progress progress() {
        return new ParallelTrainer.Progress(sd.getTrainingConfig().getEpochCount(), stepInEpoch, dp.steps(), 0, examples,
                lastLoss);
    }

    void runEpoch(Batches batches) {
        int epoch = sd.getTrainingConfig().getEpochCount();
        stepInEpoch = 0;
        for (DataSet batch = batches.next(); batch != null; batch = batches.next()) {
            double loss = dp.fit(batch);
            if (!Double.isFinite(loss) && ctx.nanPolicy() == NanPolicy.STOP) {
                throw new NonFiniteGradientException(dp.steps() - 1, epoch, "step " + (dp.steps() - 1) + " (epoch " + epoch
                        + "): the loss is NaN or infinite; SameDiff steps cannot be skipped, so this step was applied."
                        + " Check the input data for NaN/Inf or lower the learning rate");
            }
            lastLoss = loss;
            examples += batch.numExamples();
            stepInEpoch++;
        }
        sd.getTrainingConfig().incrementEpochCount();
        stepInEpoch = 0;
    }

    Evaluation evaluate(DataSetIterator iterator) {
        String output = ctx.sameDiffOutput();
        if (output == null) {
            throw new TrainerException("evaluating a SameDiff graph needs the name of its prediction variable:"
                    + " new ParallelTrainer.Context().sameDiff(sd).sameDiffOutput(\"softmax\")");
        }
        if (!iterator.hasNext() && iterator.resetSupported()) {
            iterator.reset();
        }
        Evaluation eval = new Evaluation();
        sd.evaluate(iterator, output, eval);
        return eval;
    }

    @Override
    public void close() {
        dp.close();
    }
}
