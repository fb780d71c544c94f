package dev.poniard.scheduler.stream;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.poniard.scheduler.stream.StreamScheduler.Access;
import dev.poniard.scheduler.stream.cpu.CpuDevice;
import java.nio.ByteBuffer;
import java.util.ArrayList;
import java.util.Collections;
import java.util.List;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import java.util.function.Supplier;
import java.util.stream.Stream;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.MethodSource;

/**
 * The CPU emulation with kernels written in Java ({@code Runnable}s, which only the emulation can run): stream
 * order, failure propagation through events, stream choice. The device-neutral contract, with the shipped
 * kernels, runs on every implementation in {@link StreamContractTest}.
 */
@Timeout(value = 30, unit = TimeUnit.SECONDS)
class StreamTest {

    static Stream<Supplier<Device>> devices() {
        return Stream.of(() -> CpuDevice.launch(new CpuDevice.Context().computeStreams(3).computeCapacity(2)
                .copyBytesPerSecond(50e9)));
    }

    @ParameterizedTest
    @MethodSource("devices")
    void shouldRunTheOperationsOfAStreamInOrder(Supplier<Device> make) {
        try (Device d = make.get()) {
            List<Integer> order = Collections.synchronizedList(new ArrayList<>());
            dev.poniard.scheduler.stream.Stream s = d.computeStreams().get(1);
            for (int i = 0; i < 100; i++) {
                int k = i;
                s.launch(() -> order.add(k), 0);
            }
            s.record().synchronize();
            for (int i = 0; i < 100; i++) {
                assertEquals(i, order.get(i));
            }
        }
    }

    @ParameterizedTest
    @MethodSource("devices")
    void shouldCopyWhileAKernelRuns(Supplier<Device> make) throws Exception {
        try (Device d = make.get()) {
            CountDownLatch release = new CountDownLatch(1);
            CountDownLatch running = new CountDownLatch(1);
            d.computeStreams().get(1).launch(() -> {
                running.countDown();
                await(release);
            }, 0);
            assertTrue(running.await(10, TimeUnit.SECONDS));
            try (Buffer host = d.staging().acquire(1 << 16); Buffer dev = d.memory().acquire(1 << 16)) {
                d.hostToDevice().copy(host, 0, dev, 0, 1 << 16);
                Event copied = d.hostToDevice().record();
                copied.synchronize(); // returns although the kernel still runs: the copy engine is separate
                assertTrue(copied.isComplete());
                release.countDown();
                d.synchronize();
            }
        }
    }

    /**
     * The emulated engine runs back-to-back transfers at its bandwidth (a late wake-up of its thread is made up on
     * the next transfer), but never faster: not when catching up, and not when a kernel ran on the same stream.
     */
    @Test
    void shouldNeverCopyFasterThanTheEmulatedBandwidth() {
        int bytes = 1 << 20;
        try (CpuDevice d = CpuDevice.launch(new CpuDevice.Context().computeStreams(2).computeCapacity(1)
                .copyBytesPerSecond(1e9).memoryBytes(4L * bytes).stagingBytes(4L * bytes));
             Buffer host = d.staging().acquire(bytes); Buffer dev = d.memory().acquire(bytes)) {
            long t0 = System.nanoTime();
            for (int i = 0; i < 10; i++) {
                d.hostToDevice().copy(host, 0, dev, 0, bytes);
            }
            d.hostToDevice().record().synchronize();
            long copies = System.nanoTime() - t0;
            assertTrue(copies >= 10 * bytes - 1_000, "10 x 1 MiB at 1 GB/s took only " + copies + " ns");

            dev.poniard.scheduler.stream.Stream s = d.computeStreams().get(1);
            t0 = System.nanoTime();
            s.launch(() -> {
                long end = System.nanoTime() + 5_000_000;
                while (System.nanoTime() < end) {
                    Thread.onSpinWait();
                }
            }, 5_000_000);
            s.copy(host, 0, dev, 0, bytes);
            s.record().synchronize();
            long kernelThenCopy = System.nanoTime() - t0;
            assertTrue(kernelThenCopy >= 5_000_000 + bytes - 1_000,
                    "a 5 ms kernel, then 1 MiB at 1 GB/s on the same stream, took only " + kernelThenCopy + " ns");
        }
    }

    private static void await(CountDownLatch l) {
        try {
            l.await();
        } catch (InterruptedException e) {
            throw new IllegalStateException(e);
        }
    }

