package dev.poniard.moe;

import dev.poniard.scheduler.comm.Communicator;
import java.lang.ref.Reference;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.util.Arrays;
import org.agrona.concurrent.UnsafeBuffer;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;

/**
 * One step of one MoE layer's expert parallelism: who computes which rows, and the all-to-alls that move them.
 *
 * <p><b>Implementation overview.</b> {@link #open} all-gathers every rank's step description (a fingerprint of
 * the layer and the call, its kept and routed assignments per expert, its tokens), so every rank knows the whole
 * count matrix kept[r][e]. From the column sums alone — identical everywhere — it decides which experts are
 * shadowed ({@link #shadow}); every other expert e is <em>exchanged</em>: all ranks' rows of e go to its owner
 * e mod R. The layout follows from the matrix with no further messages: the block rank r sends to owner p holds,
 * after a header, r's rows of p's exchanged experts in ascending expert order, each in r's dispatch order; the
 * owner gathers them expert-major ([e0 from r0, e0 from r1, …, e1 from r0, …]) so each expert's rows are one
 * contiguous job, in the order the single-process layer would see the concatenated batch. Replies travel the
 * reverse layout. Every block starts with a 32-byte header
 * <pre>
 *   0        4        8        12       16                24               32
 *   | magic  | phase  | source | layer  | rows (int64)    | sequence (int64)|  then rows · d elements
 * </pre>
 * checked on receipt, so a peer that sent a different amount, phase or step fails the step with the offending
 * rank named (a block larger than expected is already refused by the communicator). When no row is exchanged at
 * all this step (everything shadowed, or no tokens) — again a decision every rank makes identically — the
 * all-to-alls are skipped on every rank. Collective order per step: allGather; then forward: allToAllV tokens,
 * allToAllV outputs; backward: allToAllV output gradients, allToAllV input gradients.
 */
final class ExpertExchange {
    static final int MAGIC = 0x4D6F4558; // "MoEX"
    static final int HEADER_BYTES = 32;
    /** Meta entries that must agree on every rank: magic, layer, experts, d, k, width, sequence, router. */
    private static final int CHECKED = 8;
    private static final String[] CHECKED_NAMES = {"magic", "layer index", "experts", "d", "top-k",
        "element bytes", "exchange sequence (forward passes)", "router"};
    private static final int META_FIXED = 10;

    enum Phase { TOKENS, OUTPUTS, OUTPUT_GRADIENTS, INPUT_GRADIENTS }

    private final ExpertParallel parallel;
    private final Communicator comm;
    private final int rank;
    private final int ranks;
    private final int experts;
    private final int layer;
    private final long sequence;
    private final long d;
    private final int width;
    private final DataType dataType;
    /** kept[r][e]: rank r's kept assignments of expert e. */
    private final long[][] kept;
    final long[] globalKept;
    final long[] globalRouted;
    final long globalTokens;
    final boolean[] shadowed;
    /** This rank's dispatch offsets (RoutingPlan.offsets). */
    private final int[] localOffsets;
    /** Owner-side rows: start of each owned exchanged expert's rows; rows of expert e from ranks before r. */
    private final int[] ownStart;
    private final int[] ownCount;
    private final long[][] before;
    final int ownRows;
    /** Rows this rank sends to / receives from each rank in the forward direction. */
    private final long[] outRows;
    private final long[] inRows;
    private final boolean anyExchange;
    private long bytesSent;
    private long bytesReceived;

    private ExpertExchange(ExpertParallel parallel, int layer, long sequence, long d, DataType dataType, long[][] kept,
                           long[] globalRouted, long globalTokens, boolean[] shadowed, int[] localOffsets) {
        this.parallel = parallel;
        this.comm = parallel.comm();
        this.rank = comm.rank();
        this.ranks = comm.size();
        this.experts = shadowed.length;
        this.layer = layer;
        this.sequence = sequence;
        this.d = d;
        this.dataType = dataType;
        this.width = dataType.width();
        this.kept = kept;
        this.globalRouted = globalRouted;
        this.globalTokens = globalTokens;
        this.shadowed = shadowed;
        this.localOffsets = localOffsets;
        globalKept = new long[experts];
        before = new long[ranks][experts];
        for (int e = 0; e < experts; e++) {
            for (int r = 0; r < ranks; r++) {
                before[r][e] = globalKept[e];
                globalKept[e] += kept[r][e];
            }
        }
        ownStart = new int[experts];
        ownCount = new int[experts];
        long own = 0;
        boolean any = false;
        outRows = new long[ranks];
        inRows = new long[ranks];
        for (int e = 0; e < experts; e++) {
            if (shadowed[e]) {
                continue;
            }
            any |= globalKept[e] > 0;
            int owner = ExpertParallelStats.owner(e, ranks);
            outRows[owner] += kept[rank][e];
            if (owner == rank) {
                ownStart[e] = (int) own;
                ownCount[e] = (int) globalKept[e];
                own += globalKept[e];
                for (int r = 0; r < ranks; r++) {
                    inRows[r] += kept[r][e];
                }
            }
        }
        if (own > Integer.MAX_VALUE) {
            throw new IllegalStateException("MoE layer " + layer + ": rank " + rank + " would own " + own
                    + " token rows this step, more than one array holds");
        }
        ownRows = (int) own;
        anyExchange = any;
    }

