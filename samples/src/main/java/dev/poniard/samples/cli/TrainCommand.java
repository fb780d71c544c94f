package dev.poniard.samples.cli;

import dev.poniard.bridge.SameDiffPipeline;
import dev.poniard.moe.MoeMetrics;
import dev.poniard.moe.MoeModels;
import dev.poniard.samples.trainer.TrainingSample;
import dev.poniard.scheduler.comm.Communicator;
import dev.poniard.scheduler.comm.launch.RankEnvironment;
import dev.poniard.trainer.Checkpoints;
import dev.poniard.trainer.CommGradientAllReduce;
import dev.poniard.trainer.GradientAllReduce;
import dev.poniard.trainer.GradientCompression;
import dev.poniard.trainer.ParallelTrainer;
import java.io.PrintWriter;
import java.nio.file.Path;
import java.util.zip.CRC32;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Optional;
import java.util.concurrent.Callable;
import me.tongfei.progressbar.ConsoleProgressBarConsumer;
import me.tongfei.progressbar.ProgressBar;
import me.tongfei.progressbar.ProgressBarBuilder;
import me.tongfei.progressbar.ProgressBarStyle;
import org.deeplearning4j.nn.api.Model;
import org.deeplearning4j.nn.multilayer.MultiLayerNetwork;
import org.deeplearning4j.optimize.api.BaseTrainingListener;
import org.nd4j.autodiff.samediff.SDVariable;
import org.nd4j.autodiff.samediff.SameDiff;
import org.nd4j.autodiff.samediff.VariableType;
import org.nd4j.evaluation.classification.Evaluation;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.dataset.DataSet;
import org.nd4j.linalg.dataset.api.iterator.DataSetIterator;
import picocli.CommandLine;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;

/**
 * {@code ./poniard train}: trains a sample model data-parallel on in-process workers with the Poniard trainer and
 * prints its test accuracy. Started as several ranks ({@code ./poniard launch -n 2 -- train}, Slurm, mpirun,
 * torchrun), every rank trains on its own slice of each global batch and gradients are all-reduced over Aeron;
 * rank 0 reports, writes checkpoints and evaluates.
 */
@Command(name = "train", mixinStandardHelpOptions = true,
        description = {"Trains a sample model data-parallel on in-process workers and prints its test accuracy.",
                "The default is an MLP on the shipped MNIST subset (8,000 training and 2,000 test images).",
                "Under './poniard launch -n N -- train' (or Slurm, mpirun, torchrun) the N ranks train together,",
                "each on its share of every global batch, gradients all-reduced over Aeron."})
public final class TrainCommand implements Callable<Integer> {
    @Option(names = "--sample", defaultValue = "mnist-mlp", paramLabel = "NAME",
            description = "mnist-mlp (shipped data), mnist-samediff, mnist-pipeline (pipeline-parallel stages), fashion-cnn, or fashion-moe (MoE vs dense FFN on patch tokens; both"
                    + " need apt-get install dataset-fashion-mnist). Default: ${DEFAULT-VALUE}.")
    String sample;

    @Option(names = "--workers", defaultValue = "2", description = "In-process replicas (default: ${DEFAULT-VALUE}).")
    int workers;

    @Option(names = "--epochs", description = "Epochs (default: 5 for mnist-mlp, 2 for fashion-cnn).")
    Integer epochs;

    @Option(names = "--batch", description = "Examples per worker per step (default: 32; 64 for fashion-moe); for"
            + " mnist-pipeline examples per step, split into --micro-batches (default: 64).")
    Integer batchOption;

    @Option(names = "--data-dir", paramLabel = "DIR",
            description = "Where the Fashion-MNIST IDX files are (default: /usr/share/datasets/fashion-mnist).")
    Path dataDir;

    /** Examples per worker per step, resolved against the sample's default. */
    private int batch;

    @Option(names = "--seed", defaultValue = "42", description = "Seed of weights, shuffling and replicas (default: ${DEFAULT-VALUE}).")
    long seed;

    @Option(names = "--trace", paramLabel = "FILE", description = "Write the scheduler's Chrome trace (open in Perfetto).")
    Path trace;

    @Option(names = "--train-size", defaultValue = "0", paramLabel = "N", description = "Use the first N training images (0: all).")
    int trainSize;

    @Option(names = "--test-size", defaultValue = "0", paramLabel = "N", description = "Use the first N test images (0: all).")
    int testSize;

