package dev.poniard.scheduler.comm;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

import java.io.File;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.CompletableFuture;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/** The shared-memory all-reduce among ranks of one host: pieces, call order, choice, failures and clean-up. */
@Timeout(60)
class HostCollectivesTest {
    private static LocalCluster cluster(int n, long bufferBytes, int buffers) {
        return LocalCluster.launch(n, ctx -> ctx.alpha(5e-6).beta(2.5e-10).gamma(5e-10)
            .sharedMemoryBufferBytes(bufferBytes).sharedMemoryBuffers(buffers));
    }

    /** The smallest ring (no piece published ahead) and a ring that publishes several pieces ahead. */
    @ParameterizedTest(name = "{0} buffers")
    @ValueSource(ints = {2, 5})
    void shouldAllReduceVectorsManyTimesLargerThanTheStagingRing(int buffers) {
        try (LocalCluster cluster = cluster(3, 4096, buffers)) {
            for (int count : new int[]{1, 1023, 1024, 1025, 100_003}) {
                for (DataType t : new DataType[]{DataType.FLOAT32, DataType.FLOAT64, DataType.INT64}) {
                    for (ReduceOp op : ReduceOp.values()) {
                        cluster.run(c -> {
                            final ByteBuffer b = CollectivesTest.fill(t, c.rank(), count, op);
                            c.allReduce(b, t, op, Algorithm.SHARED_MEMORY);
                            CollectivesTest.check(b, t, count, 3, op, count + " " + t + " " + op + " rank " + c.rank());
                            return null;
                        });
                    }
                }
            }
        }
    }

    @Test
    void shouldCompleteNonBlockingAllReducesInTheOrderTheyWereCalled() {
        try (LocalCluster cluster = cluster(2, 4096, 3)) {
            cluster.run(c -> {
                final List<ByteBuffer> bufs = new ArrayList<>();
                final List<CompletableFuture<Void>> pending = new ArrayList<>();
                for (int k = 0; k < 12; k++) {
                    final int count = 500 + 3_000 * k;
                    final ByteBuffer b = ByteBuffer.allocateDirect(count * 4).order(ByteOrder.nativeOrder());
                    for (int i = 0; i < count; i++) {
                        b.putInt(i * 4, (c.rank() + 1) * (k * 100_000 + i));
                    }
                    bufs.add(b);
                    pending.add(c.iallReduce(b, DataType.INT32, ReduceOp.SUM));
                }
                CompletableFuture.allOf(pending.toArray(CompletableFuture[]::new)).join();
                for (int k = 0; k < bufs.size(); k++) {
                    final ByteBuffer b = bufs.get(k);
                    for (int i = 0; i < b.capacity() / 4; i++) {
                        assertEquals(3 * (k * 100_000 + i), b.getInt(i * 4), "buffer " + k + " element " + i);
                    }
                }
                return null;
            });
        }
    }

    @Test
    void shouldChooseSharedMemoryOnOneHostOnlyAndAboveTheThreshold() {
        try (LocalCluster cluster = LocalCluster.launch(2, ctx -> ctx.alpha(5e-6).beta(2.5e-10).gamma(5e-10)
            .sharedMemoryMinBytes(1024))) {
            cluster.run(c -> {
                assertEquals(Algorithm.SHARED_MEMORY, c.allReduceAlgorithm(1024));
                assertEquals(c.costModel().chooseAllReduce(2, 1020), c.allReduceAlgorithm(1020));
                return null;
            });
        }
        try (LocalCluster off = LocalCluster.launch(2, ctx -> ctx.alpha(5e-6).beta(2.5e-10).gamma(5e-10)
            .sharedMemoryMinBytes(-1))) {
            assertMessagePassingOnly(off, "off");
        }
        try (LocalCluster apart = LocalCluster.launchAsSeparateHosts(2, ctx -> ctx.alpha(5e-6).beta(2.5e-10)
            .gamma(5e-10))) {
            assertMessagePassingOnly(apart, "every rank on this host");
        }
    }

    /** AUTO takes the cost model's choice and SHARED_MEMORY is refused with a message containing {@code why}. */
    private static void assertMessagePassingOnly(LocalCluster cluster, String why) {
        cluster.run(c -> {
            assertEquals(c.costModel().chooseAllReduce(2, 1 << 26), c.allReduceAlgorithm(1 << 26));
            final IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> c.allReduce(
                ByteBuffer.allocateDirect(16), DataType.FLOAT32, ReduceOp.SUM, Algorithm.SHARED_MEMORY));
            assertTrue(e.getMessage().contains(why), e.getMessage());
            return null;
        });
    }

    @Test
    void shouldRefuseAStagingRingThatCannotWork() {
        final IllegalArgumentException one = assertThrows(IllegalArgumentException.class,
            () -> new Communicator.Context().rank(0).size(1).sharedMemoryBuffers(1).conclude());
        assertTrue(one.getMessage().contains("poniard.comm.shmBuffers"), one.getMessage());
        final IllegalArgumentException odd = assertThrows(IllegalArgumentException.class,
            () -> new Communicator.Context().rank(0).size(1).sharedMemoryBufferBytes(5000).conclude());
        assertTrue(odd.getMessage().contains("poniard.comm.shmBufferBytes"), odd.getMessage());
    }

    @Test
    void shouldTimeOutOnEveryRankWhenAPeerNeverJoins() {
        try (LocalCluster cluster = LocalCluster.launch(2, ctx -> ctx.alpha(5e-6).beta(2.5e-10).gamma(5e-10)
            .operationTimeoutMs(500))) {
            final CommTimeoutException e = assertThrows(CommTimeoutException.class,
                () -> cluster.comm(0).allReduce(ByteBuffer.allocateDirect(4000), DataType.FLOAT32, ReduceOp.SUM,
                    Algorithm.SHARED_MEMORY));
            assertTrue(e.getMessage().contains("rank 1"), e.getMessage());
            final CommException other = assertThrows(CommException.class, () -> cluster.comm(1).barrier());
            assertTrue(other.getMessage().contains("timed out"), other.getMessage());
        }
    }

    @Test
    void shouldRemoveEverySegmentFileWhenTheClusterCloses() {
        final String launchId;
        try (LocalCluster cluster = cluster(3, 4096, 3)) {
            launchId = cluster.comm(0).context().launchId();
            cluster.run(c -> {
                final Communicator sub = c.split(c.rank() == 2 ? 1 : 0, 0);
                final float[] v = {c.rank()};
                sub.allReduce(v, ReduceOp.SUM);
                assertEquals(c.rank() == 2 ? 2f : 1f, v[0]);
                return null;
            });
            assertTrue(segmentFiles(launchId).length >= 5, "3 world + 2 sub-communicator segments expected");
        }
        assertEquals(0, segmentFiles(launchId).length, "segment files left behind");
    }

    private static File[] segmentFiles(String launchId) {
        final File[] files = new File("/dev/shm").listFiles((d, name) -> name.startsWith("poniard-" + launchId + "-shm-"));
        return files == null ? new File[0] : files;
    }
}