    /** Chunks copied in, doubled by a kernel, copied out: every result arrives, in every buffer. */
    @ParameterizedTest
    @MethodSource("devices")
    void shouldOrderWorkOnSharedBuffersAcrossStreamsWithEvents(Supplier<Device> make) {
        try (Device d = make.get()) {
            StreamScheduler sched = new StreamScheduler(d);
            int chunks = 12, floats = 4096, bytes = floats * 4;
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
                sched.launch(() -> {
                    ByteBuffer b = db.bytes();
                    for (int i = 0; i < floats; i++) {
                        b.putFloat(i * 4, b.getFloat(i * 4) * 2);
                    }
                }, 10_000, c % 4 == 0, Access.out(db));
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

    @ParameterizedTest
    @MethodSource("devices")
    void shouldFailEventsAfterAFailedOperationAndStreamsWaitingForThem(Supplier<Device> make) {
        try (Device d = make.get()) {
            dev.poniard.scheduler.stream.Stream a = d.computeStreams().get(1);
            dev.poniard.scheduler.stream.Stream b = d.computeStreams().get(2);
            a.launch(() -> {
                throw new ArithmeticException("kernel fault");
            }, 0);
            Event afterFault = a.record();
            b.waitFor(afterFault);
            Event onB = b.record();
            IllegalStateException e = assertThrows(IllegalStateException.class, onB::synchronize);
            assertTrue(e.getCause() instanceof ArithmeticException, e.toString());
            assertThrows(IllegalStateException.class, afterFault::synchronize);
        }
    }

    @ParameterizedTest
    @MethodSource("devices")
    void shouldDrainEveryStreamBeforeReportingAFailure(Supplier<Device> make) {
        try (Device d = make.get()) {
            dev.poniard.scheduler.stream.Stream a = d.computeStreams().get(0);
            a.launch(() -> {
                throw new ArithmeticException("kernel fault");
            }, 0);
            Event failed = a.record();
            boolean[] finished = new boolean[1];
            // runs on past the failure: synchronize() must wait for it rather than throw at the first failed stream
            d.computeStreams().get(1).launch(() -> {
                while (!failed.isComplete()) {
                    Thread.onSpinWait();
                }
                double x = 1;
                for (int i = 0; i < 20_000_000; i++) {
                    x = Math.fma(x, 1.0000001, 1e-9);
                }
                finished[0] = x > 0;
            }, 0);
            IllegalStateException e = assertThrows(IllegalStateException.class, d::synchronize);
            assertTrue(e.getCause() instanceof ArithmeticException, e.toString());
            assertTrue(finished[0], "synchronize() returned before the other stream drained");
        }
    }

    @ParameterizedTest
    @MethodSource("devices")
    void shouldRefuseACopyOutOfBounds(Supplier<Device> make) {
        try (Device d = make.get(); Buffer small = d.memory().acquire(64); Buffer host = d.staging().acquire(1024)) {
            IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                    () -> d.hostToDevice().copy(host, 0, small, 0, 1024));
            assertTrue(e.getMessage().contains("out of bounds"), e.getMessage());
        }
    }

    @ParameterizedTest
    @MethodSource("devices")
    void shouldPutCriticalWorkOnTheHighPriorityStream(Supplier<Device> make) {
        try (Device d = make.get(); Buffer b = d.memory().acquire(64)) {
            StreamScheduler sched = new StreamScheduler(d);
            String[] ran = new String[2];
            sched.launch(() -> ran[0] = Thread.currentThread().getName(), 0, true, Access.out(b));
            sched.launch(() -> ran[1] = Thread.currentThread().getName(), 0, false, Access.out(b));
            sched.synchronize();
            assertTrue(d.computeStreams().get(0).highPriority());
            assertEquals(d.computeStreams().get(0).name(), ran[0]);
            assertFalse(ran[1].equals(ran[0]), "non-critical work leaves the high-priority stream free");
        }
    }

    @Test
    void shouldReuseBuffersInsteadOfAllocating() {
        try (BufferPool pool = new BufferPool("test", false, 1 << 20)) {
            for (int i = 0; i < 100; i++) {
                Buffer a = pool.acquire(1000), b = pool.acquire(3000);
                a.close();
                b.close();
            }
            assertEquals(1024 + 4096, pool.allocatedBytes());
            assertEquals(0, pool.inUseBytes());
            Buffer big = pool.acquire(1 << 19);
            IllegalStateException e = assertThrows(IllegalStateException.class, () -> pool.acquire(1 << 19));
            assertTrue(e.getMessage().contains("in use"), e.getMessage());
            big.close();
        }
    }
}