    @Option(names = "--checkpoint", paramLabel = "DIR", description = "Write checkpoints to DIR (each epoch and every --checkpoint-every steps).")
    Path checkpoint;

    @Option(names = "--resume", description = "Continue from the newest checkpoint in --checkpoint DIR (starts fresh if there is none).")
    boolean resume;

    @Option(names = "--checkpoint-every", defaultValue = "100", paramLabel = "STEPS",
            description = "Steps between checkpoints, 0 for epoch ends only (default: ${DEFAULT-VALUE}).")
    int checkpointEvery;

    @Option(names = "--keep", defaultValue = "3", paramLabel = "K", description = "Checkpoints to keep (default: ${DEFAULT-VALUE}).")
    int keep;

    @Option(names = "--compression", defaultValue = "none", paramLabel = "C",
            description = "Gradient exchange between ranks: none (exact), fp16, or topk:FRACTION with error feedback"
                    + " (default: ${DEFAULT-VALUE}).")
    String compression;

    @Option(names = "--stages", paramLabel = "S", description = "mnist-pipeline: pipeline stages (default: --workers in one"
            + " process, one per rank under launch).")
    Integer stages;

    @Option(names = "--micro-batches", defaultValue = "4", paramLabel = "M",
            description = "mnist-pipeline: micro-batches per step (default: ${DEFAULT-VALUE}).")
    int microBatches;

    @Option(names = "--schedule", defaultValue = "1f1b", paramLabel = "SCHEDULE",
            description = "mnist-pipeline: 1f1b or gpipe (default: ${DEFAULT-VALUE}).")
    String schedule;

    @Option(names = "--rebalance-every", defaultValue = "0", paramLabel = "N",
            description = "mnist-pipeline: re-cut the stages by their measured times every N steps on a cut (default:"
                    + " ${DEFAULT-VALUE}, never).")
    int rebalanceEvery;

    @Option(names = "--no-progress", description = "No progress bar.")
    boolean noProgress;

    @CommandLine.Spec
    CommandLine.Model.CommandSpec spec;

    /** Each stage's rank (across ranks), ops and parameter memory, for the log. */
    private static String describeStages(SameDiffPipeline p, boolean ranked) {
        List<String> cuts = new ArrayList<>();
        int[] placement = p.placement();
        for (var st : p.stages()) {
            cuts.add("stage " + st.index() + (ranked ? " on rank " + placement[st.index()] : "") + ": " + st.size()
                    + " ops, " + st.parameterBytes() / 1024 + " KiB of parameters");
        }
        return String.join("; ", cuts);
    }

    @Override
    public Integer call() throws Exception {
        TrainingSample s;
        try {
            s = TrainingSample.byName(sample);
        } catch (IllegalArgumentException e) {
            throw new CommandLine.ParameterException(spec.commandLine(), e.getMessage());
        }
        int nEpochs = epochs == null ? s.defaultEpochs() : epochs;
        batch = batchOption == null ? s.defaultBatch() : batchOption;
        if (workers < 1 || batch < 1 || nEpochs < 0 || trainSize < 0 || testSize < 0) {
            throw new CommandLine.ParameterException(spec.commandLine(), "--workers and --batch must be >= 1, --epochs,"
                    + " --train-size and --test-size >= 0; got workers=" + workers + " batch=" + batch + " epochs=" + nEpochs
                    + " train-size=" + trainSize + " test-size=" + testSize);
        }
        if (resume && checkpoint == null) {
            throw new CommandLine.ParameterException(spec.commandLine(), "--resume needs --checkpoint DIR (where to resume from)");
        }
        if (checkpointEvery < 0 || keep < 1) {
            throw new CommandLine.ParameterException(spec.commandLine(), "--checkpoint-every must be >= 0 and --keep >= 1");
        }
        GradientCompression exchange;
        try {
            exchange = GradientCompression.parse(compression);
        } catch (IllegalArgumentException e) {
            throw new CommandLine.ParameterException(spec.commandLine(), "--compression: " + e.getMessage());
        }
        RankEnvironment env = RankEnvironment.detect();
        if (s == TrainingSample.MNIST_PIPELINE) {
            SameDiffPipeline.Schedule sched = switch (schedule.toLowerCase(Locale.ROOT)) {
                case "1f1b" -> SameDiffPipeline.Schedule.ONE_F_ONE_B;
                case "gpipe" -> SameDiffPipeline.Schedule.GPIPE;
                default -> throw new CommandLine.ParameterException(spec.commandLine(), "--schedule must be 1f1b or gpipe, got '"
                        + schedule + "'");
            };
            if (checkpoint != null || !(exchange instanceof GradientCompression.None)) {
                throw new CommandLine.ParameterException(spec.commandLine(), "--checkpoint and --compression are for the"
                        + " data-parallel samples; mnist-pipeline sends activations, not gradients");
            }
            if (microBatches < 1 || stages != null && stages < 1 || rebalanceEvery < 0) {
                throw new CommandLine.ParameterException(spec.commandLine(), "--micro-batches and --stages must be >= 1"
                        + " and --rebalance-every >= 0, got " + microBatches + ", " + stages + " and " + rebalanceEvery);
            }
            if (env.size() == 1) {
                return trainPipeline(s, nEpochs, sched, null);
            }
            try (Communicator comm = Communicator.connect(new Communicator.Context())) {
                return trainPipeline(s, nEpochs, sched, comm);
            }
        }
        if (env.size() == 1) {
            if (!(exchange instanceof GradientCompression.None)) {
                spec.commandLine().getErr().println("note: --compression applies between ranks; a single process"
                        + " sums its workers' gradients exactly");
            }
            return train(s, nEpochs, GradientAllReduce.singleRank());
        }
        try (Communicator comm = Communicator.connect(new Communicator.Context())) {
            return train(s, nEpochs, new CommGradientAllReduce(comm, exchange));
        }
    }

