package dev.poniard.scheduler.stream;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.ArrayList;
import java.util.List;
import java.util.Random;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

/**
 * The device-neutral stream contract: only shipped kernels, copies, events and the scheduler, so every
 * implementation runs it unchanged — the CPU emulation everywhere ({@code CpuStreamContractTest}), a CUDA
 * GPU where one is present ({@code CudaStreamContractTest}, tag {@code gpu}).
 */
@Timeout(value = 60, unit = TimeUnit.SECONDS)
public abstract class StreamContractTest {

    /** A fresh device with at least 3 compute streams. */
    protected final Device open() {
        return open(null);
    }

    /** A fresh device with at least 3 compute streams, recording into {@code timeline} (null: none). */
    protected abstract Device open(DeviceTimeline timeline);

    /** Iterations of the spin kernel on one element that take tens of milliseconds on this device. */
    protected abstract int longSpinIters();

    protected static Buffer upload(Device d, float[] data, long capacity) {
        Buffer dev = d.memory().acquire(capacity);
        try (Buffer host = d.staging().acquire(capacity)) {
            for (int i = 0; i < data.length; i++) {
                host.bytes().putFloat(i * 4, data[i]);
            }
            d.hostToDevice().copy(host, 0, dev, 0, data.length * 4L);
            d.hostToDevice().record().synchronize();
        }
        return dev;
    }

    protected static float[] download(Device d, Buffer dev, int n) {
        try (Buffer host = d.staging().acquire(n * 4L)) {
            d.deviceToHost().copy(dev, 0, host, 0, n * 4L);
            d.deviceToHost().record().synchronize();
            float[] out = new float[n];
            for (int i = 0; i < n; i++) {
                out[i] = host.bytes().getFloat(i * 4);
            }
            return out;
        }
    }

    private static float[] constant(int n, float v) {
        float[] a = new float[n];
        java.util.Arrays.fill(a, v);
        return a;
    }

    @Test
    void shouldFillExactlyTheFirstNElements() {
        try (Device d = open(); Buffer b = upload(d, constant(1024, -1f), 4096)) {
            d.computeStreams().get(1).launch(KernelLaunch.of(Kernels.FILL_F32, b, 3.5f, 1000), 0);
            d.computeStreams().get(1).record().synchronize();
            float[] out = download(d, b, 1024);
            for (int i = 0; i < 1024; i++) {
                assertEquals(i < 1000 ? 3.5f : -1f, out[i], "element " + i);
            }
        }
    }

    /** The device's results are bit for bit those of the Java implementations in {@link Kernels}. */
    @Test
    void shouldComputeWhatTheJavaImplementationsCompute() {
        long seed = System.nanoTime();
        System.out.println("shouldComputeWhatTheJavaImplementationsCompute seed " + seed);
        Random rnd = new Random(seed);
        int n = 5000;
        float[] x = new float[n], y = new float[n];
        for (int i = 0; i < n; i++) {
            x[i] = (float) rnd.nextGaussian() * 100;
            y[i] = (float) rnd.nextGaussian();
        }
        float a = (float) rnd.nextGaussian(), b = (float) rnd.nextGaussian();
        try (Device d = open(); BufferPool ref = new BufferPool("reference", false, 1 << 20);
             Buffer dx = upload(d, x, n * 4L); Buffer dy = upload(d, y, n * 4L); Buffer dOut = d.memory().acquire(n * 4L);
             Buffer rx = ref.acquire(n * 4L); Buffer ry = ref.acquire(n * 4L); Buffer rOut = ref.acquire(n * 4L)) {
            for (int i = 0; i < n; i++) {
                rx.bytes().putFloat(i * 4, x[i]);
                ry.bytes().putFloat(i * 4, y[i]);
            }
            Stream s = d.computeStreams().get(1);
            s.launch(KernelLaunch.of(Kernels.SCALE_ADD_F32, dOut, dx, dy, a, b, n), 0);
            s.launch(KernelLaunch.of(Kernels.AXPY_F32, a, dx, dy, n), 0);
            s.launch(KernelLaunch.of(Kernels.SPIN_FMA_F32, dx, 0.999f, b, n, 100), 0);
            s.record().synchronize();
            Kernels.SCALE_ADD_F32.runOnCpu(KernelLaunch.of(Kernels.SCALE_ADD_F32, rOut, rx, ry, a, b, n));
            Kernels.AXPY_F32.runOnCpu(KernelLaunch.of(Kernels.AXPY_F32, a, rx, ry, n));
            Kernels.SPIN_FMA_F32.runOnCpu(KernelLaunch.of(Kernels.SPIN_FMA_F32, rx, 0.999f, b, n, 100));
            assertBits(rOut, download(d, dOut, n), "scale_add");
            assertBits(ry, download(d, dy, n), "axpy");
            assertBits(rx, download(d, dx, n), "spin_fma");
        }
    }