    /**
     * Collective: exchanges the step's counts, checks that every rank runs the same layer and step, and decides the
     * shadowed experts.
     *
     * @param examples this rank's minibatch size (reported, not used for layout)
     */
    static ExpertExchange open(ExpertParallel parallel, int layer, RoutingPlan plan, long examples, long d,
                               DataType dataType, int routerOrdinal) {
        Communicator comm = parallel.comm();
        int experts = plan.experts();
        int ranks = comm.size();
        long sequence = parallel.nextSequence();
        int metaLen = META_FIXED + 2 * experts;
        long[] mine = new long[metaLen];
        mine[0] = MAGIC;
        mine[1] = layer;
        mine[2] = experts;
        mine[3] = d;
        mine[4] = plan.k();
        mine[5] = dataType.width();
        mine[6] = sequence;
        mine[7] = routerOrdinal;
        mine[8] = plan.tokens();
        mine[9] = examples;
        for (int e = 0; e < experts; e++) {
            mine[META_FIXED + e] = plan.keptTokens(e);
            mine[META_FIXED + experts + e] = plan.routedTokens(e);
        }
        ByteBuffer send = ByteBuffer.allocateDirect(metaLen * 8).order(ByteOrder.LITTLE_ENDIAN);
        send.asLongBuffer().put(mine);
        ByteBuffer recv = ByteBuffer.allocateDirect(metaLen * 8 * ranks).order(ByteOrder.LITTLE_ENDIAN);
        try (ExpertParallel.Guard ignored = parallel.enter()) {
            comm.allGather(send, recv);
        }
        Reference.reachabilityFence(send);
        long[] all = new long[metaLen * ranks];
        recv.asLongBuffer().get(all);
        long[][] kept = new long[ranks][experts];
        long[] routed = new long[experts];
        long tokens = 0;
        for (int r = 0; r < ranks; r++) {
            int base = r * metaLen;
            for (int i = 0; i < CHECKED; i++) {
                if (all[base + i] != mine[i]) {
                    throw new IllegalStateException("MoE expert parallelism: rank " + r + " is at " + CHECKED_NAMES[i]
                            + " = " + all[base + i] + " where rank " + comm.rank() + " is at " + mine[i] + ": every rank "
                            + "must run the same model and call its MoE layers' forward passes in the same order "
                            + "(training and inference alike)");
                }
            }
            tokens += all[base + 8];
            for (int e = 0; e < experts; e++) {
                long k = all[base + META_FIXED + e];
                long ro = all[base + META_FIXED + experts + e];
                if (k < 0 || ro < 0 || k > all[base + 8] * (long) plan.k()) {
                    throw new IllegalStateException("MoE expert parallelism: rank " + r + " reports " + k + " kept and "
                            + ro + " routed assignments for expert " + e + " with " + all[base + 8] + " tokens");
                }
                kept[r][e] = k;
                routed[e] += ro;
            }
        }
        long[] globalKept = new long[experts];
        for (long[] row : kept) {
            for (int e = 0; e < experts; e++) {
                globalKept[e] += row[e];
            }
        }
        ExpertParallel.Context ctx = parallel.context();
        boolean[] shadowed = shadow(globalKept, ranks, ctx.shadowing(), ctx.shadowFactor());
        return new ExpertExchange(parallel, layer, sequence, d, dataType, kept, routed, tokens, shadowed,
                plan.offsets.clone());
    }

    /**
     * The shadowed experts: with more than one rank and shadowing on, those whose global load exceeds
     * {@code factor ×} the mean load per expert. A pure function of the all-reduced counts, so every rank decides
     * the same.
     */
    static boolean[] shadow(long[] globalLoad, int ranks, boolean enabled, double factor) {
        boolean[] out = new boolean[globalLoad.length];
        if (!enabled || ranks < 2 || globalLoad.length == 0) {
            return out;
        }
        double total = 0;
        for (long l : globalLoad) {
            total += l;
        }
        double threshold = factor * (total / globalLoad.length);
        for (int e = 0; e < out.length; e++) {
            out[e] = globalLoad[e] > 0 && globalLoad[e] > threshold;
        }
        return out;
    }

