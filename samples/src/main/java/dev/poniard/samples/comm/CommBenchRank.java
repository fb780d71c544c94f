package dev.poniard.samples.comm;

import dev.poniard.samples.bench.BenchResult;
import dev.poniard.scheduler.comm.Communicator;
import dev.poniard.scheduler.comm.DataType;
import dev.poniard.scheduler.comm.ReduceOp;
import dev.poniard.scheduler.comm.Window;
import org.agrona.BufferUtil;
import org.agrona.UnsafeApi;

import java.nio.ByteBuffer;
import java.nio.ByteOrder;

/** One rank of {@link CommBenchSuite}; rank 0 prints one {@code BENCH|...} line per case. */
public final class CommBenchRank {
    private final Communicator c;
    private final boolean quick;

    private CommBenchRank(Communicator c, boolean quick) {
        this.c = c;
        this.quick = quick;
    }

    public static void main(String[] args) {
        final boolean quick = args.length > 0 && args[0].equals("quick");
        try (Communicator c = Communicator.connect(new Communicator.Context())) {
            new CommBenchRank(c, quick).runAll();
            c.barrier();
        }
    }

    private void report(BenchResult r) {
        if (c.rank() == 0) {
            System.out.println(CommBenchSuite.format(r));
        }
    }

    private void runAll() {
        report(BenchResult.standalone("pingpong_latency_8B", "half round trip", "us", pingPong(8, quick ? 2000 : 20000)));
        report(BenchResult.standalone("pingpong_latency_64KiB", "half round trip", "us",
            pingPong(64 << 10, quick ? 300 : 3000)));
        final int n = c.size();
        final double arFactor = 2.0 * (n - 1) / n;
        for (long bytes : new long[]{4 << 10, 1 << 20, 64 << 20, 256L << 20}) {
            final int iters = bytes <= (1 << 20) ? (quick ? 200 : 2000) : (bytes <= (64 << 20) ? (quick ? 3 : 10)
                : (quick ? 2 : 5));
            final double seconds = allReduce(bytes, iters);
            report(BenchResult.higherIsBetter("allreduce_busbw_" + label(bytes), "bus bandwidth", "GB/s",
                arFactor * bytes / seconds / 1e9, "memcpy", memcpy(bytes, iters)));
        }
        final long a2a = 16 << 20;
        report(BenchResult.higherIsBetter("alltoall_busbw_16MiB", "bus bandwidth", "GB/s",
            (n - 1.0) / n * a2a / allToAll(a2a, quick ? 5 : 20) / 1e9, "memcpy", memcpy(a2a, 5)));
        final long bc = 64 << 20;
        report(BenchResult.higherIsBetter("broadcast_busbw_64MiB", "bus bandwidth", "GB/s",
            bc / broadcast(bc, quick ? 3 : 10) / 1e9, "memcpy", memcpy(bc, 5)));
        report(BenchResult.standalone("rma_put_latency_1MiB", "put + fence", "us", rmaPut(1 << 20, quick ? 200 : 2000)));
    }

    private static String label(long bytes) {
        return bytes >= (1 << 20) ? (bytes >> 20) + "MiB" : (bytes >> 10) + "KiB";
    }

    private static ByteBuffer direct(long bytes) {
        final ByteBuffer b = ByteBuffer.allocateDirect((int) bytes).order(ByteOrder.nativeOrder());
        for (int i = 0; i + 4 <= bytes; i += 4096) {
            b.putFloat(i, 1.0f);
        }
        return b;
    }

