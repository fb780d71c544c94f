package dev.poniard.scheduler.comm;

import dev.poniard.scheduler.comm.frame.FrameHeader;
import org.agrona.BufferUtil;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

import java.nio.ByteBuffer;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.CompletableFuture;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

@Timeout(60)
class PointToPointTest {
    private static LocalCluster cluster;

    @BeforeAll
    static void start() {
        cluster = LocalCluster.launch(3);
    }

    @AfterAll
    static void stop() {
        cluster.close();
    }

    @Test
    void shouldSendAndReceiveMessagesOfManySizes() {
        cluster.run(c -> {
            for (int len : new int[]{0, 1, 8, 65_407, 65_408, 65_409, 1_000_003, 5 << 20}) {
                if (c.rank() == 0) {
                    final ByteBuffer b = ByteBuffer.allocateDirect(Math.max(1, len));
                    for (int i = 0; i < len; i++) {
                        b.put(i, (byte) (i * 13 + len));
                    }
                    b.limit(len);
                    c.send(b, 1, 5);
                } else if (c.rank() == 1) {
                    final ByteBuffer b = ByteBuffer.allocateDirect(len + 10);
                    assertEquals(len, c.recv(b, 0, 5));
                    for (int i = 0; i < len; i++) {
                        assertEquals((byte) (i * 13 + len), b.get(i), "byte " + i + " of " + len);
                    }
                }
            }
            return null;
        });
    }

    @Test
    void shouldMatchTagsOutOfOrderThroughTheUnexpectedQueue() {
        cluster.run(c -> {
            if (c.rank() == 0) {
                for (int tag = 0; tag < 10; tag++) {
                    c.send(new float[]{tag}, 2, tag);
                }
            } else if (c.rank() == 2) {
                for (int tag = 9; tag >= 0; tag--) {
                    final float[] got = new float[1];
                    assertEquals(1, c.recv(got, 0, tag));
                    assertEquals(tag, got[0]);
                }
            }
            c.barrier();
            return null;
        });
    }

    @Test
    void shouldReceiveLargeMessagesInAnotherOrderThanTheyWereSent() {
        // Large messages wait in the log for their receive (rendezvous); one hiding an awaited message behind
        // it must still be taken out of the way, or rank 2 would wait for tag 3 forever.
        final int big = 3 << 20;
        cluster.run(c -> {
            if (c.rank() == 0) {
                for (int tag : new int[]{1, 2, 3}) {
                    final ByteBuffer b = ByteBuffer.allocateDirect(tag == 2 ? 8 : big);
                    for (int i = 0; i < b.capacity(); i += 4096) {
                        b.put(i, (byte) (tag * 31 + i / 4096));
                    }
                    c.send(b, 2, tag);
                }
            } else if (c.rank() == 2) {
                for (int tag : new int[]{3, 2, 1}) {
                    final ByteBuffer b = ByteBuffer.allocateDirect(big);
                    assertEquals(tag == 2 ? 8 : big, c.recv(b, 0, tag));
                    for (int i = 0; i < (tag == 2 ? 8 : big); i += 4096) {
                        assertEquals((byte) (tag * 31 + i / 4096), b.get(i), "tag " + tag + " byte " + i);
                    }
                }
            }
            c.barrier();
            return null;
        });
    }

    @Test
    void shouldCompleteNonBlockingOperationsAndSendToSelf() {
        cluster.run(c -> {
            final int n = c.size();
            final List<CompletableFuture<?>> fs = new ArrayList<>();
            final ByteBuffer[] in = new ByteBuffer[n];
            final ByteBuffer out = ByteBuffer.allocateDirect(4);
            out.putInt(0, c.rank() * 100);
            for (int p = 0; p < n; p++) {
                in[p] = ByteBuffer.allocateDirect(4);
                fs.add(c.irecv(in[p], p, 77));
            }
            for (int p = 0; p < n; p++) {
                fs.add(c.isend(out.duplicate(), p, 77));
            }
            CompletableFuture.allOf(fs.toArray(new CompletableFuture[0])).join();
            for (int p = 0; p < n; p++) {
                assertEquals(p * 100, in[p].getInt(0));
            }
            return null;
        });
    }

    @Test
    void shouldWorkOnRawAddresses() {
        cluster.run(c -> {
            final ByteBuffer b = ByteBuffer.allocateDirect(1024);
            final long a = BufferUtil.address(b);
            if (c.rank() == 1) {
                b.put(100, (byte) 42);
                c.send(a + 100, 1, 2, 3);
            } else if (c.rank() == 2) {
                assertEquals(1, c.recv(a + 7, 1, 1, 3));
                assertEquals(42, b.get(7));
            }
            return null;
        });
    }

    @Test
    void shouldRejectMisuseWithClearMessages() {
        final Communicator c = cluster.comm(0);
        assertThrows(IllegalArgumentException.class, () -> c.send(ByteBuffer.allocate(4), 1, 0));
        assertThrows(IllegalArgumentException.class, () -> c.send(ByteBuffer.allocateDirect(4), 3, 0));
        assertThrows(IllegalArgumentException.class, () -> c.send(ByteBuffer.allocateDirect(4), 1, -1));
        final IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
            () -> c.allReduce(ByteBuffer.allocateDirect(6), DataType.FLOAT32, ReduceOp.SUM));
        assertTrue(e.getMessage().contains("6 bytes"), e.getMessage());
    }

    @Test
    void shouldFailAReceiveTooSmallForTheMessage() {
        cluster.run(c -> {
            if (c.rank() == 0) {
                c.send(new float[]{1, 2, 3}, 1, 9);
            } else if (c.rank() == 1) {
                final CommException e = assertThrows(CommException.class, () -> c.recv(new float[2], 0, 9));
                assertTrue(e.getMessage().contains("does not fit"), e.getMessage());
            }
            c.barrier();
            return null;
        });
    }

    @Test
    void shouldCarryFloatArrays() {
        cluster.run(c -> {
            if (c.rank() == 2) {
                c.send(new float[]{1.5f, -2f, Float.NaN}, 0, 1);
            } else if (c.rank() == 0) {
                final float[] got = new float[3];
                c.recv(got, 2, 1);
                assertArrayEquals(new float[]{1.5f, -2f, Float.NaN}, got);
            }
            return null;
        });
        assertEquals(48, FrameHeader.LENGTH);
    }
}
