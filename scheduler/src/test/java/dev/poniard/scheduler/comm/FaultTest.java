package dev.poniard.scheduler.comm;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

import java.nio.ByteBuffer;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.CompletionException;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertInstanceOf;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/** Lost ranks, aborts and timeouts in one JVM; {@code MultiProcessTest} kills real processes. */
@Timeout(60)
class FaultTest {

    private static LocalCluster fastFailing(int n, long operationTimeoutMs) {
        return LocalCluster.launch(n, ctx -> ctx.alpha(5e-6).beta(2.5e-10).gamma(5e-10)
            .heartbeatIntervalMs(100).failureTimeoutMs(1000).operationTimeoutMs(operationTimeoutMs));
    }

    @Test
    void shouldFailPendingAndLaterOperationsNamingTheLostRank() {
        try (LocalCluster cluster = fastFailing(3, 60_000)) {
            // Rank 1 posts a receive from rank 2, rank 0 starts an all-reduce; then rank 2 dies.
            final CompletableFuture<Long> pendingRecv = cluster.comm(1).irecv(ByteBuffer.allocateDirect(8), 2, 0);
            final CompletableFuture<Void> pendingReduce =
                cluster.comm(0).iallReduce(ByteBuffer.allocateDirect(64), DataType.FLOAT32, ReduceOp.SUM);
            final long t0 = System.nanoTime();
            cluster.comm(2).transport().crashForTesting();
            final CompletionException e1 = assertThrows(CompletionException.class, pendingRecv::join);
            final CompletionException e0 = assertThrows(CompletionException.class, pendingReduce::join);
            final long ms = (System.nanoTime() - t0) / 1_000_000;
            assertTrue(ms < 5000, "failure took " + ms + " ms");
            for (CompletionException e : new CompletionException[]{e0, e1}) {
                final RankLostException lost = assertInstanceOf(RankLostException.class, e.getCause());
                assertEquals(2, lost.lostRank());
                assertTrue(lost.getMessage().contains("rank 2"), lost.getMessage());
            }
            final RankLostException later = assertThrows(RankLostException.class, () -> cluster.comm(0).barrier());
            assertEquals(2, later.lostRank());
        }
    }

    @Test
    void shouldPropagateAnAbortToEveryRank() {
        try (LocalCluster cluster = fastFailing(3, 60_000)) {
            final CompletableFuture<Void> b1 = cluster.comm(1).ibarrier();
            final CompletableFuture<Void> b2 = cluster.comm(2).ibarrier();
            cluster.comm(0).abort("user asked to stop");
            for (CompletableFuture<Void> f : java.util.List.of(b1, b2)) {
                final CompletionException e = assertThrows(CompletionException.class, f::join);
                final CommAbortedException a = assertInstanceOf(CommAbortedException.class, e.getCause());
                assertEquals(0, a.originRank());
                assertTrue(a.getMessage().contains("user asked to stop"), a.getMessage());
            }
            assertThrows(CommAbortedException.class, () -> cluster.comm(0).barrier());
        }
    }

    @Test
    void shouldTimeOutAnOperationThatNeverCompletesOnEveryRank() {
        try (LocalCluster cluster = fastFailing(2, 500)) {
            final CommTimeoutException e = assertThrows(CommTimeoutException.class,
                () -> cluster.comm(0).recv(ByteBuffer.allocateDirect(8), 1, 123));
            assertTrue(e.getMessage().contains("timed out"), e.getMessage());
            // The other rank hears about it.
            final CommException other = assertThrows(CommException.class, () -> cluster.comm(1).barrier());
            assertTrue(other.getMessage().contains("timed out"), other.getMessage());
        }
    }

    @Test
    void shouldDropHostileFramesOnTheLiveStreamWithoutHarm() {
        final long seed = System.nanoTime();
        System.out.println("shouldDropHostileFramesOnTheLiveStreamWithoutHarm seed=" + seed);
        final java.util.Random random = new java.util.Random(seed);
        try (LocalCluster cluster = fastFailing(2, 60_000);
             io.aeron.Aeron attacker = io.aeron.Aeron.connect(new io.aeron.Aeron.Context()
                 .aeronDirectoryName(cluster.aeronDirectoryName()))) {
            final Communicator victim = cluster.comm(0);
            final io.aeron.ExclusivePublication pub =
                attacker.addExclusivePublication("aeron:ipc", victim.ipcStreamId());
            while (!pub.isConnected()) {
                Thread.onSpinWait();
            }
            final org.agrona.concurrent.UnsafeBuffer b =
                new org.agrona.concurrent.UnsafeBuffer(ByteBuffer.allocateDirect(4096));
            int sent = 0;
            for (int i = 0; i < 2000; i++) {
                final int len;
                if (i % 2 == 0) {
                    len = random.nextInt(200);
                    for (int j = 0; j < len; j++) {
                        b.putByte(j, (byte) random.nextInt());
                    }
                } else {
                    // A valid-looking frame that claims to come from rank 1 (spoofed session) or mutated.
                    len = dev.poniard.scheduler.comm.frame.FrameHeader.LENGTH + 64;
                    dev.poniard.scheduler.comm.frame.FrameHeader.write(b, 0,
                        dev.poniard.scheduler.comm.frame.FrameHeader.TYPE_P2P, 0, 0, 1, 1, 0, 0, 0, 64, 64, 64);
                    if (random.nextBoolean()) {
                        b.putByte(random.nextInt(dev.poniard.scheduler.comm.frame.FrameHeader.LENGTH),
                            (byte) random.nextInt());
                    }
                }
                while (pub.offer(b, 0, len) < 0) {
                    Thread.onSpinWait();
                }
                sent++;
            }
            final long deadline = System.nanoTime() + 10_000_000_000L;
            while (victim.malformedFrames() < 1000 && System.nanoTime() < deadline) {
                Thread.onSpinWait();
            }
            assertTrue(victim.malformedFrames() >= 1000, "dropped " + victim.malformedFrames() + " of " + sent);
            // The job is unharmed.
            cluster.run(c -> {
                final int[] x = {c.rank() + 1};
                c.allReduce(x, ReduceOp.SUM);
                assertEquals(3, x[0]);
                return null;
            });
            assertEquals(null, victim.failure());
        }
    }
}
