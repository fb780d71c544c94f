package dev.poniard.scheduler.stream.cuda;

import static dev.poniard.scheduler.stream.cuda.CudaCalls.check;
import static jcuda.driver.JCudaDriver.CU_MEMHOSTALLOC_PORTABLE;
import static jcuda.driver.JCudaDriver.cuCtxGetStreamPriorityRange;
import static jcuda.driver.JCudaDriver.cuCtxSetCurrent;
import static jcuda.driver.JCudaDriver.cuDeviceGet;
import static jcuda.driver.JCudaDriver.cuDevicePrimaryCtxRelease;
import static jcuda.driver.JCudaDriver.cuDevicePrimaryCtxRetain;
import static jcuda.driver.JCudaDriver.cuEventCreate;
import static jcuda.driver.JCudaDriver.cuEventDestroy;
import static jcuda.driver.JCudaDriver.cuEventElapsedTime;
import static jcuda.driver.JCudaDriver.cuEventQuery;
import static jcuda.driver.JCudaDriver.cuEventRecord;
import static jcuda.driver.JCudaDriver.cuEventSynchronize;
import static jcuda.driver.JCudaDriver.cuInit;
import static jcuda.driver.JCudaDriver.cuLaunchHostFunc;
import static jcuda.driver.JCudaDriver.cuLaunchKernel;
import static jcuda.driver.JCudaDriver.cuMemAlloc;
import static jcuda.driver.JCudaDriver.cuMemFree;
import static jcuda.driver.JCudaDriver.cuMemFreeHost;
import static jcuda.driver.JCudaDriver.cuMemHostAlloc;
import static jcuda.driver.JCudaDriver.cuMemcpyDtoDAsync;
import static jcuda.driver.JCudaDriver.cuMemcpyDtoHAsync;
import static jcuda.driver.JCudaDriver.cuMemcpyHtoDAsync;
import static jcuda.driver.JCudaDriver.cuModuleGetFunction;
import static jcuda.driver.JCudaDriver.cuModuleLoadData;
import static jcuda.driver.JCudaDriver.cuModuleUnload;
import static jcuda.driver.JCudaDriver.cuStreamCreateWithPriority;
import static jcuda.driver.JCudaDriver.cuStreamDestroy;
import static jcuda.driver.JCudaDriver.cuStreamGetPriority;
import static jcuda.driver.JCudaDriver.cuStreamSynchronize;
import static jcuda.driver.JCudaDriver.cuStreamWaitEvent;