    private static void assertBits(Buffer expected, float[] actual, String what) {
        for (int i = 0; i < actual.length; i++) {
            float e = expected.bytes().getFloat(i * 4);
            assertEquals(Float.floatToRawIntBits(e), Float.floatToRawIntBits(actual[i]),
                    what + " element " + i + ": expected " + e + ", got " + actual[i]);
        }
    }

    /** y = 2y + c_k for k = 1..30: any reordering changes the result. */
    @Test
    void shouldRunTheKernelsOfAStreamInOrder() {
        int n = 256;
        try (Device d = open(); Buffer y = upload(d, constant(n, 0f), n * 4L);
             Buffer ones = upload(d, constant(n, 1f), n * 4L)) {
            Stream s = d.computeStreams().get(2);
            float expected = 0;
            for (int k = 1; k <= 30; k++) {
                float c = k % 7;
                s.launch(KernelLaunch.of(Kernels.SCALE_ADD_F32, y, y, ones, 2f, c, n), 0);
                expected = Math.fma(2f, expected, c * 1f);
            }
            s.record().synchronize();
            assertArrayEquals(constant(n, expected), download(d, y, n));
        }
    }

    @Test
    void shouldCopyWhileAKernelRuns() {
        try (Device d = open(); Buffer x = upload(d, constant(1, 0f), 64);
             Buffer host = d.staging().acquire(1 << 16); Buffer dev = d.memory().acquire(1 << 16)) {
            Stream s = d.computeStreams().get(1);
            s.launch(KernelLaunch.of(Kernels.SPIN_FMA_F32, x, 1f, 1f, 1, longSpinIters()), 0);
            Event kernelDone = s.record();
            d.hostToDevice().copy(host, 0, dev, 0, 1 << 16);
            Event copied = d.hostToDevice().record();
            copied.synchronize();
            assertFalse(kernelDone.isComplete(), "the copy waited for the kernel: copy and compute did not overlap");
            kernelDone.synchronize();
            assertTrue(kernelDone.isComplete());
        }
    }

    /** Stream B waits for a long kernel on stream A through an event, not through the host. */
    @Test
    void shouldOrderKernelsOnDifferentStreamsWithEvents() {
        int n = 32;
        float[] x0 = new float[n];
        for (int i = 0; i < n; i++) {
            x0[i] = i;
        }
        int iters = longSpinIters() / 4;
        try (Device d = open(); Buffer x = upload(d, x0, n * 4L); Buffer y = d.memory().acquire(n * 4L)) {
            Stream a = d.computeStreams().get(1), b = d.computeStreams().get(2);
            a.launch(KernelLaunch.of(Kernels.SPIN_FMA_F32, x, 1f, 1f, n, iters), 0); // x += iters, exactly
            Event spun = a.record();
            b.waitFor(spun);
            b.launch(KernelLaunch.of(Kernels.SCALE_ADD_F32, y, x, x, 1f, 1f, n), 0);
            b.record().synchronize();
            assertTrue(spun.isComplete(), "b's work ran after a's event");
            float[] out = download(d, y, n);
            for (int i = 0; i < n; i++) {
                assertEquals(2f * (i + iters), out[i], "element " + i);
            }
        }
    }

