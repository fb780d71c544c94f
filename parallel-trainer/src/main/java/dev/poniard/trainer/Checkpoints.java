package dev.poniard.trainer;

import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.io.ByteArrayInputStream;
import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.ByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.AtomicMoveNotSupportedException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.nio.file.StandardOpenOption;
import java.security.MessageDigest;
import java.security.NoSuchAlgorithmException;
import java.time.Instant;
import java.util.ArrayList;
import java.util.HexFormat;
import java.util.List;
import java.util.Objects;
import java.util.Optional;
import java.util.regex.Pattern;
import java.util.stream.Stream;
import org.deeplearning4j.nn.api.Model;
import org.deeplearning4j.nn.graph.ComputationGraph;
import org.deeplearning4j.nn.multilayer.MultiLayerNetwork;
import org.deeplearning4j.util.ModelSerializer;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * Checkpoints of a {@link ParallelTrainer} in a directory: written atomically (temporary file, fsync, rename, fsync of
 * the directory), verified by a SHA-256 checksum, carrying their provenance, the last {@code keep} of them kept.
 *
 * <p>File layout ({@code ckpt-<step>.poniard}, big-endian):
 * <pre>
 *   0                   8            12                     12+H         20+H                   20+H+P
 *   +-------------------+------------+----------------------+------------+----------------------+-----------+
 *   | magic "PNRDCKP1"  | H (int32)  | header, JSON (UTF-8) | P (int64)  | model (DL4J zip:     | SHA-256   |
 *   |                   |            | provenance, position |            | config, params,      | of all    |
 *   |                   |            |                      |            | updater state)       | before it |
 *   +-------------------+------------+----------------------+------------+----------------------+-----------+
 * </pre>
 * The header holds the training position (epoch, step in epoch, iteration, steps, examples) and the provenance:
 * seed, workers, batch size per worker, world size and rank, the model class and a hash of its configuration, the
 * DL4J, Java and OS versions, and the time of writing.
 */
public final class Checkpoints {
    private static final Logger LOG = LoggerFactory.getLogger(Checkpoints.class);
    static final byte[] MAGIC = "PNRDCKP1".getBytes(StandardCharsets.US_ASCII);
    private static final Pattern NAME = Pattern.compile("ckpt-(\\d{12})\\.poniard");
    private static final Pattern COUNTERS = Pattern.compile("\"(iterationCount|epochCount)\"\\s*:\\s*\\d+");
    private static final ObjectMapper JSON = new ObjectMapper();

    /** Configuration: the directory, and how many checkpoints to keep (default 3). */
    public static final class Context {
        private Path directory;
        private int keep = 3;

        public Path directory() {
            return directory;
        }

        public Context directory(Path value) {
            directory = value;
            return this;
        }

        public int keep() {
            return keep;
        }

        /** The newest {@code keep} checkpoints stay, older ones are deleted after each save. */
        public Context keep(int value) {
            keep = value;
            return this;
        }

        public Context conclude() {
            Objects.requireNonNull(directory, "directory must be set");
            if (keep < 1) {
                throw new IllegalArgumentException("keep must be >= 1, got " + keep);
            }
            return this;
        }
    }

    /** What a checkpoint's header says. */
    public record Info(Path file, int epoch, long stepInEpoch, int iteration, long steps, long skippedSteps, long examples,
                       long seed, int workers, int batchSizePerWorker, int worldSize, int rank, String modelClass,
                       String configurationSha256, String created, String dl4jVersion, String javaVersion) {
    }

    private final Context ctx;

    private Checkpoints(Context ctx) {
        this.ctx = ctx;
    }

    /** Uses (and creates if needed) the checkpoint directory. */
    public static Checkpoints open(Context ctx) {
        ctx.conclude();
        try {
            Files.createDirectories(ctx.directory());
        } catch (IOException e) {
            throw new UncheckedIOException("cannot create checkpoint directory " + ctx.directory() + ": " + e.getMessage(), e);
        }
        return new Checkpoints(ctx);
    }