    /**
     * Seconds per run of {@code op}. First a warm-up of at least {@code minIters} runs and 1 s (2 s in a full run), so
     * that the JIT has compiled the path (as JMH's warm-up iterations); then a timed loop of at least
     * {@code minIters} runs lasting about 0.25 s (1 s full) at the warm-up's pace, so that a single preemption of a
     * microsecond-scale operation does not decide the figure. Rank 0 decides both counts and broadcasts them, so
     * every rank runs {@code op} the same number of times.
     */
    private double secondsPerOp(Runnable op, int minIters) {
        final long warmUntil = System.nanoTime() + (quick ? 1_000_000_000L : 2_000_000_000L);
        final double timedNs = quick ? 0.25e9 : 1e9;
        final ByteBuffer plan = ByteBuffer.allocateDirect(8).order(ByteOrder.nativeOrder());
        final int batch = Math.max(1, minIters / 4);
        int done = 0;
        long timed;
        do {
            final long t0 = System.nanoTime();
            for (int i = 0; i < batch; i++) {
                op.run();
            }
            final double perOpNs = Math.max(1.0, (double) (System.nanoTime() - t0) / batch);
            done += batch;
            if (c.rank() == 0) {
                final boolean warm = done >= minIters && System.nanoTime() >= warmUntil;
                plan.putLong(0, warm ? Math.max(minIters, (long) Math.min(1_000_000, timedNs / perOpNs)) : 0);
            }
            c.broadcast(plan.clear(), 0);
            timed = plan.getLong(0);
        } while (timed == 0);
        c.barrier();
        final long t0 = System.nanoTime();
        for (long i = 0; i < timed; i++) {
            op.run();
        }
        final double seconds = (System.nanoTime() - t0) / 1e9 / timed;
        c.barrier();
        return seconds;
    }

    /** Half round trip in microseconds between ranks 0 and 1. */
    private double pingPong(int bytes, int iters) {
        final ByteBuffer b = direct(bytes);
        return secondsPerOp(() -> roundTrip(b), iters) * 1e6 / 2;
    }

    private void roundTrip(ByteBuffer b) {
        if (c.rank() == 0) {
            c.send(b.clear(), 1, 1);
            c.recv(b.clear(), 1, 2);
        } else if (c.rank() == 1) {
            c.recv(b.clear(), 0, 1);
            c.send(b.clear(), 0, 2);
        }
    }

    /** Seconds per all-reduce of {@code bytes} float32. */
    private double allReduce(long bytes, int iters) {
        final ByteBuffer b = direct(bytes);
        return secondsPerOp(() -> c.allReduce(b.clear(), DataType.FLOAT32, ReduceOp.SUM), iters);
    }

    private double allToAll(long bytes, int iters) {
        final ByteBuffer s = direct(bytes);
        final ByteBuffer r = direct(bytes);
        return secondsPerOp(() -> c.allToAll(s.clear(), r.clear()), iters);
    }

    private double broadcast(long bytes, int iters) {
        final ByteBuffer b = direct(bytes);
        return secondsPerOp(() -> c.broadcast(b.clear(), 0), iters);
    }

    /** memcpy bandwidth in GB/s for {@code bytes}, measured on this rank while the others wait. */
    private double memcpy(long bytes, int iters) {
        double gbps = 0;
        if (c.rank() == 0) {
            final ByteBuffer a = direct(bytes);
            final ByteBuffer b = direct(bytes);
            final long src = BufferUtil.address(a);
            final long dst = BufferUtil.address(b);
            // At least ~256 MiB copied per timing, best of three, after a warm-up: a fair, JIT-compiled baseline.
            final int reps = (int) Math.max(3, Math.max(iters, (256L << 20) / Math.max(1, bytes)));
            long best = Long.MAX_VALUE;
            for (int round = 0; round < 4; round++) {
                final long t0 = System.nanoTime();
                for (int i = 0; i < reps; i++) {
                    UnsafeApi.copyMemory(src, dst, bytes);
                }
                if (round > 0) {
                    best = Math.min(best, System.nanoTime() - t0);
                }
            }
            gbps = (double) bytes * reps / best;
        }
        c.barrier();
        return gbps;
    }

    /** Microseconds for rank 0 to put {@code bytes} into rank 1's window plus the fence. */
    private double rmaPut(int bytes, int iters) {
        try (Window w = Window.allocate(c, bytes)) {
            final ByteBuffer src = direct(bytes);
            final Runnable putAndFence = () -> {
                if (c.rank() == 0) {
                    w.put(src.clear(), 1, 0);
                }
                w.fence();
            };
            return secondsPerOp(putAndFence, iters) * 1e6;
        }
    }
}
