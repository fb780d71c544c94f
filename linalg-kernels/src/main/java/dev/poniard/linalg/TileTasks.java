package dev.poniard.linalg;

import dev.poniard.linalg.tile.Tile;
import dev.poniard.scheduler.DataDeps;
import dev.poniard.scheduler.TaskOptions;

/**
 * Where the tile kernels of one operation go. An algorithm is written once against this interface: each
 * kernel names the tile it updates and the tiles it reads. {@link Local} spawns every kernel into the
 * region of this process; {@link SpmdTasks} runs the same program on every rank, keeps the kernels whose
 * output tile this rank owns and adds the transfers their remote inputs need.
 */
interface TileTasks {
    /** Tiles that kernels name by index: a distributed matrix, or the T/V factors of a QR. */
    interface Tiles {
        /** Tile (i, j), which must be held on this rank. */
        Tile tile(int i, int j);

        /** The rank that owns tile (i, j). */
        int ownerRank(int i, int j);

        int mt();

        int nt();

        /** A new zero tile of tile (i, j)'s shape and type (a shadow copy's storage). */
        Tile allocateLike(int i, int j);

        /** For messages. */
        String describe();
    }

    /** A tile by index: it may live on another rank. */
    record Ref(Tiles m, int i, int j) {
        Ref(DistributedMatrix m, int i, int j) {
            this(m.asTiles(), i, j);
        }
    }

    /** The body of a kernel: {@code out} is updated in place, {@code in} are read (local tiles or copies). */
    @FunctionalInterface
    interface Kernel {
        void run(Tile out, Tile[] in);
    }

    /** The body of a kernel that updates several tiles (all on one rank), as LU's panel. */
    @FunctionalInterface
    interface MultiKernel {
        void run(Tile[] out, Tile[] in);
    }

    /** Adds a kernel that reads {@code in} and reads and writes {@code out}. */
    void kernel(TaskOptions options, Kernel fn, Ref out, Ref... in);

    /** Adds a kernel that reads {@code in} and reads and writes every tile of {@code out} (one owner). */
    void kernel(TaskOptions options, MultiKernel fn, Ref[] out, Ref... in);

    /**
     * Announces that the current version of {@code tile} will be read by the ranks owning {@code consumers}
     * (a hint: a collective strategy broadcasts it to them at once; point to point ignores it and sends on
     * first use).
     */
    default void share(Ref tile, Ref... consumers) {
    }

    /**
     * Announces matrices that the operation reads and never writes (a hint: the RMA strategy exposes them
     * in windows for one-sided gets; the others ignore it).
     */
    default void expose(DistributedMatrix... readOnly) {
    }

    /** One process: every kernel straight into the region. */
    final class Local implements TileTasks {
        private final DataDeps region;

        Local(DataDeps region) {
            this.region = region;
        }

        @Override
        public void kernel(TaskOptions options, Kernel fn, Ref out, Ref... in) {
            kernel(options, (outs, ins) -> fn.run(outs[0], ins), new Ref[] {out}, in);
        }

        @Override
        public void kernel(TaskOptions options, MultiKernel fn, Ref[] out, Ref... in) {
            Tile[] ins = new Tile[in.length];
            for (int k = 0; k < in.length; k++) {
                ins[k] = in[k].m().tile(in[k].i(), in[k].j());
            }
            Tile[] outs = new Tile[out.length];
            for (int k = 0; k < out.length; k++) {
                outs[k] = out[k].m().tile(out[k].i(), out[k].j());
            }
            region.spawn(options, a -> {
                fn.run(outs, ins);
                return null;
            }, accesses(ins, outs));
        }
    }

    /** in(...) for every input, then inout(...) for every output. */
    static Object[] accesses(Tile[] ins, Tile[] outs) {
        Object[] args = new Object[ins.length + outs.length];
        for (int k = 0; k < ins.length; k++) {
            args[k] = DataDeps.in(ins[k]);
        }
        for (int k = 0; k < outs.length; k++) {
            args[ins.length + k] = DataDeps.inout(outs[k]);
        }
        return args;
    }
}
