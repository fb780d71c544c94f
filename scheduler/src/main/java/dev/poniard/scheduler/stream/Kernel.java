package dev.poniard.scheduler.stream;

import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.FloatBuffer;
import java.util.List;
import java.util.Objects;

/**
 * A device kernel that Poniard ships: the entry point of a PTX module in this jar (under
 * {@code /dev/poniard/scheduler/kernels/}), its parameter list, and a Java implementation of the same
 * computation. A CUDA device launches the PTX; the CPU emulation runs the Java implementation. Both see
 * the same {@link KernelLaunch}, so a test written against one runs unchanged against the other.
 *
 * <p>Kernels are one-dimensional: thread {@code i = blockIdx.x * blockDim.x + threadIdx.x} handles element
 * {@code i} and threads with {@code i >= n} do nothing, where {@code n} is the kernel's count parameter.
 * Every buffer parameter holds {@code float}s and must have room for {@code n} of them.
 */
public final class Kernel {
    /** A parameter's type, as declared in the PTX entry: a device pointer to floats, a float, an unsigned int. */
    public enum Type { BUFFER_F32, F32, U32 }

    /** How a kernel uses a buffer parameter (scalars are {@link #VALUE}); drives the scheduler's event links. */
    public enum Mode { IN, OUT, INOUT, VALUE }

    public record Param(String name, Type type, Mode mode) {
        public Param {
            Objects.requireNonNull(name, "name");
            if ((type == Type.BUFFER_F32) == (mode == Mode.VALUE)) {
                throw new IllegalArgumentException("parameter " + name + ": buffers are IN/OUT/INOUT, scalars VALUE");
            }
        }

        public static Param in(String name) {
            return new Param(name, Type.BUFFER_F32, Mode.IN);
        }

        public static Param out(String name) {
            return new Param(name, Type.BUFFER_F32, Mode.OUT);
        }

        public static Param inout(String name) {
            return new Param(name, Type.BUFFER_F32, Mode.INOUT);
        }

        public static Param f32(String name) {
            return new Param(name, Type.F32, Mode.VALUE);
        }

        public static Param u32(String name) {
            return new Param(name, Type.U32, Mode.VALUE);
        }
    }

    /** The arguments of one launch as the Java implementation sees them: buffers as float views. */
    public static final class Args {
        private final KernelLaunch launch;

        Args(KernelLaunch launch) {
            this.launch = launch;
        }

        /** Buffer argument {@code i} as floats (native byte order, element 0 at the buffer's start). */
        public FloatBuffer floats(int i) {
            ByteBuffer b = ((Buffer) launch.arg(i)).bytes().duplicate().order(ByteOrder.nativeOrder());
            b.clear();
            return b.asFloatBuffer();
        }

        public float f32(int i) {
            return (Float) launch.arg(i);
        }

        public int u32(int i) {
            return (Integer) launch.arg(i);
        }
    }

    /** The Java implementation: the reference the PTX must agree with (bit for bit where both use FMA). */
    @FunctionalInterface
    public interface Body {
        void run(Args args);
    }

    private final String name;
    private final String module;
    private final List<Param> params;
    private final int countParam;
    private final Body body;

    /**
     * @param name the PTX entry point
     * @param module resource path of the PTX module holding it
     * @param countParam name of the {@link Type#U32} parameter that counts elements ({@code n})
     */
    public Kernel(String name, String module, String countParam, Body body, Param... params) {
        this.name = Objects.requireNonNull(name, "name");
        this.module = Objects.requireNonNull(module, "module");
        this.body = Objects.requireNonNull(body, "body");
        this.params = List.of(params);
        int c = -1;
        for (int i = 0; i < params.length; i++) {
            if (params[i].name().equals(countParam)) {
                c = i;
            }
        }
        if (c < 0 || this.params.get(c).type() != Type.U32) {
            throw new IllegalArgumentException("kernel " + name + " has no U32 parameter named " + countParam);
        }
        this.countParam = c;
    }

    public String name() {
        return name;
    }

    public String module() {
        return module;
    }

    public List<Param> params() {
        return params;
    }

    /** Index of the element-count parameter. */
    public int countParam() {
        return countParam;
    }

    /** Runs the Java implementation (the CPU emulation's kernel). */
    public void runOnCpu(KernelLaunch launch) {
        if (launch.kernel() != this) {
            throw new IllegalArgumentException("launch of " + launch.kernel().name() + " given to kernel " + name);
        }
        body.run(new Args(launch));
    }

    @Override
    public String toString() {
        return name;
    }
}
