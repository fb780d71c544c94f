package dev.poniard.samples.trainer;

import dev.poniard.samples.bench.BenchOptions;
import dev.poniard.samples.bench.BenchResult;
import dev.poniard.samples.bench.BenchSuite;
import dev.poniard.samples.cli.LaunchCommand;
import dev.poniard.scheduler.comm.launch.Launcher;
import dev.poniard.bridge.NativeThreads;
import dev.poniard.trainer.ParallelTrainer;
import java.util.ArrayList;
import java.util.List;
import java.util.function.Consumer;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import org.deeplearning4j.nn.multilayer.MultiLayerNetwork;
import org.deeplearning4j.parallelism.ParallelWrapper;
import org.nd4j.linalg.dataset.DataSet;
import org.nd4j.linalg.dataset.ViewIterator;

/**
 * {@code ./poniard bench trainer}: the Poniard trainer against DL4J's {@code ParallelWrapper}, same model, data,
 * per-worker batch, epochs and 2 workers, run one after the other in the same process. ParallelWrapper runs in
 * its synchronous configuration (parameter averaging after every step, updater state averaged too), the closest
 * to Poniard's per-step gradient all-reduce. Each side first trains a warm-up model on a few batches.
 */
public final class TrainerBenchSuite implements BenchSuite {
    private static final int WORKERS = 2;
    private static final int BATCH = 32;
    private static final long SEED = 42;

    @Override
    public String name() {
        return "trainer";
    }

    @Override
    public String description() {
        return "data-parallel training, 2 workers: Poniard ParallelTrainer vs DL4J ParallelWrapper (MNIST subset MLP and CNN),"
                + " and 2 rank processes vs 1 process";
    }

    /** Samples/s and test accuracy of one training run. */
    private record Outcome(double samplesPerSecond, double accuracy) {
    }

    @Override
    public List<BenchResult> run(BenchOptions options, Consumer<BenchResult> progress) throws Exception {
        NativeThreads.oneThreadPerWorker();
        List<BenchResult> results = new ArrayList<>();
        boolean quick = options.quick();
        TrainingSample.Data mnist = TrainingSample.MNIST_MLP.load(quick ? 2_000 : 0, 0);
        int mlpEpochs = quick ? 1 : 3;
        warmUp(TrainingSample.MNIST_MLP, mnist);
        Outcome ours = ours(TrainingSample.MNIST_MLP, mnist, mlpEpochs);
        Outcome theirs = parallelWrapper(TrainingSample.MNIST_MLP, mnist, mlpEpochs);
        add(results, progress, BenchResult.higherIsBetter("mnist_mlp_2w_vs_parallelwrapper", "samples_per_s", "samples/s",
                ours.samplesPerSecond(), "ParallelWrapper (averaging every step)", theirs.samplesPerSecond()));
        add(results, progress, BenchResult.higherIsBetter("mnist_mlp_accuracy_vs_parallelwrapper", "test_accuracy", "fraction",
                ours.accuracy(), "ParallelWrapper (averaging every step)", theirs.accuracy()));
        // Both sides are fresh `./poniard train` processes timed the same way: steady state, after a first epoch
        // that warms up the JIT (a rank process has the communication path to compile too).
        int trainSize = quick ? 2_000 : 0;
        int launchedEpochs = Math.max(2, mlpEpochs);
        double oneProcess = launchedTraining(1, WORKERS, trainSize, launchedEpochs);
        add(results, progress, BenchResult.higherIsBetter("mnist_mlp_2proc", "samples_per_s", "samples/s",
                launchedTraining(2, 1, trainSize, launchedEpochs), "1 process x 2 workers", oneProcess));

        // The CNN of the fashion-cnn sample, on the MNIST subset (same 28x28 images).
        TrainingSample.Data cnnData = TrainingSample.MNIST_MLP.load(quick ? 512 : 4_000, quick ? 500 : 0);
        warmUp(TrainingSample.FASHION_CNN, cnnData);
        Outcome oursCnn = ours(TrainingSample.FASHION_CNN, cnnData, 1);
        Outcome theirsCnn = parallelWrapper(TrainingSample.FASHION_CNN, cnnData, 1);
        add(results, progress, BenchResult.higherIsBetter("mnist_cnn_2w_vs_parallelwrapper", "samples_per_s", "samples/s",
                oursCnn.samplesPerSecond(), "ParallelWrapper (averaging every step)", theirsCnn.samplesPerSecond()));
        return results;
    }