    private int train(TrainingSample s, int nEpochs, GradientAllReduce allReduce) throws Exception {
        int rank = allReduce.rank(), ranks = allReduce.worldSize();
        boolean lead = rank == 0;
        PrintWriter out = spec.commandLine().getOut();
        TrainingSample.Data data = s.load(trainSize, testSize, dataDir == null ? TrainingSample.FASHION_DIR : dataDir);
        if (lead) {
            out.printf(Locale.ROOT, "train %s: %d training / %d test images, %s%d workers x %d examples per step, %d epochs,"
                    + " seed %d%n", s.cliName(), data.train().numExamples(), data.test().numExamples(), ranks > 1 ? ranks + " ranks x " : "",
                    workers, batch, nEpochs, seed);
            out.flush();
        }

        List<TrainingSample.Model> models = s.models(seed);
        List<String> summary = new ArrayList<>();
        for (TrainingSample.Model m : models) {
            if (lead && models.size() > 1) {
                out.println("model " + m.label() + ": " + m.net().numParams() + " parameters"); // several: DL4J models
                out.flush();
            }
            Evaluation eval = fitOne(m, models.size() > 1, data, nEpochs, allReduce);
            if (eval != null) {
                summary.add(String.format(Locale.ROOT, "%s %.4f", m.label(), eval.accuracy()));
            }
        }
        if (lead && models.size() > 1) {
            out.println("test accuracy by model: " + String.join(", ", summary));
        }
        return 0;
    }