    /** Whether this rank runs expert e's job for the tokens of every rank (it owns e, e is exchanged and has rows). */
    boolean ownsRows(int e) {
        return !shadowed[e] && ownCount[e] > 0 && ExpertParallelStats.owner(e, ranks) == rank;
    }

    int ownStart(int e) {
        return ownStart[e];
    }

    int ownCount(int e) {
        return ownCount[e];
    }

    /**
     * Collective: sends this rank's rows of exchanged experts (rows of {@code local} at its dispatch positions) to
     * their owners; returns what this rank owns, expert-major [ownRows, d], or null when it owns no row.
     */
    INDArray toOwners(INDArray local, Phase phase) {
        INDArray own = ownRows > 0 ? Nd4j.zeros(dataType, ownRows, d) : null;
        if (!anyExchange) {
            return own;
        }
        UnsafeBuffer src = local == null ? null : memory(local);
        UnsafeBuffer dst = own == null ? null : memory(own);
        long rowBytes = d * width;
        exchange(phase, outRows, inRows, (peer, buf, at) -> {
            for (int e = peer; e < experts; e += ranks) { // the experts owned by peer, ascending
                if (!shadowed[e] && kept[rank][e] > 0) {
                    long bytes = kept[rank][e] * rowBytes;
                    buf.putBytes(Math.toIntExact(at), src, Math.toIntExact(localOffsets[e] * rowBytes),
                            Math.toIntExact(bytes));
                    at += bytes;
                }
            }
        }, (source, buf, at) -> {
            for (int e = rank; e < experts; e += ranks) {
                if (!shadowed[e] && kept[source][e] > 0) {
                    long bytes = kept[source][e] * rowBytes;
                    buf.getBytes(Math.toIntExact(at), dst, Math.toIntExact((ownStart[e] + before[source][e]) * rowBytes),
                            Math.toIntExact(bytes));
                    at += bytes;
                }
            }
        });
        // the copies went through raw addresses: keep the arrays (and their native memory) alive until here
        Reference.reachabilityFence(local);
        return own;
    }

    /**
     * Collective, the reverse of {@link #toOwners}: sends the owned rows of {@code own} back to the ranks they came
     * from and writes the rows this rank gets back into {@code target} at its dispatch positions (rows of shadowed
     * experts are left as they are).
     */
    void fromOwners(INDArray own, Phase phase, INDArray target) {
        if (!anyExchange) {
            return;
        }
        UnsafeBuffer src = own == null ? null : memory(own);
        UnsafeBuffer dst = target == null ? null : memory(target);
        long rowBytes = d * width;
        exchange(phase, inRows, outRows, (peer, buf, at) -> {
            for (int e = rank; e < experts; e += ranks) {
                if (!shadowed[e] && kept[peer][e] > 0) {
                    long bytes = kept[peer][e] * rowBytes;
                    buf.putBytes(Math.toIntExact(at), src, Math.toIntExact((ownStart[e] + before[peer][e]) * rowBytes),
                            Math.toIntExact(bytes));
                    at += bytes;
                }
            }
        }, (source, buf, at) -> {
            for (int e = source; e < experts; e += ranks) {
                if (!shadowed[e] && kept[rank][e] > 0) {
                    long bytes = kept[rank][e] * rowBytes;
                    buf.getBytes(Math.toIntExact(at), dst, Math.toIntExact(localOffsets[e] * rowBytes),
                            Math.toIntExact(bytes));
                    at += bytes;
                }
            }
        });
        Reference.reachabilityFence(own);
        Reference.reachabilityFence(target);
    }

    private interface Block {
        void apply(int rank, UnsafeBuffer buffer, long at);
    }