    public Path directory() {
        return ctx.directory();
    }

    /** Checkpoint files, oldest first. */
    public List<Path> list() {
        try (Stream<Path> files = Files.list(ctx.directory())) {
            return files.filter(p -> NAME.matcher(p.getFileName().toString()).matches()).sorted().toList();
        } catch (IOException e) {
            throw new UncheckedIOException("cannot list " + ctx.directory() + ": " + e.getMessage(), e);
        }
    }

    public Optional<Path> latest() {
        List<Path> all = list();
        return all.isEmpty() ? Optional.empty() : Optional.of(all.get(all.size() - 1));
    }

    /** Writes a checkpoint of the trainer's current position and deletes the ones beyond {@code keep}. */
    public Path save(ParallelTrainer trainer) throws IOException {
        ModelReplica primary = trainer.primary();
        ParallelTrainer.Progress p = trainer.progress();
        ParallelTrainer.Context tc = trainer.context();
        ObjectNode h = JSON.createObjectNode();
        h.put("format", 1);
        h.put("epoch", p.epoch());
        h.put("stepInEpoch", p.stepInEpoch());
        h.put("iteration", primary.iterationCount());
        h.put("steps", p.steps());
        h.put("skippedSteps", p.skippedSteps());
        h.put("examples", p.examples());
        h.put("seed", tc.seed());
        h.put("workers", tc.workers());
        h.put("batchSizePerWorker", tc.batchSizePerWorker());
        h.put("worldSize", tc.allReduce().worldSize());
        h.put("rank", tc.allReduce().rank());
        h.put("modelClass", primary.model.getClass().getName());
        h.put("configurationSha256", configurationHash(primary));
        h.put("created", Instant.now().toString());
        h.put("dl4jVersion", Optional.ofNullable(MultiLayerNetwork.class.getPackage().getImplementationVersion()).orElse("unknown"));
        h.put("javaVersion", System.getProperty("java.version") + " (" + System.getProperty("java.vm.name") + ")");
        h.put("os", System.getProperty("os.name") + " " + System.getProperty("os.version") + " " + System.getProperty("os.arch"));
        byte[] header = JSON.writeValueAsBytes(h);
        ByteArrayOutputStream model = new ByteArrayOutputStream();
        ModelSerializer.writeModel(primary.model, model, true);
        byte[] payload = model.toByteArray();

        ByteBuffer head = ByteBuffer.allocate(MAGIC.length + 4 + header.length + 8);
        head.put(MAGIC).putInt(header.length).put(header).putLong(payload.length).flip();
        MessageDigest sha = sha256();
        sha.update(head.duplicate());
        sha.update(payload);
        byte[] digest = sha.digest();

        Path target = ctx.directory().resolve(String.format("ckpt-%012d.poniard", primary.iterationCount()));
        Path tmp = ctx.directory().resolve("." + target.getFileName() + ".tmp");
        try (FileChannel ch = FileChannel.open(tmp, StandardOpenOption.CREATE, StandardOpenOption.WRITE,
                StandardOpenOption.TRUNCATE_EXISTING)) {
            writeFully(ch, head);
            writeFully(ch, ByteBuffer.wrap(payload));
            writeFully(ch, ByteBuffer.wrap(digest));
            ch.force(true);
        }
        try {
            Files.move(tmp, target, StandardCopyOption.ATOMIC_MOVE, StandardCopyOption.REPLACE_EXISTING);
        } catch (AtomicMoveNotSupportedException e) {
            Files.deleteIfExists(tmp);
            throw new IOException("the file system of " + ctx.directory() + " cannot rename atomically; put checkpoints"
                    + " on a local file system", e);
        }
        syncDirectory();
        LOG.info("checkpoint {} (epoch {}, step {} of the epoch, iteration {})", target, p.epoch(), p.stepInEpoch(),
                primary.iterationCount());
        prune();
        return target;
    }