    /** Trains one model and, on rank 0, returns its test evaluation (null on other ranks). */
    private Evaluation fitOne(TrainingSample.Model m, boolean several, TrainingSample.Data data, int nEpochs,
                              GradientAllReduce allReduce) throws Exception {
        int rank = allReduce.rank(), ranks = allReduce.worldSize();
        boolean lead = rank == 0;
        PrintWriter out = spec.commandLine().getOut();
        int trainN = data.train().numExamples();
        int global = batch * workers * ranks;
        MultiLayerNetwork net = m.net();
        SameDiff sd = m.sameDiff();
        ParallelTrainer.Context ctx = new ParallelTrainer.Context().workers(workers).batchSizePerWorker(batch)
                .seed(seed + (long) rank * workers).trace(trace != null).allReduce(allReduce);
        if (sd != null) {
            ctx.sameDiff(sd).sameDiffOutput(TrainingSample.SAMEDIFF_OUTPUT);
        } else {
            ctx.model(net);
        }
        Checkpoints checkpoints = null;
        if (checkpoint != null && sd != null) {
            throw new CommandLine.ParameterException(spec.commandLine(), "--checkpoint works with the DL4J samples;"
                    + " " + m.label() + " is a SameDiff graph");
        }
        if (checkpoint != null) {
            checkpoints = Checkpoints.open(new Checkpoints.Context()
                    .directory(several ? checkpoint.resolve(m.label()) : checkpoint).keep(keep));
            ctx.checkpoints(checkpoints).checkpointEverySteps(checkpointEvery);
        }
        Evaluation eval = null;
        try (ParallelTrainer trainer = ParallelTrainer.launch(ctx)) {
            if (resume) {
                Optional<Checkpoints.Info> info = checkpoints.restoreLatest(trainer); // every rank; rank 0 says so
                if (lead && info.isPresent()) {
                    out.printf(Locale.ROOT, "resumed from %s: epoch %d, step %d of the epoch, iteration %d%n",
                            info.get().file(), info.get().epoch() + 1, info.get().stepInEpoch(), info.get().iteration());
                } else if (lead) {
                    out.println("no checkpoint in " + checkpoint + " yet: starting from the beginning");
                }
                out.flush();
            }
            long done = trainer.progress().examples();
            long totalSamples = Math.max(done, (long) trainN * nEpochs);
            ProgressBar bar = noProgress || !lead ? null : new ProgressBarBuilder().setTaskName(m.label()).setInitialMax(totalSamples)
                    .setStyle(ProgressBarStyle.ASCII).setUnit(" samples", 1).showSpeed()
                    .setConsumer(new ConsoleProgressBarConsumer(System.err)).setUpdateIntervalMillis(250).setMaxRenderedLength(110)
                    .startsFrom(done, java.time.Duration.ZERO).build();
            long start = System.nanoTime();
            // When and after how many examples the first epoch of this run ended: later epochs give the
            // steady-state throughput, without JIT warm-up and first-touch costs.
            long[] firstEpoch = {0, 0};
            if (net != null) {
                net.addListeners(new BaseTrainingListener() {
                private double lossSum;
                private int lossCount;

                @Override
                public void iterationDone(Model model, int iteration, int epoch) {
                    lossSum += model.score();
                    lossCount++;
                    if (bar != null) {
                        bar.stepTo(trainer.progress().examples());
                        bar.setExtraMessage(String.format(Locale.ROOT, " epoch %d loss %.4f", epoch + 1, model.score()));
                    }
                }

                @Override
                public void onEpochEnd(Model model) {
                    if (!lead) {
                        return;
                    }
                    ParallelTrainer.Progress p = trainer.progress();
                    long now = System.nanoTime();
                    if (firstEpoch[0] == 0) {
                        firstEpoch[0] = now;
                        firstEpoch[1] = p.examples() - done;
                    }
                    double secs = (now - start) / 1e9;
                    out.printf(Locale.ROOT, "epoch %d: mean loss %.4f, %.0f samples/s so far%n", p.epoch() + 1,
                            lossSum / Math.max(1, lossCount), (p.examples() - done) / secs);
                    out.flush();
                    lossSum = 0;
                    lossCount = 0;
                }
                });
            }
            try {
                if (sd == null) {
                    trainer.fitToEpoch(e -> data.trainEpoch(seed, e, global, rank, ranks), nEpochs);
                }
                // SameDiff takes no DL4J listeners: report epoch by epoch. Every epoch trains each example once.
                for (int e = trainer.progress().epoch(); sd != null && e < nEpochs; e++) {
                    trainer.fitToEpoch(ep -> data.trainEpoch(seed, ep, global, rank, ranks), e + 1);
                    if (bar != null) {
                        bar.stepTo((long) trainN * (e + 1));
                    }
                    if (firstEpoch[0] == 0) {
                        firstEpoch[0] = System.nanoTime();
                        firstEpoch[1] = (long) trainN * (e + 1);
                    }
                    if (lead) {
                        out.printf(Locale.ROOT, "epoch %d: last loss %.4f, %.0f samples/s so far%n", e + 1,
                                trainer.progress().lastLoss(), (double) trainN * (e + 1) / ((System.nanoTime() - start) / 1e9));
                        out.flush();
                    }
                }
            } finally {
                if (bar != null) {
                    bar.close();
                }
            }
            long end = System.nanoTime();
            double secs = (end - start) / 1e9;
            ParallelTrainer.Progress p = trainer.progress();
            long trained = sd == null ? p.examples() - done : (long) trainN * nEpochs; // SameDiff counts this rank only
            if (lead) {
                out.printf(Locale.ROOT, "trained %d steps (%d skipped) in %.1f s: %.0f samples/s with %s%d workers%n",
                        p.steps(), p.skippedSteps(), secs, trained / secs, ranks > 1 ? ranks + " ranks x " : "", workers);
                if (firstEpoch[0] != 0 && trained > firstEpoch[1] && end > firstEpoch[0]) {
                    out.printf(Locale.ROOT, "steady state after the first epoch: %.0f samples/s%n",
                            (trained - firstEpoch[1]) / ((end - firstEpoch[0]) / 1e9));
                }
                // The ranks' parameters are identical, so one evaluation tells for all.
                eval = trainer.evaluate(data.testIterator(500));
                out.printf(Locale.ROOT, "test accuracy%s: %.4f (%d images)%n", several ? " of " + m.label() : "",
                        eval.accuracy(), data.test().numExamples());
                if (net != null) {
                    routing(net, data).ifPresent(r -> out.println("routing of " + m.label() + " on the test set: " + r));
                }
            }
            if (ranks > 1) {
                out.printf(Locale.ROOT, "rank %d parameters crc32 %08x%n", rank, checksum(m));
            }
            if (trace != null) {
                Path file = ranks > 1 ? TraceFiles.perRank(trace, rank) : trace;
                file = several ? rankFile(file, m.label()) : file;
                trainer.scheduler().trace().ofRank(rank).writeChromeJson(file);
                out.println("trace written to " + file + " (open it in https://ui.perfetto.dev)");
            }
        }
        return eval;
    }