    /** Chunks copied in, doubled, copied out through the scheduler: every result arrives, in every buffer. */
    @Test
    void shouldPipelineChunksThroughTheScheduler() {
        int chunks = 12, floats = 4096, bytes = floats * 4;
        try (Device d = open()) {
            StreamScheduler sched = new StreamScheduler(d);
            List<Buffer> in = new ArrayList<>(), dev = new ArrayList<>(), out = new ArrayList<>();
            for (int c = 0; c < chunks; c++) {
                Buffer h = d.staging().acquire(bytes);
                for (int i = 0; i < floats; i++) {
                    h.bytes().putFloat(i * 4, c * 10_000 + i);
                }
                in.add(h);
                dev.add(d.memory().acquire(bytes));
                out.add(d.staging().acquire(bytes));
            }
            for (int c = 0; c < chunks; c++) {
                Buffer db = dev.get(c);
                sched.copyIn(in.get(c), db, bytes);
                sched.launch(KernelLaunch.of(Kernels.SCALE_ADD_F32, db, db, db, 1f, 1f, floats), 10_000, c % 4 == 0);
                sched.copyOut(db, out.get(c), bytes);
            }
            sched.synchronize();
            for (int c = 0; c < chunks; c++) {
                for (int i = 0; i < floats; i += 97) {
                    assertEquals(2f * (c * 10_000 + i), out.get(c).bytes().getFloat(i * 4), "chunk " + c + ", float " + i);
                }
            }
            for (List<Buffer> l : List.of(in, dev, out)) {
                l.forEach(Buffer::close);
            }
        }
    }

    @Test
    void shouldKeepAllocationOffTheHotPath() {
        try (Device d = open()) {
            long[] after = new long[2];
            for (int round = 0; round < 3; round++) {
                StreamScheduler sched = new StreamScheduler(d);
                for (int c = 0; c < 4; c++) {
                    Buffer h = d.staging().acquire(1 << 16), db = d.memory().acquire(1 << 16);
                    sched.copyIn(h, db, 1 << 16);
                    sched.launch(KernelLaunch.of(Kernels.FILL_F32, db, 1f, 1 << 14), 0, false);
                    sched.copyOut(db, h, 1 << 16);
                    sched.synchronize();
                    h.close();
                    db.close();
                }
                if (round == 0) {
                    after[0] = d.memory().allocatedBytes();
                    after[1] = d.staging().allocatedBytes();
                }
            }
            assertEquals(after[0], d.memory().allocatedBytes(), "device memory allocated after warm-up");
            assertEquals(after[1], d.staging().allocatedBytes(), "pinned memory allocated after warm-up");
            assertEquals(0, d.memory().inUseBytes());
        }
    }

    @Test
    void shouldReportPendingWorkUntilItCompletes() {
        try (Device d = open(); Buffer x = upload(d, constant(1, 0f), 64)) {
            Stream s = d.computeStreams().get(1);
            s.launch(KernelLaunch.of(Kernels.SPIN_FMA_F32, x, 1f, 1f, 1, longSpinIters()), 7_000_000);
            assertTrue(s.pendingNs() >= 7_000_000, "pending " + s.pendingNs());
            s.record().synchronize();
            assertEquals(0, s.pendingNs());
        }
    }