import dev.poniard.scheduler.stream.Buffer;
import dev.poniard.scheduler.stream.BufferPool;
import dev.poniard.scheduler.stream.Device;
import dev.poniard.scheduler.stream.DeviceCall;
import dev.poniard.scheduler.stream.DeviceTimeline;
import dev.poniard.scheduler.stream.Event;
import dev.poniard.scheduler.stream.Kernel;
import dev.poniard.scheduler.stream.KernelLaunch;
import dev.poniard.scheduler.stream.Stream;
import dev.poniard.scheduler.stream.StreamScheduler.Access;
import java.io.IOException;
import java.io.InputStream;
import java.lang.ref.ReferenceQueue;
import java.lang.ref.WeakReference;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.util.ArrayDeque;
import java.util.ArrayList;
import java.util.Collections;
import java.util.HashMap;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.concurrent.atomic.AtomicReference;
import jcuda.Pointer;
import jcuda.driver.CUcontext;
import jcuda.driver.CUdevice;
import jcuda.driver.CUdevice_attribute;
import jcuda.driver.CUdeviceptr;
import jcuda.driver.CUevent;
import jcuda.driver.CUevent_flags;
import jcuda.driver.CUfunction;
import jcuda.driver.CUhostFn;
import jcuda.driver.CUmodule;
import jcuda.driver.CUresult;
import jcuda.driver.CUstream;
import jcuda.driver.CUstream_flags;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * A CUDA GPU driven through JCuda's driver API: K compute streams (the first at the highest priority the
 * context allows), a host-to-device and a device-to-host copy stream, all non-blocking (they never
 * synchronise with the legacy default stream), linked by events.
 *
 * <p><b>Implementation overview.</b> The device retains the GPU's primary context (shared with cuBLAS and
 * the runtime API, released on close) and makes it current on the calling thread before every driver call,
 * so any thread may use the device. Memory comes from two {@link BufferPool}s: device memory
 * ({@code cuMemAlloc}) and pinned, portable host memory ({@code cuMemHostAlloc}) for staging; both
 * allocate a size class once and reuse it, so the hot path never allocates. Copies are
 * {@code cuMemcpy*Async} on the stream they were enqueued on; host memory must come from
 * {@link #staging()} (pinned, so the copy really is asynchronous). Kernels are the shipped PTX modules
 * ({@link dev.poniard.scheduler.stream.Kernels}), loaded on first use with {@code cuModuleLoadData} so the
 * driver JIT-compiles them for this GPU; if the driver refuses a module, it is assembled with
 * {@link PtxAssembler} for this GPU's architecture and the cubin loaded instead (a warning says so, and
 * {@code -Dponiard.cuda.assemblePtx=true} takes that path from the start). Events are
 * {@code CU_EVENT_DISABLE_TIMING} events recorded with {@code cuEventRecord}; {@link Stream#waitFor} is
 * {@code cuStreamWaitEvent}, so streams wait for each other on the GPU and the host never blocks. Event
 * handles are recycled once their Java {@link Event} has become unreachable (a weak reference queue), so
 * recording does not create driver objects in the steady state. A stream's {@link Stream#pendingNs()} is
 * the estimate of work enqueued since its last record plus that of every recorded event not yet complete
 * ({@code cuEventQuery}). Library calls ({@link DeviceCall}) enqueue themselves on the stream's handle
 * ({@link CudaCallSite}); host functions are {@code cuLaunchHostFunc}, and since a host function cannot fail
 * a CUDA stream, the first one that throws is kept and rethrown by {@link #synchronize()}.
 *
 * <p>Errors: a failed driver call throws {@link IllegalStateException} naming the call and the CUDA error.
 * A fault inside a kernel is sticky in CUDA: it surfaces at the next synchronisation, and the context is
 * unusable afterwards (close the device).
 */
public final class CudaDevice implements Device {
    private static final Logger LOG = LoggerFactory.getLogger(CudaDevice.class);

    /** Configuration; defaults from system properties {@code poniard.cuda.*}. */
    public static final class Context {
        private int ordinal = Integer.getInteger("poniard.cuda.device", 0);
        private String name;
        private int computeStreams = Integer.getInteger("poniard.cuda.computeStreams", 4);
        private double copyBytesPerSecond = Double.parseDouble(System.getProperty("poniard.cuda.copyGBps", "25")) * 1e9;
        private long memoryBytes = Long.getLong("poniard.cuda.memoryMiB", 1024) << 20;
        private long stagingBytes = Long.getLong("poniard.cuda.stagingMiB", 512) << 20;
        private boolean assemblePtx = Boolean.getBoolean("poniard.cuda.assemblePtx");
        private DeviceTimeline timeline;

        public int ordinal() {
            return ordinal;
        }

        /** Which GPU (CUDA device ordinal). */
        public Context ordinal(int value) {
            ordinal = value;
            return this;
        }

        /** The device's name; default {@code cuda:<ordinal>}. */
        public String name() {
            return name == null ? "cuda:" + ordinal : name;
        }

        public Context name(String value) {
            name = value;
            return this;
        }

        public int computeStreams() {
            return computeStreams;
        }

        /** K: compute streams; the first is the high-priority one. */
        public Context computeStreams(int value) {
            computeStreams = value;
            return this;
        }

        public double copyBytesPerSecond() {
            return copyBytesPerSecond;
        }

        /** Planning figure for the copy engines' bandwidth (load estimates only; copies run at what PCIe gives). */
        public Context copyBytesPerSecond(double value) {
            copyBytesPerSecond = value;
            return this;
        }

        public long memoryBytes() {
            return memoryBytes;
        }

        /** Limit of the device memory pool. */
        public Context memoryBytes(long value) {
            memoryBytes = value;
            return this;
        }

        public long stagingBytes() {
            return stagingBytes;
        }

        /** Limit of the pinned host memory pool. */
        public Context stagingBytes(long value) {
            stagingBytes = value;
            return this;
        }

        public boolean assemblePtx() {
            return assemblePtx;
        }

        /** Assemble the PTX with {@link PtxAssembler} instead of letting the driver JIT-compile it. */
        public Context assemblePtx(boolean value) {
            assemblePtx = value;
            return this;
        }

        public DeviceTimeline timeline() {
            return timeline;
        }

        /**
         * Times every operation the streams run with a pair of timing events, added to {@code value} at each
         * {@link CudaDevice#synchronize()} (null, the default: none; the events cost about a microsecond per operation).
         */
        public Context timeline(DeviceTimeline value) {
            timeline = value;
            return this;
        }

        public Context conclude() {
            if (ordinal < 0) {
                throw new IllegalArgumentException("CUDA device ordinal must be >= 0, got " + ordinal);
            }
            if (computeStreams < 1) {
                throw new IllegalArgumentException("a device needs computeStreams >= 1, got " + computeStreams);
            }
            if (!(copyBytesPerSecond > 0)) {
                throw new IllegalArgumentException("copyBytesPerSecond must be > 0, got " + copyBytesPerSecond);
            }
            if (memoryBytes <= 0 || stagingBytes <= 0) {
                throw new IllegalArgumentException("memoryBytes and stagingBytes must be > 0, got " + memoryBytes
                        + " and " + stagingBytes);
            }
            return this;
        }
    }

    private final Context ctx;
    private final CUdevice cuDevice = new CUdevice();
    private final CUcontext context = new CUcontext();
    private final String description;
    private final String arch;
    private final List<Stream> compute;
    private final CudaStream h2d;
    private final CudaStream d2h;
    private final List<CudaStream> streams = new ArrayList<>();
    private final BufferPool memory;
    private final BufferPool staging;
    private final Map<String, CUmodule> modules = new HashMap<>();
    private final Map<Kernel, CUfunction> functions = new HashMap<>();
    private final Map<String, CUfunction> namedFunctions = new HashMap<>();
    private final Events events = new Events();
    /** Null without a timeline. */
    private final Timing timing;
    /** The first host function that threw since the last synchronize(). */
    private final AtomicReference<Throwable> hostFailure = new AtomicReference<>();
    private boolean closed;

    /**
     * Opens the device described by {@code ctx}.
     *
     * @throws IllegalStateException "no CUDA device: ..." where there is none (see {@link CudaDevices#detect()})
     */
    public static CudaDevice launch(Context ctx) {
        ctx.conclude();
        CudaDevices.Detection d = CudaDevices.detect();
        if (!d.available()) {
            throw new IllegalStateException("no CUDA device: " + d.reason()
                    + " (GPU tests and benchmarks run on a host with an NVIDIA GPU; see the README's GPU section)");
        }
        if (ctx.ordinal() >= d.count()) {
            throw new IllegalArgumentException("CUDA device " + ctx.ordinal() + " does not exist: this machine has "
                    + d.count() + " (" + d + ")");
        }
        return new CudaDevice(ctx);
    }

    private CudaDevice(Context ctx) {
        this.ctx = ctx;
        this.timing = ctx.timeline() == null ? null : new Timing(ctx.timeline());
        check(cuInit(0), "cuInit");
        check(cuDeviceGet(cuDevice, ctx.ordinal()), "cuDeviceGet(" + ctx.ordinal() + ")");
        this.description = CudaProbe.describe(ctx.ordinal());
        this.arch = "sm_" + CudaProbe.attribute(cuDevice, CUdevice_attribute.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR)
                + CudaProbe.attribute(cuDevice, CUdevice_attribute.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR);
        check(cuDevicePrimaryCtxRetain(context, cuDevice), "cuDevicePrimaryCtxRetain");
        try {
            bind();
            int[] least = {0}, greatest = {0};
            check(cuCtxGetStreamPriorityRange(least, greatest), "cuCtxGetStreamPriorityRange");
            List<Stream> c = new ArrayList<>();
            for (int i = 0; i < ctx.computeStreams(); i++) {
                c.add(stream(ctx.name() + "-compute-" + i, Stream.Kind.COMPUTE, i == 0 ? greatest[0] : least[0], i == 0));
            }
            this.compute = Collections.unmodifiableList(c);
            this.h2d = stream(ctx.name() + "-h2d", Stream.Kind.HOST_TO_DEVICE, least[0], false);
            this.d2h = stream(ctx.name() + "-d2h", Stream.Kind.DEVICE_TO_HOST, least[0], false);
            this.memory = new BufferPool(ctx.name() + "-memory", false, ctx.memoryBytes(), this::allocateDevice);
            this.staging = new BufferPool(ctx.name() + "-pinned", true, ctx.stagingBytes(), this::allocatePinned);
        } catch (RuntimeException e) {
            for (CudaStream s : streams) {
                cuStreamDestroy(s.handle);
            }
            cuDevicePrimaryCtxRelease(cuDevice);
            throw e;
        }
    }

    public static CudaDevice launch() {
        return launch(new Context());
    }

    private CudaStream stream(String name, Stream.Kind kind, int priority, boolean high) {
        CUstream s = new CUstream();
        check(cuStreamCreateWithPriority(s, CUstream_flags.CU_STREAM_NON_BLOCKING, priority),
                "cuStreamCreateWithPriority(" + name + ")");
        CudaStream cs = new CudaStream(name, kind, high, s);
        streams.add(cs);
        return cs;
    }

    /**
     * Makes this device's context (the GPU's primary context) current on the calling thread: needed before
     * calling a CUDA library directly, e.g. to create a cuBLAS handle; the device's own calls do it themselves.
     */
    public void bind() {
        check(cuCtxSetCurrent(context), "cuCtxSetCurrent(" + ctx.name() + ")");
    }

    /** Device memory: the JVM cannot see it. */
    private final class DeviceMemory implements BufferPool.Memory {
        final CUdeviceptr ptr;

        DeviceMemory(CUdeviceptr ptr) {
            this.ptr = ptr;
        }

        CudaDevice owner() {
            return CudaDevice.this;
        }

        @Override
        public ByteBuffer bytes() {
            return null;
        }

        @Override
        public void free() {
            bind();
            check(cuMemFree(ptr), "cuMemFree");
        }
    }

    /** Pinned host memory, also visible to the JVM as a direct buffer. */
    private final class PinnedMemory implements BufferPool.Memory {
        final Pointer ptr;
        final ByteBuffer bytes;

        PinnedMemory(Pointer ptr, long size) {
            this.ptr = ptr;
            this.bytes = ptr.getByteBuffer(0, size).order(ByteOrder.nativeOrder());
        }

        CudaDevice owner() {
            return CudaDevice.this;
        }

        @Override
        public ByteBuffer bytes() {
            return bytes;
        }

        @Override
        public void free() {
            bind();
            check(cuMemFreeHost(ptr), "cuMemFreeHost");
        }
    }

    private BufferPool.Memory allocateDevice(long bytes) {
        bind();
        CUdeviceptr p = new CUdeviceptr();
        check(cuMemAlloc(p, bytes), "cuMemAlloc(" + bytes + " bytes) on " + ctx.name());
        return new DeviceMemory(p);
    }

    private BufferPool.Memory allocatePinned(long bytes) {
        bind();
        Pointer p = new Pointer();
        check(cuMemHostAlloc(p, bytes, CU_MEMHOSTALLOC_PORTABLE), "cuMemHostAlloc(" + bytes + " bytes)");
        return new PinnedMemory(p, bytes);
    }

    private CUdeviceptr devicePointer(Buffer b, String role) {
        if (b.memory() instanceof DeviceMemory && ((DeviceMemory) b.memory()).owner() == this) {
            return ((DeviceMemory) b.memory()).ptr;
        }
        throw new IllegalArgumentException(role + " is not device memory of " + ctx.name()
                + ": acquire it from this device's memory() pool");
    }

    private Pointer hostPointer(Buffer b, String role) {
        if (b.memory() instanceof PinnedMemory && ((PinnedMemory) b.memory()).owner() == this) {
            return ((PinnedMemory) b.memory()).ptr;
        }
        throw new IllegalArgumentException(role + " is not pinned host memory of " + ctx.name()
                + ": acquire it from this device's staging() pool (asynchronous copies need pinned memory)");
    }

    /** The function of a shipped kernel, loading its module on first use. */
    private synchronized CUfunction function(Kernel k) {
        CUfunction f = functions.get(k);
        if (f != null) {
            return f;
        }
        CUmodule m = modules.get(k.module());
        if (m == null) {
            m = loadModule(k.module());
            modules.put(k.module(), m);
        }
        f = new CUfunction();
        check(cuModuleGetFunction(f, m, k.name()), "cuModuleGetFunction(" + k.name() + ") in " + k.module());
        functions.put(k, f);
        return f;
    }

    /**
     * The entry {@code entry} of a PTX module on the class path ({@code module} is its resource path, e.g.
     * {@code /dev/poniard/linalg/kernels/laswp.ptx}), loaded on first use as the shipped kernels are: for the CUDA
     * side of a {@link dev.poniard.scheduler.stream.DeviceCall} that launches its own PTX with {@code cuLaunchKernel}
     * on its call site's stream.
     *
     * @throws IllegalStateException when the module is missing or the entry is not in it
     */
    public synchronized CUfunction function(String module, String entry) {
        String key = module + '#' + entry;
        CUfunction f = namedFunctions.get(key);
        if (f != null) {
            return f;
        }
        bind();
        CUmodule m = modules.get(module);
        if (m == null) {
            m = loadModule(module);
            modules.put(module, m);
        }
        f = new CUfunction();
        check(cuModuleGetFunction(f, m, entry), "cuModuleGetFunction(" + entry + ") in " + module);
        namedFunctions.put(key, f);
        return f;
    }

    private CUmodule loadModule(String resource) {
        String ptx = readResource(resource);
        CUmodule m = new CUmodule();
        if (!ctx.assemblePtx()) {
            byte[] src = (ptx + '\0').getBytes(StandardCharsets.US_ASCII);
            int rc = cuModuleLoadData(m, src);
            if (rc == CUresult.CUDA_SUCCESS) {
                return m;
            }
            LOG.warn("the CUDA driver refused PTX module {} ({}); assembling it for {} with nvPTXCompiler instead",
                    resource, CUresult.stringFor(rc), arch);
        }
        byte[] cubin = PtxAssembler.assemble(resource, ptx, arch);
        check(cuModuleLoadData(m, cubin), "cuModuleLoadData(" + resource + " assembled for " + arch + ")");
        return m;
    }

    static String readResource(String resource) {
        try (InputStream in = CudaDevice.class.getResourceAsStream(resource)) {
            if (in == null) {
                throw new IllegalStateException("PTX module " + resource + " is missing from the class path:"
                        + " the poniard-scheduler jar is incomplete; rebuild it (./mvnw -pl scheduler package)");
            }
            return new String(in.readAllBytes(), StandardCharsets.US_ASCII);
        } catch (IOException e) {
            throw new IllegalStateException("cannot read PTX module " + resource + ": " + e, e);
        }
    }

    /** Loads every shipped kernel now (the first launch would otherwise pay for the JIT). */
    public void loadKernels(List<Kernel> kernels) {
        bind();
        for (Kernel k : kernels) {
            function(k);
        }
    }

    /** Name, compute capability, SMs, memory and copy engines, as the driver reports them. */
    public String description() {
        return description;
    }

    /** The GPU architecture, e.g. {@code sm_90}. */
    public String arch() {
        return arch;
    }

    /** The driver handle of one of this device's streams, for a library bound to a stream once ({@code cublasSetStream}). */
    public CUstream handle(Stream s) {
        return own(s).handle;
    }

    /** The priority the driver gave a stream (lower numbers are higher priorities). */
    public int priority(Stream s) {
        bind();
        int[] p = {0};
        check(cuStreamGetPriority(own(s).handle, p), "cuStreamGetPriority");
        return p[0];
    }

    private CudaStream own(Stream s) {
        if (s instanceof CudaStream && ((CudaStream) s).owner() == this) {
            return (CudaStream) s;
        }
        throw new IllegalArgumentException(s + " is not a stream of " + ctx.name());
    }

    @Override
    public String name() {
        return ctx.name();
    }

    @Override
    public List<Stream> computeStreams() {
        return compute;
    }

    @Override
    public Stream hostToDevice() {
        return h2d;
    }

    @Override
    public Stream deviceToHost() {
        return d2h;
    }

    @Override
    public BufferPool memory() {
        return memory;
    }

    @Override
    public BufferPool staging() {
        return staging;
    }

    @Override
    public double copyBytesPerSecond() {
        return ctx.copyBytesPerSecond();
    }

    /** Kernels that can run at once through this device: one per compute stream. */
    @Override
    public int computeCapacity() {
        return ctx.computeStreams();
    }

    @Override
    public void synchronize() {
        bind();
        IllegalStateException failure = null;
        for (CudaStream s : streams) {
            int rc = cuStreamSynchronize(s.handle);
            if (rc != CUresult.CUDA_SUCCESS && failure == null) {
                failure = new CudaCalls.CudaFailure("cuStreamSynchronize(" + s.name + ")", rc);
            }
            s.drain();
        }
        Throwable host = hostFailure.getAndSet(null);
        if (failure == null && host != null) {
            failure = new IllegalStateException("a host function enqueued on " + ctx.name() + " failed: " + host, host);
        }
        if (timing != null) {
            timing.resolve(failure == null ? h2d : null);
        }
        if (failure != null) {
            throw failure;
        }
    }

    @Override
    public synchronized void close() {
        if (closed) {
            return;
        }
        closed = true;
        bind();
        for (CudaStream s : streams) {
            cuStreamSynchronize(s.handle);
        }
        try {
            memory.close();
            staging.close();
        } finally {
            for (CudaStream s : streams) {
                cuStreamDestroy(s.handle);
            }
            events.destroyAll();
            if (timing != null) {
                timing.destroyAll();
            }
            for (CUmodule m : modules.values()) {
                cuModuleUnload(m);
            }
            modules.clear();
            functions.clear();
            namedFunctions.clear();
            cuDevicePrimaryCtxRelease(cuDevice);
        }
    }

    @Override
    public String toString() {
        return ctx.name() + " " + description;
    }

    /** An event: a recycled driver event handle, recorded on one stream. */
    private final class CudaEvent implements Event {
        final CUevent handle;
        /** The timeline id of the last operation before this event on its stream, or -1. */
        volatile long sourceOp = -1;

        CudaEvent(CUevent handle) {
            this.handle = handle;
        }

        CudaDevice owner() {
            return CudaDevice.this;
        }

        @Override
        public boolean isComplete() {
            bind();
            int rc = cuEventQuery(handle);
            // NOT_READY: still pending. Any other error is complete-with-failure; synchronize() reports it.
            return rc != CUresult.CUDA_ERROR_NOT_READY;
        }

        @Override
        public void synchronize() {
            bind();
            int rc = cuEventSynchronize(handle);
            if (rc != CUresult.CUDA_SUCCESS) {
                throw new IllegalStateException("device work failed before this event: cuEventSynchronize returned "
                        + CUresult.stringFor(rc) + " (" + rc + ")", new CudaCalls.CudaFailure("cuEventSynchronize", rc));
            }
        }
    }

    /** Driver event handles, created once and reused after their Java events become unreachable. */
    private final class Events {
        private final ReferenceQueue<CudaEvent> collected = new ReferenceQueue<>();
        private final Set<Ref> live = new HashSet<>();
        private final ArrayDeque<CUevent> free = new ArrayDeque<>();
        private final List<CUevent> all = new ArrayList<>();

        private final class Ref extends WeakReference<CudaEvent> {
            final CUevent handle;

            Ref(CudaEvent e) {
                super(e, collected);
                this.handle = e.handle;
            }
        }

        synchronized CudaEvent take() {
            for (Object r; (r = collected.poll()) != null; ) {
                Ref ref = (Ref) r;
                live.remove(ref);
                free.add(ref.handle);
            }
            CUevent h = free.poll();
            if (h == null) {
                h = new CUevent();
                check(cuEventCreate(h, CUevent_flags.CU_EVENT_DISABLE_TIMING), "cuEventCreate");
                all.add(h);
            }
            CudaEvent e = new CudaEvent(h);
            live.add(new Ref(e));
            return e;
        }

        synchronized void destroyAll() {
            for (CUevent h : all) {
                cuEventDestroy(h);
            }
            all.clear();
            free.clear();
            live.clear();
        }
    }

    /**
     * The timeline's event pairs: each operation is enqueued between two timing events; the pairs stay open until
     * {@link #synchronize()}, which records one more event after all of them, waits for it, and places each event
     * on the host clock by its elapsed time before that one. Those times are float milliseconds: about half a
     * microsecond apart a second back, 4 microseconds a minute back, so synchronize often for a fine timeline. At
     * most {@link #MAX_OPEN} pairs stay open between synchronizations; operations beyond them run untimed and are
     * counted as dropped.
     */
    private final class Timing {
        static final int MAX_OPEN = 1 << 15;

        private record Op(long id, long[] after, String stream, String name, CUevent start, CUevent end) {
        }

        private final DeviceTimeline timeline;
        private final ArrayDeque<CUevent> free = new ArrayDeque<>();
        private final List<CUevent> all = new ArrayList<>();
        private final List<Op> open = new ArrayList<>();

        Timing(DeviceTimeline timeline) {
            this.timeline = timeline;
        }

        /** Records the start of an operation on {@code s}; null when too many pairs are open. */
        synchronized CUevent begin(CudaStream s) {
            if (open.size() >= MAX_OPEN) {
                timeline.addDropped(1);
                return null;
            }
            CUevent e = take();
            check(cuEventRecord(e, s.handle), "cuEventRecord (timeline) on " + s.name);
            return e;
        }

        /**
         * Records the end of operation {@code id}, which {@code begin} started and which waits for {@code after}, or
         * gives its event back if it was not enqueued.
         */
        synchronized void end(CudaStream s, long id, long[] after, String name, CUevent start, boolean enqueued) {
            if (start == null) {
                return;
            }
            if (!enqueued) {
                free.add(start);
                return;
            }
            CUevent e = take();
            check(cuEventRecord(e, s.handle), "cuEventRecord (timeline) on " + s.name);
            open.add(new Op(id, after, s.name, name, start, e));
        }

        /**
         * With every stream synchronized: adds the open pairs to the timeline, measured back from an event recorded
         * now on {@code on}; with {@code on} null (the device failed) drops them.
         */
        synchronized void resolve(CudaStream on) {
            if (open.isEmpty()) {
                return;
            }
            try {
                if (on == null) {
                    timeline.addDropped(open.size());
                    return;
                }
                CUevent now = take();
                free.add(now);
                check(cuEventRecord(now, on.handle), "cuEventRecord (timeline) on " + on.name);
                check(cuEventSynchronize(now), "cuEventSynchronize (timeline)");
                long hostNow = System.nanoTime();
                float[] ms = new float[1];
                for (Op op : open) {
                    check(cuEventElapsedTime(ms, op.start(), now), "cuEventElapsedTime");
                    long start = hostNow - (long) (ms[0] * 1e6);
                    check(cuEventElapsedTime(ms, op.end(), now), "cuEventElapsedTime");
                    timeline.add(op.id(), op.after(), op.stream(), op.name(), start, hostNow - (long) (ms[0] * 1e6));
                }
            } finally {
                for (Op op : open) {
                    free.add(op.start());
                    free.add(op.end());
                }
                open.clear();
            }
        }

        private CUevent take() {
            CUevent h = free.poll();
            if (h == null) {
                h = new CUevent();
                check(cuEventCreate(h, CUevent_flags.CU_EVENT_DEFAULT), "cuEventCreate (timeline)");
                all.add(h);
            }
            return h;
        }

        synchronized void destroyAll() {
            for (CUevent h : all) {
                cuEventDestroy(h);
            }
            all.clear();
            free.clear();
            open.clear();
        }
    }

    /** One non-blocking CUDA stream. Thread-safe (each operation is a short synchronized driver call). */
    private final class CudaStream implements Stream, CudaCallSite {
        final String name;
        final Kind kind;
        final boolean high;
        final CUstream handle;
        /** Estimated work since the last record(). */
        long unrecordedNs;
        /** Recorded events not yet seen complete, with the work before each. */
        final ArrayDeque<Pending> pending = new ArrayDeque<>();
        /** The timeline's marks of this stream, or null without a timeline. */
        final DeviceTimeline.Marks marks = timing == null ? null : new DeviceTimeline.Marks();

        CudaStream(String name, Kind kind, boolean high, CUstream handle) {
            this.name = name;
            this.kind = kind;
            this.high = high;
            this.handle = handle;
        }

        CudaDevice owner() {
            return CudaDevice.this;
        }

        @Override
        public String name() {
            return name;
        }

        @Override
        public Kind kind() {
            return kind;
        }

        @Override
        public boolean highPriority() {
            return high;
        }

        @Override
        public void launch(Runnable work, long estimateNs) {
            throw new UnsupportedOperationException("a CUDA stream runs PTX kernels, not Java code: launch a"
                    + " KernelLaunch of one of the shipped kernels (dev.poniard.scheduler.stream.Kernels)");
        }

        @Override
        public synchronized void launch(KernelLaunch k, long estimateNs) {
            Pointer[] params = new Pointer[k.argCount()];
            for (int i = 0; i < params.length; i++) {
                Kernel.Param p = k.kernel().params().get(i);
                Object a = k.arg(i);
                switch (p.type()) {
                    case BUFFER_F32:
                        params[i] = Pointer.to(devicePointer((Buffer) a, k.kernel().name() + " argument " + p.name()));
                        break;
                    case F32:
                        params[i] = Pointer.to(new float[] {(Float) a});
                        break;
                    case U32:
                        params[i] = Pointer.to(new int[] {(Integer) a});
                        break;
                    default:
                        throw new AssertionError(p.type());
                }
            }
            bind();
            CUfunction f = function(k.kernel());
            timed(k.kernel().name(), () -> check(cuLaunchKernel(f, k.grid(), 1, 1, k.block(), 1, 1, 0, handle,
                    Pointer.to(params), null), "cuLaunchKernel(" + k + ") on " + name));
            unrecordedNs += Math.max(0, estimateNs);
        }

        @Override
        public synchronized void launch(DeviceCall call, long estimateNs) {
            for (Access a : call.accesses()) {
                devicePointer(a.buffer(), call.name() + " buffer");
            }
            bind();
            timed(call.name(), () -> call.enqueueOnCuda(this));
            unrecordedNs += Math.max(0, estimateNs);
        }

        @Override
        public synchronized void launchHostFunction(Runnable fn, long estimateNs) {
            CUhostFn hostFn = userData -> {
                try {
                    fn.run();
                } catch (RuntimeException | Error e) {
                    hostFailure.compareAndSet(null, e);
                }
            };
            bind();
            timed("host function", () -> check(cuLaunchHostFunc(handle, hostFn, null), "cuLaunchHostFunc on " + name));
            unrecordedNs += Math.max(0, estimateNs);
        }

        @Override
        public Stream stream() {
            return this;
        }

        @Override
        public CUstream handle() {
            return handle;
        }

        @Override
        public CUdeviceptr pointer(Buffer deviceBuffer) {
            return devicePointer(deviceBuffer, "buffer");
        }

        @Override
        public synchronized void copy(Buffer from, long fromOffset, Buffer to, long toOffset, long bytes) {
            if (fromOffset < 0 || toOffset < 0 || bytes < 0 || fromOffset + bytes > from.capacity()
                    || toOffset + bytes > to.capacity()) {
                throw new IllegalArgumentException("copy of " + bytes + " bytes from offset " + fromOffset + " of a "
                        + from.capacity() + "-byte buffer to offset " + toOffset + " of a " + to.capacity()
                        + "-byte buffer is out of bounds");
            }
            if (bytes == 0) {
                return;
            }
            if (from.host() && to.host()) {
                throw new IllegalArgumentException("a copy between two host buffers is not device work: copy the"
                        + " ByteBuffers on the host");
            }
            bind();
            timed(DeviceTimeline.copyName(bytes), () -> enqueueCopy(from, fromOffset, to, toOffset, bytes));
            unrecordedNs += (long) (bytes * 1e9 / ctx.copyBytesPerSecond());
        }

        /** Enqueues work on this stream, between a timeline's event pair when the device has one. */
        private void timed(String what, Runnable enqueue) {
            if (timing == null) {
                enqueue.run();
                return;
            }
            long id = ctx.timeline().nextId();
            long[] after = marks.enqueue(id);
            CUevent start = timing.begin(this);
            boolean enqueued = false;
            try {
                enqueue.run();
                enqueued = true;
            } finally {
                timing.end(this, id, after, what, start, enqueued);
            }
        }

        private void enqueueCopy(Buffer from, long fromOffset, Buffer to, long toOffset, long bytes) {
            if (from.host()) {
                check(cuMemcpyHtoDAsync(devicePointer(to, "copy destination").withByteOffset(toOffset),
                        hostPointer(from, "copy source").withByteOffset(fromOffset), bytes, handle),
                        "cuMemcpyHtoDAsync(" + bytes + " bytes) on " + name);
            } else if (to.host()) {
                check(cuMemcpyDtoHAsync(hostPointer(to, "copy destination").withByteOffset(toOffset),
                        devicePointer(from, "copy source").withByteOffset(fromOffset), bytes, handle),
                        "cuMemcpyDtoHAsync(" + bytes + " bytes) on " + name);
            } else {
                check(cuMemcpyDtoDAsync(devicePointer(to, "copy destination").withByteOffset(toOffset),
                        devicePointer(from, "copy source").withByteOffset(fromOffset), bytes, handle),
                        "cuMemcpyDtoDAsync(" + bytes + " bytes) on " + name);
            }
        }

        @Override
        public synchronized void waitFor(Event event) {
            if (!(event instanceof CudaEvent) || ((CudaEvent) event).owner() != CudaDevice.this) {
                throw new IllegalArgumentException("a stream of " + ctx.name() + " can only wait for events of the"
                        + " same device, got " + event);
            }
            bind();
            check(cuStreamWaitEvent(handle, ((CudaEvent) event).handle, 0), "cuStreamWaitEvent on " + name);
            if (marks != null) {
                marks.waitFor(((CudaEvent) event).sourceOp);
            }
        }

        @Override
        public synchronized Event record() {
            CudaEvent e = events.take();
            bind();
            check(cuEventRecord(e.handle, handle), "cuEventRecord on " + name);
            e.sourceOp = marks == null ? -1 : marks.last();
            if (unrecordedNs > 0) {
                pending.add(new Pending(e, unrecordedNs));
                unrecordedNs = 0;
            }
            return e;
        }

        @Override
        public synchronized long pendingNs() {
            bind();
            while (!pending.isEmpty() && pending.peek().event.isComplete()) {
                pending.poll();
            }
            long sum = unrecordedNs;
            for (Pending p : pending) {
                sum += p.ns;
            }
            return sum;
        }

        /** After a stream synchronize: nothing is pending. */
        synchronized void drain() {
            pending.clear();
            unrecordedNs = 0;
        }

        @Override
        public String toString() {
            return name;
        }
    }

    private record Pending(CudaEvent event, long ns) {
    }
}