    /**
     * mnist-pipeline: the SameDiff MLP cut into stages ({@link SameDiffPipeline}), on this process's workers or one stage
     * per rank. Every rank reads the same data and steps through the same global batches; rank 0 gathers the parameters
     * and evaluates.
     */
    private int trainPipeline(TrainingSample s, int nEpochs, SameDiffPipeline.Schedule sched, Communicator comm)
            throws Exception {
        int rank = comm == null ? 0 : comm.rank(), ranks = comm == null ? 1 : comm.size();
        boolean lead = rank == 0;
        PrintWriter out = spec.commandLine().getOut();
        TrainingSample.Data data = s.load(trainSize, testSize);
        TrainingSample.Model m = s.models(seed).get(0);
        SameDiff sd = m.sameDiff();
        int nStages = stages != null ? stages : comm == null ? workers : ranks;
        // One micro-batch: the pipeline times its ops on it to balance the stages at the run's sizes.
        DataSet first = (DataSet) data.train().getRange(0, Math.min(Math.max(2, batch / microBatches),
                data.train().numExamples()));
        Map<String, INDArray> sample = Map.of("in", first.getFeatures(), "label", first.getLabels());
        SameDiffPipeline.Context ctx = new SameDiffPipeline.Context().sameDiff(sd).stages(nStages).microBatches(microBatches)
                .schedule(sched).sample(sample).trace(trace != null).communicator(comm).rebalanceEvery(rebalanceEvery);
        try (SameDiffPipeline p = SameDiffPipeline.launch(ctx)) {
            if (lead) {
                out.printf(Locale.ROOT, "train %s: %d training / %d test images, %d stages %s, %d examples per step in %d"
                        + " micro-batches (%s), %d epochs, seed %d%n", s.cliName(), data.train().numExamples(),
                        data.test().numExamples(), nStages, comm == null ? "on " + nStages + " workers" : "on " + ranks + " ranks",
                        batch, microBatches, sched, nEpochs, seed);
                out.println(describeStages(p, comm != null));
                out.flush();
            }
            int trainN = data.train().numExamples();
            ProgressBar bar = noProgress || !lead ? null : new ProgressBarBuilder().setTaskName(s.cliName())
                    .setInitialMax((long) trainN * nEpochs).setStyle(ProgressBarStyle.ASCII).setUnit(" samples", 1).showSpeed()
                    .setConsumer(new ConsoleProgressBarConsumer(System.err)).setUpdateIntervalMillis(250)
                    .setMaxRenderedLength(110).build();
            long start = System.nanoTime();
            long trained = 0;
            int skipped = 0;
            double bubble = 0;
            try {
                for (int e = 0; e < nEpochs; e++) {
                    DataSetIterator it = data.trainEpoch(seed, e, batch);   // the same batches on every rank
                    double last = Double.NaN;
                    while (it.hasNext()) {
                        org.nd4j.linalg.dataset.api.DataSet ds = it.next();
                        if (ds.numExamples() < 2 * Math.min(microBatches, batch)) {
                            // SameDiff 1.0.0-M2.1 fails on one-example batches of this graph: skip a short last batch.
                            skipped++;
                            continue;
                        }
                        last = p.fit(ds);
                        trained += ds.numExamples();
                        bubble += p.lastStep().bubbleFraction();
                        if (bar != null) {
                            bar.stepBy(ds.numExamples());
                            bar.setExtraMessage(String.format(Locale.ROOT, " epoch %d loss %.4f", e + 1, last));
                        }
                    }
                    sd.getTrainingConfig().incrementEpochCount();
                    if (lead) {
                        out.printf(Locale.ROOT, "epoch %d: last loss %.4f, %.0f samples/s so far%n", e + 1, last,
                                trained / ((System.nanoTime() - start) / 1e9));
                        out.flush();
                    }
                }
            } finally {
                if (bar != null) {
                    bar.close();
                }
            }
            double secs = (System.nanoTime() - start) / 1e9;
            p.gatherParameters();   // every rank's graph now holds all stages' parameters
            if (lead) {
                out.printf(Locale.ROOT, "trained %d steps (%d skipped) in %.1f s: %.0f samples/s, mean bubble %.3f of this"
                        + " rank's stage time, with %d stages%s%n", p.steps(), skipped, secs, trained / secs,
                        bubble / Math.max(1, p.steps()), nStages, comm == null ? "" : " on " + ranks + " ranks");
                if (rebalanceEvery > 0) {
                    out.printf(Locale.ROOT, "stages re-cut %d times by their measured times; now %s%n", p.rebalances(),
                            describeStages(p, comm != null));
                }
                Evaluation eval = new Evaluation(10);
                DataSetIterator test = data.testIterator(500);
                while (test.hasNext()) {
                    org.nd4j.linalg.dataset.api.DataSet ds = test.next();
                    INDArray probs = sd.output(Map.of("in", ds.getFeatures()), TrainingSample.SAMEDIFF_OUTPUT)
                            .get(TrainingSample.SAMEDIFF_OUTPUT);
                    eval.eval(ds.getLabels(), probs);
                }
                out.printf(Locale.ROOT, "test accuracy: %.4f (%d images)%n", eval.accuracy(), data.test().numExamples());
            }
            if (ranks > 1) {
                out.printf(Locale.ROOT, "rank %d parameters crc32 %08x%n", rank, checksum(m));
            }
            if (trace != null) {
                Path file = ranks > 1 ? TraceFiles.perRank(trace, rank) : trace;
                p.scheduler().trace().ofRank(rank).writeChromeJson(file);
                out.println("trace written to " + file + " (open it in https://ui.perfetto.dev)");
            }
            out.flush();
        }
        return 0;
    }