    /**
     * Samples/s of {@code ./poniard train} as {@code ranks} rank processes of {@code workers} workers each, started
     * by the {@link Launcher} (same model, data, global batch and epochs as {@link #ours}; gradients all-reduced over
     * Aeron IPC between ranks), as rank 0 reports it for the epochs after the first: JVM start-up and JIT warm-up
     * are excluded.
     */
    private static double launchedTraining(int ranks, int workers, int trainSize, int epochs) throws Exception {
        int perWorker = BATCH * WORKERS / (ranks * workers); // the global batch of ours
        List<String> args = List.of("train", "--no-progress", "--workers", String.valueOf(workers), "--batch",
                String.valueOf(perWorker), "--epochs", String.valueOf(epochs), "--train-size", String.valueOf(trainSize),
                "--test-size", "500", "--seed", String.valueOf(SEED));
        List<String> lines = java.util.Collections.synchronizedList(new ArrayList<>());
        try (Launcher l = Launcher.launch(new Launcher.Context().ranks(ranks)
                .command(LaunchCommand.rankCommand(ranks, args, LaunchCommand.Jit.fromProperty())).output(lines::add))) {
            int code = l.waitFor();
            if (code != 0) {
                throw new IllegalStateException(ranks + "-rank training failed with exit code " + code + ":\n"
                        + String.join("\n", lines));
            }
        }
        Pattern trained = Pattern.compile("\\[rank 0] steady state after the first epoch: ([0-9.]+) samples/s");
        synchronized (lines) {
            for (String line : lines) {
                Matcher m = trained.matcher(line);
                if (m.find()) {
                    return Double.parseDouble(m.group(1));
                }
            }
        }
        throw new IllegalStateException("rank 0 reported no throughput:\n" + String.join("\n", lines));
    }

    private static void add(List<BenchResult> results, Consumer<BenchResult> progress, BenchResult r) {
        results.add(r);
        progress.accept(r);
    }

    private static void warmUp(TrainingSample sample, TrainingSample.Data data) throws Exception {
        DataSet few = new DataSet(data.train().getFeatures().get(org.nd4j.linalg.indexing.NDArrayIndex.interval(0, 8 * BATCH)),
                data.train().getLabels().get(org.nd4j.linalg.indexing.NDArrayIndex.interval(0, 8 * BATCH)));
        TrainingSample.Data small = new TrainingSample.Data(few, data.test());
        ours(sample, small, 1);
        parallelWrapper(sample, small, 1);
    }

    private static Outcome ours(TrainingSample sample, TrainingSample.Data data, int epochs) {
        MultiLayerNetwork net = sample.model(SEED);
        try (ParallelTrainer t = ParallelTrainer.launch(new ParallelTrainer.Context().model(net).workers(WORKERS)
                .batchSizePerWorker(BATCH).seed(SEED))) {
            long start = System.nanoTime();
            t.fitToEpoch(e -> data.trainEpoch(SEED, e, BATCH * WORKERS), epochs);
            double secs = (System.nanoTime() - start) / 1e9;
            return new Outcome(t.progress().examples() / secs, t.evaluate(data.testIterator(500)).accuracy());
        }
    }

    private static Outcome parallelWrapper(TrainingSample sample, TrainingSample.Data data, int epochs) throws Exception {
        MultiLayerNetwork net = sample.model(SEED);
        long examples = 0;
        double secs;
        try (ParallelWrapper pw = new ParallelWrapper.Builder<>(net).workers(WORKERS).prefetchBuffer(2)
                .trainingMode(ParallelWrapper.TrainingMode.AVERAGING).averagingFrequency(1).averageUpdaters(true)
                .reportScoreAfterAveraging(true).build()) {
            long start = System.nanoTime();
            for (int e = 0; e < epochs; e++) {
                // each ParallelWrapper worker takes one iterator batch per step: BATCH examples per worker
                pw.fit(data.trainEpoch(SEED, e, BATCH));
                examples += data.train().numExamples();
            }
            secs = (System.nanoTime() - start) / 1e9;
        }
        return new Outcome(examples / secs, net.evaluate(new ViewIterator(data.test(), 500)).accuracy());
    }
}