    private void exchange(Phase phase, long[] sendRows, long[] recvRows, Block pack, Block unpack) {
        long rowBytes = d * width;
        long[] sendCounts = new long[ranks];
        long[] sendDispls = new long[ranks];
        long[] recvCounts = new long[ranks];
        long[] recvDispls = new long[ranks];
        long sendTotal = 0;
        long recvTotal = 0;
        for (int p = 0; p < ranks; p++) {
            sendDispls[p] = sendTotal;
            sendCounts[p] = HEADER_BYTES + sendRows[p] * rowBytes;
            sendTotal += sendCounts[p];
            recvDispls[p] = recvTotal;
            recvCounts[p] = HEADER_BYTES + recvRows[p] * rowBytes;
            recvTotal += recvCounts[p];
        }
        ByteBuffer send = parallel.sendBuffer(sendTotal);
        ByteBuffer recv = parallel.recvBuffer(recvTotal);
        UnsafeBuffer out = new UnsafeBuffer(send, 0, (int) sendTotal);
        UnsafeBuffer in = new UnsafeBuffer(recv, 0, (int) recvTotal);
        for (int p = 0; p < ranks; p++) {
            int h = (int) sendDispls[p];
            out.putInt(h, MAGIC, ByteOrder.LITTLE_ENDIAN);
            out.putInt(h + 4, phase.ordinal(), ByteOrder.LITTLE_ENDIAN);
            out.putInt(h + 8, rank, ByteOrder.LITTLE_ENDIAN);
            out.putInt(h + 12, layer, ByteOrder.LITTLE_ENDIAN);
            out.putLong(h + 16, sendRows[p], ByteOrder.LITTLE_ENDIAN);
            out.putLong(h + 24, sequence, ByteOrder.LITTLE_ENDIAN);
            // poison the row count of the block we expect, so a short message cannot pass as last step's header
            in.putLong((int) recvDispls[p] + 16, -1L, ByteOrder.LITTLE_ENDIAN);
            pack.apply(p, out, sendDispls[p] + HEADER_BYTES);
        }
        try (ExpertParallel.Guard ignored = parallel.enter()) {
            comm.allToAllV(send, sendCounts, sendDispls, recv, recvCounts, recvDispls);
        }
        for (int r = 0; r < ranks; r++) {
            int h = (int) recvDispls[r];
            int magic = in.getInt(h, ByteOrder.LITTLE_ENDIAN);
            int ph = in.getInt(h + 4, ByteOrder.LITTLE_ENDIAN);
            int src = in.getInt(h + 8, ByteOrder.LITTLE_ENDIAN);
            int lay = in.getInt(h + 12, ByteOrder.LITTLE_ENDIAN);
            long rows = in.getLong(h + 16, ByteOrder.LITTLE_ENDIAN);
            long seq = in.getLong(h + 24, ByteOrder.LITTLE_ENDIAN);
            if (magic != MAGIC || ph != phase.ordinal() || src != r || lay != layer || rows != recvRows[r]
                    || seq != sequence) {
                throw new IllegalStateException(String.format("MoE layer %d rank %d, %s exchange %d: the block from rank "
                                + "%d holds magic %08x, phase %d, source %d, layer %d, %d rows, sequence %d; expected "
                                + "%08x, %d, %d, %d, %d rows, %d — the ranks disagree on the step's layout (a rank ran a "
                                + "different model or call order, or a message was cut short)", layer, rank, phase,
                        sequence, r, magic, ph, src, lay, rows, seq, MAGIC, phase.ordinal(), r, layer, recvRows[r],
                        sequence));
            }
            unpack.apply(r, in, recvDispls[r] + HEADER_BYTES);
            if (r != rank) {
                bytesSent += sendCounts[r];
                bytesReceived += recvCounts[r];
            }
        }
    }

    /** The stats of this step so far (the forward's exchanges when called after it). */
    ExpertParallelStats stats() {
        int count = 0;
        for (boolean s : shadowed) {
            count += s ? 1 : 0;
        }
        int[] list = new int[count];
        long rows = ownRows;
        for (int e = 0, i = 0; e < experts; e++) {
            if (shadowed[e]) {
                list[i++] = e;
                rows += kept[rank][e];
            }
        }
        return new ExpertParallelStats(rank, ranks, globalKept.clone(), list, rows, bytesSent, bytesReceived);
    }

    int ranks() {
        return ranks;
    }

    /** The memory of a fresh row-major [rows, d] array. */
    private UnsafeBuffer memory(INDArray a) {
        if (a.rank() != 2 || a.ordering() != 'c' || a.size(1) != d || a.stride(1) != 1
                || (a.size(0) > 1 && a.stride(0) != d) || a.dataType().width() != width) {
            throw new IllegalArgumentException("expected a row-major [rows, " + d + "] array of " + width
                    + "-byte elements, got shape " + Arrays.toString(a.shape()) + " strides "
                    + Arrays.toString(a.stride()) + " " + a.dataType());
        }
        long bytes = a.rows() * d * width;
        if (bytes > Integer.MAX_VALUE) {
            throw new IllegalArgumentException("a MoE exchange array of " + bytes + " bytes exceeds 2 GiB");
        }
        return new UnsafeBuffer(a.data().address() + a.offset() * width, (int) bytes);
    }
}