    /**
     * Tokens per expert of every MoE layer over the whole test set (max/mean, dead experts), or empty for a model
     * without one with several experts.
     */
    private static Optional<String> routing(MultiLayerNetwork net, TrainingSample.Data data) {
        long[] kept = null;
        var it = data.testIterator(500);
        while (it.hasNext()) {
            net.output(it.next().getFeatures(), false);
            for (MoeMetrics mm : MoeModels.metrics(net).values()) {
                int[] k = mm.keptPerExpert();
                if (k.length < 2) {
                    return Optional.empty();
                }
                if (kept == null) {
                    kept = new long[k.length];
                }
                for (int e = 0; e < k.length; e++) {
                    kept[e] += k[e];
                }
            }
        }
        if (kept == null) {
            return Optional.empty();
        }
        long max = java.util.Arrays.stream(kept).max().orElse(0), sum = java.util.Arrays.stream(kept).sum();
        long dead = java.util.Arrays.stream(kept).filter(k -> k == 0).count();
        return Optional.of(String.format(Locale.ROOT, "tokens per expert %s, max/mean %.3f, dead experts %d",
                java.util.Arrays.toString(kept), max / (sum / (double) kept.length), dead));
    }

    /** CRC-32 of the parameters' bytes: equal on every rank when the replicas are bit-identical. */
    private static long checksum(TrainingSample.Model m) {
        CRC32 crc = new CRC32();
        if (m.net() != null) {
            crc.update(m.net().params().data().asNio());
        } else {
            for (SDVariable v : m.sameDiff().variables()) {
                if (v.getVariableType() == VariableType.VARIABLE) {
                    crc.update(v.getArr().data().asNio());
                }
            }
        }
        return crc.getValue();
    }

    /** {@code trace.json} becomes {@code trace.rank1.json} for the part {@code rank1}. */
    private static Path rankFile(Path file, String part) {
        String name = file.getFileName().toString();
        int dot = name.lastIndexOf('.');
        String named = dot > 0 ? name.substring(0, dot) + "." + part + name.substring(dot) : name + "." + part;
        return file.resolveSibling(named);
    }
}
