package dev.poniard.scheduler.comm;

import java.nio.ByteBuffer;
import java.nio.ByteOrder;

/**
 * The rank program of {@link MultiProcessTest}: {@code check} runs collectives and verifies them,
 * {@code victim} reports READY and then all-reduces until the communicator fails (printing which rank was
 * lost and how long detection took), {@code fail} exits with status 7 after connecting.
 */
public final class CommWorker {
    private CommWorker() {
    }

    public static void main(String[] args) {
        final String mode = args.length > 0 ? args[0] : "check";
        final Communicator.Context ctx = new Communicator.Context()
            .heartbeatIntervalMs(200).failureTimeoutMs(2000);
        try (Communicator c = Communicator.connect(ctx)) {
            switch (mode) {
                case "check" -> check(c);
                case "victim" -> victim(c);
                case "fail" -> {
                    if (c.rank() == 1) {
                        System.out.println("failing on purpose");
                        System.exit(7);
                    }
                    c.barrier();
                }
                default -> throw new IllegalArgumentException(mode);
            }
        }
    }

    private static void check(Communicator c) {
        final int n = c.size();
        for (Algorithm a : new Algorithm[]{Algorithm.RING, Algorithm.RECURSIVE_DOUBLING, Algorithm.RABENSEIFNER,
            Algorithm.SHARED_MEMORY}) {
            final int count = 300_007;
            final ByteBuffer b = ByteBuffer.allocateDirect(count * 4).order(ByteOrder.nativeOrder());
            for (int i = 0; i < count; i++) {
                b.putInt(i * 4, c.rank() * 1000 + i % 977);
            }
            c.allReduce(b, DataType.INT32, ReduceOp.SUM, a);
            for (int i = 0; i < count; i++) {
                final int want = 1000 * n * (n - 1) / 2 + n * (i % 977);
                if (b.getInt(i * 4) != want) {
                    throw new AssertionError(a + ": element " + i + " = " + b.getInt(i * 4) + ", expected " + want);
                }
            }
        }
        final long[] v = {c.rank() == n - 1 ? 99 : 0};
        c.broadcast(v, n - 1);
        if (v[0] != 99) {
            throw new AssertionError("broadcast gave " + v[0]);
        }
        final ByteBuffer send = ByteBuffer.allocateDirect(4 * n);
        final ByteBuffer recv = ByteBuffer.allocateDirect(4 * n);
        for (int j = 0; j < n; j++) {
            send.putInt(4 * j, c.rank() * 10 + j);
        }
        c.allToAll(send, recv);
        for (int j = 0; j < n; j++) {
            if (recv.getInt(4 * j) != j * 10 + c.rank()) {
                throw new AssertionError("allToAll from " + j + " gave " + recv.getInt(4 * j));
            }
        }
        c.barrier();
        System.out.println("OK rank " + c.rank() + " of " + n);
    }

    private static void victim(Communicator c) {
        c.barrier();
        System.out.println("READY");
        final float[] x = new float[1024];
        long failedAt = 0;
        try {
            while (true) {
                c.allReduce(x, ReduceOp.SUM);
            }
        } catch (RankLostException e) {
            failedAt = System.nanoTime();
            System.out.println("LOST rank=" + e.lostRank() + " at=" + failedAt / 1_000_000 + " msg=" + e.getMessage());
        }
        // Later operations fail too, immediately.
        try {
            c.barrier();
            System.out.println("UNEXPECTED barrier succeeded");
        } catch (RankLostException e) {
            System.out.println("LATER lost=" + e.lostRank());
        }
        System.exit(3);
    }
}
