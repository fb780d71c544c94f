package dev.poniard.scheduler.stream;

import dev.poniard.scheduler.stream.Kernel.Param;
import dev.poniard.scheduler.stream.Kernel.Type;
import dev.poniard.scheduler.stream.StreamScheduler.Access;
import java.util.ArrayList;
import java.util.List;
import java.util.Objects;

/**
 * One launch of a {@link Kernel}: a one-dimensional grid of {@code grid} blocks of {@code block} threads and
 * its arguments — device {@link Buffer}s for buffer parameters, {@code Float} and {@code Integer} for
 * scalars. The constructor checks everything that can be checked without a device: argument count and
 * types, that buffers are device memory large enough for {@code n} floats, and that the grid covers
 * {@code n} threads. A launch is immutable and may be enqueued many times.
 */
public final class KernelLaunch {
    /** Threads per block chosen by {@link #of}; a multiple of the warp size that suits every CUDA GPU. */
    public static final int DEFAULT_BLOCK = 256;
    /** The CUDA limit on threads per block. */
    public static final int MAX_BLOCK = 1024;

    private final Kernel kernel;
    private final int grid;
    private final int block;
    private final Object[] args;

    public KernelLaunch(Kernel kernel, int grid, int block, Object... args) {
        this.kernel = Objects.requireNonNull(kernel, "kernel");
        this.args = args.clone();
        this.grid = grid;
        this.block = block;
        validate();
    }

    /** A launch with {@link #DEFAULT_BLOCK} threads per block and just enough blocks to cover {@code n}. */
    public static KernelLaunch of(Kernel kernel, Object... args) {
        int ci = kernel.countParam();
        if (args.length != kernel.params().size() || !(args[ci] instanceof Integer)) {
            // the constructor says precisely what is wrong
            return new KernelLaunch(kernel, 1, DEFAULT_BLOCK, args);
        }
        long n = Integer.toUnsignedLong((Integer) args[ci]);
        long blocks = Math.max(1, (n + DEFAULT_BLOCK - 1) / DEFAULT_BLOCK);
        return new KernelLaunch(kernel, (int) Math.min(Integer.MAX_VALUE, blocks), DEFAULT_BLOCK, args);
    }

    private void validate() {
        List<Param> ps = kernel.params();
        if (args.length != ps.size()) {
            throw new IllegalArgumentException("kernel " + kernel.name() + " takes " + ps.size() + " arguments "
                    + ps + ", got " + args.length);
        }
        if (block < 1 || block > MAX_BLOCK) {
            throw new IllegalArgumentException("kernel " + kernel.name() + ": block must be 1.." + MAX_BLOCK
                    + " threads, got " + block);
        }
        if (grid < 1) {
            throw new IllegalArgumentException("kernel " + kernel.name() + ": grid must be at least 1 block, got " + grid);
        }
        for (int i = 0; i < ps.size(); i++) {
            Param p = ps.get(i);
            Object a = args[i];
            String what = "kernel " + kernel.name() + ", argument " + i + " (" + p.name() + ")";
            switch (p.type()) {
                case BUFFER_F32:
                    if (!(a instanceof Buffer)) {
                        throw new IllegalArgumentException(what + " must be a device Buffer, got " + describe(a));
                    }
                    if (((Buffer) a).host()) {
                        throw new IllegalArgumentException(what + " is pinned host memory; kernels work on device"
                                + " memory: acquire it from Device.memory() and copy the data in first");
                    }
                    break;
                case F32:
                    if (!(a instanceof Float)) {
                        throw new IllegalArgumentException(what + " must be a Float, got " + describe(a));
                    }
                    break;
                case U32:
                    if (!(a instanceof Integer) || (Integer) a < 0) {
                        throw new IllegalArgumentException(what + " must be a non-negative Integer, got " + describe(a));
                    }
                    break;
                default:
                    throw new AssertionError(p.type());
            }
        }
        long n = (Integer) args[kernel.countParam()];
        if ((long) grid * block < n) {
            throw new IllegalArgumentException("kernel " + kernel.name() + ": " + grid + " blocks of " + block
                    + " threads cover " + (long) grid * block + " elements, fewer than n = " + n
                    + "; use KernelLaunch.of(...) or more blocks");
        }
        for (int i = 0; i < ps.size(); i++) {
            if (ps.get(i).type() == Type.BUFFER_F32 && ((Buffer) args[i]).capacity() < n * Float.BYTES) {
                throw new IllegalArgumentException("kernel " + kernel.name() + ", argument " + i + " ("
                        + ps.get(i).name() + "): a " + ((Buffer) args[i]).capacity() + "-byte buffer cannot hold n = "
                        + n + " floats (" + n * Float.BYTES + " bytes)");
            }
        }
    }

    private static String describe(Object a) {
        return a == null ? "null" : a.getClass().getSimpleName() + " " + a;
    }

    public Kernel kernel() {
        return kernel;
    }

    public int grid() {
        return grid;
    }

    public int block() {
        return block;
    }

    /** Argument {@code i} (a Buffer, Float or Integer, by the kernel's parameter types). */
    public Object arg(int i) {
        return args[i];
    }

    public int argCount() {
        return args.length;
    }

    /** The element count {@code n}. */
    public int count() {
        return (Integer) args[kernel.countParam()];
    }

    /** The buffers this launch reads and writes, for {@link StreamScheduler}. */
    public List<Access> accesses() {
        List<Access> out = new ArrayList<>();
        for (int i = 0; i < args.length; i++) {
            switch (kernel.params().get(i).mode()) {
                case IN:
                    out.add(Access.in((Buffer) args[i]));
                    break;
                case OUT:
                case INOUT:
                    out.add(Access.out((Buffer) args[i]));
                    break;
                default:
                    break;
            }
        }
        return out;
    }

    @Override
    public String toString() {
        return kernel.name() + "<<<" + grid + ", " + block + ">>>";
    }
}
