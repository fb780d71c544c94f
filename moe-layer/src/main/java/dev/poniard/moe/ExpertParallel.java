package dev.poniard.moe;

import dev.poniard.scheduler.comm.Communicator;
import java.lang.ref.WeakReference;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.util.Map;
import java.util.Objects;
import java.util.WeakHashMap;
import java.util.concurrent.atomic.AtomicReference;

/**
 * Expert parallelism of one MoE layer across the ranks of a {@link Communicator}: attached at runtime with
 * {@link MoeModels#useCommunicator} (the layer configuration stays serialisable), never saved with the model.
 *
 * <p>Data-parallel training runs one model replica per rank. Expert e is owned by rank e mod R
 * ({@link ExpertParallelStats#owner}); weights stay replicated, but the expert's work for the tokens of all ranks
 * runs on its owner, tokens and gradients travelling by {@code allToAllV} ({@link ExpertExchange}). Experts whose
 * global load this step exceeds {@code shadowFactor ×} the mean are <em>shadowed</em> (FasterMoE, Hu et al.
 * PPoPP 2022): every rank computes them for its own tokens and nothing is exchanged for them. Since a non-owner
 * leaves an expert's weight gradient zero, a SUM all-reduce of the ranks' gradients gives the whole batch's.
 *
 * <p>What stays per rank: routing and its capacity (each rank's limit from its own tokens, as GShard's per-device
 * capacity), gates, shared experts and the router's backward. The Switch loss's f_e and bias balancing use the
 * global load; with equal batches per rank the summed gradients equal the whole batch's. Supported routers: TOP_K
 * and NOISY_TOP_K (expert choice and Soft MoE are refused when attaching).
 *
 * <p>Rules: every forward of an attached layer — training, inference, {@code output}, {@code score} alike — is a
 * collective (one allGather and two allToAllV; a backward two more allToAllV), so every rank must run the same
 * model passes in the same order; detach ({@code useCommunicator(model, null)}) for rank-local evaluation. A rank
 * that runs a different layer, call order or model is detected from the exchanged step description and block
 * headers and fails with an exception naming the disagreement. A rank that fails otherwise leaves its peers to
 * the communicator's failure detection (lost rank, or the operation timeout). One communicator rank serves one
 * model replica: binding a second live replica to it is refused, and so is a second thread entering an exchange
 * on it while one is in progress.
 */
public final class ExpertParallel {
    /** Which communicator drives which model replica, to refuse replicas sharing one rank. */
    private static final Map<Communicator, Binding> BINDINGS = new WeakHashMap<>();

    private final Communicator comm;
    private final Context ctx;
    private final Binding binding;
    private ByteBuffer send;
    private ByteBuffer recv;
    private long sequence;
    private boolean[] lastShadowed;

    private static final class Binding {
        final WeakReference<Object> owner;
        final AtomicReference<Thread> busy = new AtomicReference<>();
        int users;

        Binding(Object owner) {
            this.owner = new WeakReference<>(owner);
        }
    }

    /** Shadowing settings. */
    public static final class Context {
        private boolean shadowing = Boolean.parseBoolean(System.getProperty("poniard.moe.shadowing", "true"));
        private double shadowFactor = Double.parseDouble(System.getProperty("poniard.moe.shadowFactor", "2.0"));

        /** Whether hot experts are shadowed (default true, {@code -Dponiard.moe.shadowing}). */
        public boolean shadowing() {
            return shadowing;
        }

        public Context shadowing(boolean value) {
            shadowing = value;
            return this;
        }

        /**
         * An expert is shadowed when its global load exceeds this factor times the mean load per expert (default 2.0,
         * {@code -Dponiard.moe.shadowFactor}).
         */
        public double shadowFactor() {
            return shadowFactor;
        }

        public Context shadowFactor(double value) {
            shadowFactor = value;
            return this;
        }

        public Context conclude() {
            if (!(shadowFactor > 0) || Double.isInfinite(shadowFactor)) {
                throw new IllegalArgumentException("shadowFactor must be a finite number > 0, got " + shadowFactor
                        + " (use shadowing(false) to turn shadowing off)");
            }
            return this;
        }

        Context copy() {
            return new Context().shadowing(shadowing).shadowFactor(shadowFactor);
        }
    }

    private ExpertParallel(Communicator comm, Context ctx, Binding binding) {
        this.comm = comm;
        this.ctx = ctx;
        this.binding = binding;
    }

