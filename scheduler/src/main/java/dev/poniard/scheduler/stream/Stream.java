package dev.poniard.scheduler.stream;

/**
 * An ordered queue of device work (as a CUDA stream): operations run one after another in the order they
 * were enqueued, and never wait for the host. Different streams run concurrently; {@link #waitFor} orders
 * work across streams through events.
 *
 * <p>Enqueue calls return at once. An operation that throws fails the stream: later operations are
 * skipped, and every event recorded after it (and every stream waiting for such an event) reports the
 * failure when synchronised.
 */
public interface Stream {
    /** What a stream is for: the copy engines are separate from compute, which lets copies overlap kernels. */
    enum Kind { COMPUTE, HOST_TO_DEVICE, DEVICE_TO_HOST }

    String name();

    Kind kind();

    /** Whether this is the device's high-priority compute stream (critical-path work goes there). */
    boolean highPriority();

    /**
     * Enqueues a kernel written in Java: {@code work} runs on the device's compute resources in stream order.
     * Only the CPU emulation can run Java code as device work; a GPU stream throws
     * {@link UnsupportedOperationException} and takes {@link #launch(KernelLaunch, long)} instead.
     *
     * @param estimateNs expected run time, for load balancing across streams (0 if unknown)
     */
    void launch(Runnable work, long estimateNs);

    /**
     * Enqueues one of the shipped kernels ({@link Kernels}) on device buffers of this stream's device: the PTX
     * on a GPU, its Java implementation on the CPU emulation. The launch was validated when it was built;
     * a buffer of another device is refused with {@link IllegalArgumentException}.
     *
     * @param estimateNs expected run time, for load balancing across streams (0 if unknown)
     */
    void launch(KernelLaunch kernel, long estimateNs);

    /**
     * Enqueues a library call ({@link DeviceCall}) on device buffers of this stream's device: its CUDA
     * implementation on a GPU, its host implementation on the CPU emulation. Pinned host memory, or memory of
     * another device, is refused with {@link IllegalArgumentException}.
     *
     * @param estimateNs expected run time, for load balancing across streams (0 if unknown)
     */
    void launch(DeviceCall call, long estimateNs);

    /**
     * Enqueues host code in stream order (as {@code cuLaunchHostFunc}): {@code fn} runs on a host thread once
     * the work before it on this stream is done, and later work on the stream waits for it. It may read and
     * write pinned host buffers ({@link Device#staging()}) but must not call into the device's API (a CUDA
     * rule). If {@code fn} throws, the CPU emulation fails the stream; a CUDA stream cannot be failed from the
     * host, so the CUDA device reports the first such failure from its next {@link Device#synchronize()}.
     *
     * @param estimateNs expected run time, for load balancing across streams (0 if unknown)
     */
    void launchHostFunction(Runnable fn, long estimateNs);

    /**
     * Enqueues an asynchronous copy of {@code bytes} bytes: the copy runs on this stream's engine at the
     * device's copy bandwidth.
     */
    void copy(Buffer from, long fromOffset, Buffer to, long toOffset, long bytes);

    /** Makes all later work on this stream wait until {@code event} completes (the host does not wait). */
    void waitFor(Event event);

    /** Records an event that completes when everything enqueued so far has run. */
    Event record();

    /** Estimated nanoseconds of work enqueued and not yet finished (the scheduler's load measure). */
    long pendingNs();
}