    @Test
    void shouldRefuseACopyOutOfBounds() {
        try (Device d = open(); Buffer small = d.memory().acquire(64); Buffer host = d.staging().acquire(1024)) {
            IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                    () -> d.hostToDevice().copy(host, 0, small, 0, 1024));
            assertTrue(e.getMessage().contains("out of bounds"), e.getMessage());
        }
    }

    @Test
    void shouldPutTheHighPriorityStreamFirst() {
        try (Device d = open()) {
            assertTrue(d.computeStreams().size() >= 3);
            assertTrue(d.computeStreams().get(0).highPriority());
            for (int i = 1; i < d.computeStreams().size(); i++) {
                assertFalse(d.computeStreams().get(i).highPriority());
            }
            assertEquals(Stream.Kind.HOST_TO_DEVICE, d.hostToDevice().kind());
            assertEquals(Stream.Kind.DEVICE_TO_HOST, d.deviceToHost().kind());
        }
    }

    /** {@code n} floats of {@code out} set to {@code value}: Java on the host, a driver memset on CUDA. */
    private static DeviceCall fill(Buffer out, float value, int n) {
        return DeviceCall.of("fill " + n, List.of(StreamScheduler.Access.out(out)), () -> {
            for (int i = 0; i < n; i++) {
                out.bytes().putFloat(i * 4, value);
            }
        }, site -> {
            int rc = jcuda.driver.JCudaDriver.cuMemsetD32Async(site.pointer(out), Float.floatToRawIntBits(value), n,
                    site.handle());
            if (rc != 0) {
                throw new IllegalStateException("cuMemsetD32Async failed: " + rc);
            }
        });
    }

    @Test
    void shouldOrderALibraryCallWithKernelsOnOtherStreams() {
        int n = 4096;
        try (Device d = open(); Buffer x = upload(d, constant(n, 3f), n * 4L); Buffer y = d.memory().acquire(n * 4L)) {
            StreamScheduler sched = new StreamScheduler(d);
            // x = fma(x, 1, 0) for a while on one stream, the fill on another, the axpy on the high-priority
            // stream: it must wait for both by events.
            sched.launch(KernelLaunch.of(Kernels.SPIN_FMA_F32, x, 1f, 0f, 1, longSpinIters()), 50_000_000, false);
            sched.launch(fill(y, 2f, n), 1000, false);
            sched.launch(KernelLaunch.of(Kernels.AXPY_F32, 0.5f, x, y, n), 1000, true);
            sched.synchronize();
            float[] out = download(d, y, n);
            for (int i = 0; i < n; i++) {
                assertEquals(3.5f, out[i], "element " + i);
            }
        }
    }

    @Test
    void shouldRefuseALibraryCallOnPinnedHostMemory() {
        try (Device d = open(); Buffer host = d.staging().acquire(1024)) {
            IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                    () -> d.computeStreams().get(1).launch(fill(host, 1f, 256), 0));
            assertTrue(e.getMessage().contains("fill 256"), e.getMessage());
        }
    }

    @Test
    void shouldRunHostFunctionsBetweenCopiesInOrder() {
        int n = 1000;
        float[] data = new float[n];
        for (int i = 0; i < n; i++) {
            data[i] = i;
        }
        try (Device d = open(); Buffer dev = upload(d, data, n * 4L); Buffer back = d.memory().acquire(n * 4L);
             Buffer host = d.staging().acquire(n * 4L)) {
            StreamScheduler sched = new StreamScheduler(d);
            sched.copyOut(dev, host, n * 4L);
            sched.host(() -> {
                for (int i = 0; i < n; i++) {
                    host.bytes().putFloat(i * 4, host.bytes().getFloat(i * 4) * 2);
                }
            }, 1000, StreamScheduler.Access.out(host));
            sched.copyIn(host, back, n * 4L);
            sched.launch(KernelLaunch.of(Kernels.AXPY_F32, 1f, dev, back, n), 1000, false);
            sched.synchronize();
            float[] out = download(d, back, n);
            for (int i = 0; i < n; i++) {
                assertEquals(3f * i, out[i], "element " + i);
            }
        }
    }

    @Test
    void shouldReportAFailedHostFunctionWhenSynchronizing() {
        try (Device d = open()) {
            d.deviceToHost().launchHostFunction(() -> {
                throw new ArithmeticException("host step failed");
            }, 0);
            IllegalStateException e = assertThrows(IllegalStateException.class, d::synchronize);
            assertTrue(e.getMessage().contains("host step failed"), e.getMessage());
        }
    }

    /**
     * The timeline shows each operation on its own stream under its name, in the order the events impose: the kernel
     * starts after the copy it waits for, the copy out after the kernel, and each names the operation it waited for;
     * a copy on another stream ran while a long kernel did. Times come from the device's own clock on a GPU, so small
     * tolerances cover the conversion.
     */
    @Test
    void timelineShouldShowEachOperationOnItsStreamInTheOrderEventsImpose() {
        DeviceTimeline timeline = new DeviceTimeline();
        int n = 4096;
        try (Device d = open(timeline); Buffer host = d.staging().acquire(n * 4L); Buffer dev = d.memory().acquire(n * 4L);
             Buffer x = d.memory().acquire(64); Buffer other = d.memory().acquire(n * 4L)) {
            d.synchronize();
            timeline.clear();
            Stream s = d.computeStreams().get(1);
            d.hostToDevice().copy(host, 0, dev, 0, n * 4L);
            s.waitFor(d.hostToDevice().record());
            s.launch(KernelLaunch.of(Kernels.FILL_F32, dev, 2f, n), 0);
            d.deviceToHost().waitFor(s.record());
            d.deviceToHost().copy(dev, 0, host, 0, n * 4L);
            d.synchronize();
            s.launch(KernelLaunch.of(Kernels.SPIN_FMA_F32, x, 1f, 1f, 1, longSpinIters()), 0);
            d.hostToDevice().copy(host, 0, other, 0, n * 4L);
            d.synchronize();

            List<DeviceTimeline.Interval> in = timeline.intervals();
            assertEquals(5, in.size(), in.toString());
            DeviceTimeline.Interval copyIn = nth(in, d.hostToDevice().name(), 0);
            DeviceTimeline.Interval fill = nth(in, s.name(), 0);
            DeviceTimeline.Interval copyOut = nth(in, d.deviceToHost().name(), 0);
            DeviceTimeline.Interval spin = nth(in, s.name(), 1);
            DeviceTimeline.Interval overlapped = nth(in, d.hostToDevice().name(), 1);
            assertEquals(DeviceTimeline.copyName(n * 4L), copyIn.name());
            assertEquals(Kernels.FILL_F32.name(), fill.name());
            assertEquals(DeviceTimeline.copyName(n * 4L), copyOut.name());
            assertEquals(Kernels.SPIN_FMA_F32.name(), spin.name());
            long tolerance = 2_000; // GPU event times are float milliseconds: about half a microsecond each
            for (DeviceTimeline.Interval iv : in) {
                assertTrue(iv.startNs() >= 0 && iv.endNs() >= iv.startNs(), iv.toString());
            }
            assertTrue(fill.startNs() + tolerance >= copyIn.endNs(), "kernel " + fill + " before its copy " + copyIn);
            assertTrue(copyOut.startNs() + tolerance >= fill.endNs(), "copy " + copyOut + " before its kernel " + fill);
            assertTrue(overlapped.endNs() < spin.endNs(), "the copy " + overlapped + " waited for the kernel " + spin);
            // The arrows: each operation names those it waited for through events, and only those.
            assertArrayEquals(new long[] {copyIn.id()}, fill.after(), fill.toString());
            assertArrayEquals(new long[] {fill.id()}, copyOut.after(), copyOut.toString());
            assertArrayEquals(new long[0], spin.after(), spin.toString());
            assertArrayEquals(new long[0], copyIn.after(), copyIn.toString());
        }
    }

    /** The {@code k}-th interval (0-based, by start time) on {@code stream}. */
    private static DeviceTimeline.Interval nth(List<DeviceTimeline.Interval> in, String stream, int k) {
        List<DeviceTimeline.Interval> on = in.stream().filter(i -> i.stream().equals(stream)).toList();
        assertTrue(on.size() > k, "no interval " + k + " on " + stream + ": " + in);
        return on.stream().sorted(java.util.Comparator.comparingLong(DeviceTimeline.Interval::startNs)).toList().get(k);
    }
}