    /** Restores the newest checkpoint into the trainer; empty if the directory has none. */
    public Optional<Info> restoreLatest(ParallelTrainer trainer) throws IOException {
        Optional<Path> latest = latest();
        if (latest.isEmpty()) {
            return Optional.empty();
        }
        return Optional.of(restore(latest.get(), trainer));
    }

    /**
     * Loads a checkpoint into the trainer's model (parameters, updater state, counters) and sets the position that
     * {@link ParallelTrainer#fitToEpoch} resumes from. Refuses a corrupt checkpoint, one of another model
     * configuration, and one written with another seed, worker count, batch size or world size (the resumed run
     * would not follow the same path).
     */
    public Info restore(Path file, ParallelTrainer trainer) throws IOException {
        byte[] bytes = Files.readAllBytes(file);
        Parsed parsed = parse(file, bytes);
        Info info = parsed.info;
        ModelReplica primary = trainer.primary();
        ParallelTrainer.Context tc = trainer.context();
        List<String> mismatches = new ArrayList<>();
        if (!info.modelClass().equals(primary.model.getClass().getName())) {
            mismatches.add("model class " + info.modelClass() + " vs " + primary.model.getClass().getName());
        } else if (!info.configurationSha256().equals(configurationHash(primary))) {
            mismatches.add("model configuration (layers, sizes, updater) differs");
        }
        if (info.seed() != tc.seed()) {
            mismatches.add("seed " + info.seed() + " vs " + tc.seed());
        }
        if (info.workers() != tc.workers()) {
            mismatches.add("workers " + info.workers() + " vs " + tc.workers());
        }
        if (info.batchSizePerWorker() != tc.batchSizePerWorker()) {
            mismatches.add("batch size per worker " + info.batchSizePerWorker() + " vs " + tc.batchSizePerWorker());
        }
        if (info.worldSize() != tc.allReduce().worldSize()) {
            mismatches.add("world size " + info.worldSize() + " vs " + tc.allReduce().worldSize());
        }
        if (!mismatches.isEmpty()) {
            throw new CheckpointException(file + " does not match this run (checkpoint vs now): " + String.join("; ", mismatches)
                    + ". Resume with the settings the checkpoint was written with, or start without --resume / in another directory");
        }
        Model restored;
        try (ByteArrayInputStream in = new ByteArrayInputStream(bytes, parsed.payloadOffset, parsed.payloadLength)) {
            restored = primary.model instanceof ComputationGraph ? ModelSerializer.restoreComputationGraph(in, true)
                    : ModelSerializer.restoreMultiLayerNetwork(in, true);
        }
        INDArray params = restored.params();
        if (params.length() != primary.params().length()) {
            throw new CheckpointException(file + " holds " + params.length() + " parameters, the model has "
                    + primary.params().length());
        }
        primary.params().assign(params.reshape(primary.params().shape()));
        INDArray state = primary.updaterState();
        INDArray savedState = ModelReplica.of(restored).updaterState();
        if (state != null) {
            if (savedState == null || savedState.length() != state.length()) {
                throw new CheckpointException(file + " has no matching updater state (" + (savedState == null ? "none"
                        : savedState.length() + " values") + " for " + state.length() + ")");
            }
            state.assign(savedState.reshape(state.shape()));
        }
        trainer.restoreProgress(info.epoch(), info.iteration(), info.stepInEpoch(), info.steps(), info.skippedSteps(),
                info.examples());
        LOG.info("restored {} (epoch {}, step {} of the epoch, iteration {})", file, info.epoch(), info.stepInEpoch(),
                info.iteration());
        return info;
    }

    /** Reads and verifies a checkpoint's header and checksum. */
    public static Info info(Path file) throws IOException {
        return parse(file, Files.readAllBytes(file)).info;
    }

    private record Parsed(Info info, int payloadOffset, int payloadLength) {
    }