    /**
     * Binds {@code comm} to {@code owner} (a model replica, or a lone layer) and returns one layer's expert
     * parallelism on it.
     *
     * @throws IllegalStateException when another live replica already uses {@code comm}
     */
    static ExpertParallel attach(Communicator comm, Context ctx, Object owner) {
        Objects.requireNonNull(comm, "comm");
        Objects.requireNonNull(owner, "owner");
        Context c = Objects.requireNonNull(ctx, "ctx").copy().conclude();
        synchronized (BINDINGS) {
            Binding b = BINDINGS.get(comm);
            if (b != null && b.users > 0 && b.owner.get() != null && b.owner.get() != owner) {
                throw new IllegalStateException("communicator rank " + comm.rank() + " of " + comm.size()
                        + " already drives the expert parallelism of another model replica or layer ("
                        + b.owner.get() + "): each replica needs its own rank. Give every in-process replica its own Communicator "
                        + "(e.g. one per LocalCluster rank), bind a model's MoE layers together with "
                        + "MoeModels.useCommunicator(model, comm), or detach the other with "
                        + "MoeModels.useCommunicator(other, null)");
            }
            if (b == null || b.users == 0 || b.owner.get() == null) {
                b = new Binding(owner);
                BINDINGS.put(comm, b);
            }
            b.users++;
            return new ExpertParallel(comm, c, b);
        }
    }

    /** Releases this layer's share of the communicator's binding. */
    void detach() {
        synchronized (BINDINGS) {
            if (binding.users > 0 && --binding.users == 0 && BINDINGS.get(comm) == binding) {
                BINDINGS.remove(comm);
            }
        }
    }

    Communicator comm() {
        return comm;
    }

    Context context() {
        return ctx;
    }

    /** Marks the communicator as in an exchange on this thread; the returned guard's close ends it. */
    Guard enter() {
        Thread me = Thread.currentThread();
        if (!binding.busy.compareAndSet(null, me)) {
            Thread other = binding.busy.get();
            throw new IllegalStateException("communicator rank " + comm.rank() + " is in a MoE expert exchange on "
                    + "thread " + (other == null ? "?" : other.getName()) + " while thread " + me.getName()
                    + " starts another: replicas or threads must not share one rank. Give each replica its own "
                    + "Communicator, and run one replica's forward and backward passes on one thread at a time");
        }
        return () -> binding.busy.compareAndSet(me, null);
    }

    /** Ends an exchange. */
    interface Guard extends AutoCloseable {
        @Override
        void close();
    }

    /** The next exchange's sequence number (every rank counts the same). */
    long nextSequence() {
        return sequence++;
    }

    /** Previous step's shadowed set, for logging changes. */
    boolean[] swapShadowed(boolean[] now) {
        boolean[] before = lastShadowed;
        lastShadowed = now.clone();
        return before;
    }

    /** A reusable direct buffer of at least {@code bytes}, position 0, limit {@code bytes}. */
    ByteBuffer sendBuffer(long bytes) {
        send = ensure(send, bytes);
        return send.duplicate().order(ByteOrder.LITTLE_ENDIAN).limit((int) bytes).position(0);
    }

    ByteBuffer recvBuffer(long bytes) {
        recv = ensure(recv, bytes);
        return recv.duplicate().order(ByteOrder.LITTLE_ENDIAN).limit((int) bytes).position(0);
    }

    private static ByteBuffer ensure(ByteBuffer b, long bytes) {
        if (bytes > Integer.MAX_VALUE - 64) {
            throw new IllegalArgumentException("a MoE exchange of " + bytes + " bytes exceeds one direct buffer (2 GiB): "
                    + "use smaller batches per rank");
        }
        if (b == null || b.capacity() < bytes) {
            long cap = Math.max(bytes, b == null ? 4096 : Math.min(Integer.MAX_VALUE - 64, b.capacity() * 2L));
            return ByteBuffer.allocateDirect((int) cap).order(ByteOrder.LITTLE_ENDIAN);
        }
        return b;
    }

    @Override
    public String toString() {
        return "ExpertParallel(rank " + comm.rank() + "/" + comm.size() + (ctx.shadowing()
                ? ", shadow > " + ctx.shadowFactor() + "× mean)" : ", no shadowing)");
    }
}