    private static Parsed parse(Path file, byte[] b) throws IOException {
        String corrupt = file + " is not a valid Poniard checkpoint: ";
        String what = " (a partial copy or a damaged file; delete it to resume from an older checkpoint)";
        if (b.length < MAGIC.length + 4 + 8 + 32) {
            throw new CheckpointException(corrupt + "only " + b.length + " bytes" + what);
        }
        ByteBuffer buf = ByteBuffer.wrap(b);
        byte[] magic = new byte[MAGIC.length];
        buf.get(magic);
        if (!java.util.Arrays.equals(magic, MAGIC)) {
            throw new CheckpointException(corrupt + "wrong magic bytes, expected PNRDCKP1");
        }
        int h = buf.getInt();
        if (h < 2 || h > b.length - buf.position() - 8 - 32) {
            throw new CheckpointException(corrupt + "header length " + h + " does not fit the file of " + b.length + " bytes" + what);
        }
        int headerOffset = buf.position();
        buf.position(headerOffset + h);
        long p = buf.getLong();
        int payloadOffset = buf.position();
        if (p < 0 || p != b.length - payloadOffset - 32L) {
            throw new CheckpointException(corrupt + "model length " + p + " does not fit the file of " + b.length + " bytes" + what);
        }
        MessageDigest sha = sha256();
        sha.update(b, 0, b.length - 32);
        byte[] expected = java.util.Arrays.copyOfRange(b, b.length - 32, b.length);
        if (!MessageDigest.isEqual(sha.digest(), expected)) {
            throw new CheckpointException(corrupt + "SHA-256 checksum mismatch" + what);
        }
        var n = JSON.readTree(new String(b, headerOffset, h, StandardCharsets.UTF_8));
        Info info = new Info(file, n.path("epoch").asInt(), n.path("stepInEpoch").asLong(), n.path("iteration").asInt(),
                n.path("steps").asLong(), n.path("skippedSteps").asLong(), n.path("examples").asLong(),
                n.path("seed").asLong(), n.path("workers").asInt(), n.path("batchSizePerWorker").asInt(),
                n.path("worldSize").asInt(), n.path("rank").asInt(), n.path("modelClass").asText(),
                n.path("configurationSha256").asText(), n.path("created").asText(), n.path("dl4jVersion").asText(),
                n.path("javaVersion").asText());
        return new Parsed(info, payloadOffset, (int) p);
    }

    /** Hash of the model configuration without its training counters, which change every step. */
    static String configurationHash(ModelReplica model) {
        String json = COUNTERS.matcher(model.configurationJson()).replaceAll("\"$1\" : 0");
        return HexFormat.of().formatHex(sha256().digest(json.getBytes(StandardCharsets.UTF_8)));
    }

    private void prune() throws IOException {
        List<Path> all = list();
        for (int i = 0; i < all.size() - ctx.keep(); i++) {
            Files.deleteIfExists(all.get(i));
        }
    }

    private void syncDirectory() {
        try (FileChannel dir = FileChannel.open(ctx.directory(), StandardOpenOption.READ)) {
            dir.force(true);
        } catch (IOException e) {
            // Some platforms cannot open a directory for sync; the rename itself is still atomic there.
            LOG.debug("cannot fsync directory {}: {}", ctx.directory(), e.toString());
        }
    }

    private static void writeFully(FileChannel ch, ByteBuffer b) throws IOException {
        while (b.hasRemaining()) {
            ch.write(b);
        }
    }

    private static MessageDigest sha256() {
        try {
            return MessageDigest.getInstance("SHA-256");
        } catch (NoSuchAlgorithmException e) {
            throw new IllegalStateException("SHA-256 is missing from this JVM", e);
        }
    }

    /** A checkpoint that cannot be used: damaged, or written by a different run configuration. */
    public static final class CheckpointException extends IOException {
        private static final long serialVersionUID = 1L;

        public CheckpointException(String message) {
            super(message);
        }
    }
}
