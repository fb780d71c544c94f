package dev.poniard.scheduler.comm;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

import java.io.File;
import java.net.ServerSocket;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.security.SecureRandom;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.CompletableFuture;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

/** Ranks with separate media drivers talk UDP (loopback), exactly as ranks on different hosts do. */
@Timeout(60)
class UdpTransportTest {

    @Test
    void shouldRunCollectivesOverUdpBetweenSeparateDrivers() throws Exception {
        final int n = 3;
        final byte[] secret = new byte[16];
        new SecureRandom().nextBytes(secret);
        final int port;
        try (ServerSocket probe = new ServerSocket(0)) {
            port = probe.getLocalPort();
        }
        final String id = "udptest" + System.nanoTime();
        final List<CompletableFuture<Communicator>> fs = new ArrayList<>();
        for (int r = 0; r < n; r++) {
            final Communicator.Context ctx = new Communicator.Context().rank(r).size(n).localRank(0)
                .coordinatorHost("127.0.0.1").coordinatorPort(port).secret(secret).launchId(id + "-" + r)
                .launchDriver(true).alpha(2e-5).beta(1e-9).gamma(5e-10);
            fs.add(CompletableFuture.supplyAsync(() -> Communicator.connect(ctx)));
        }
        final List<Communicator> comms = new ArrayList<>();
        try {
            for (CompletableFuture<Communicator> f : fs) {
                comms.add(f.join());
            }
            assertFalse(comms.get(0).allOnThisHost(), "separate drivers must look like separate hosts");
            final List<CompletableFuture<Void>> runs = new ArrayList<>();
            for (Communicator c : comms) {
                runs.add(CompletableFuture.runAsync(() -> {
                    final int count = 200_003;
                    final ByteBuffer b = ByteBuffer.allocateDirect(count * 8).order(ByteOrder.nativeOrder());
                    for (int i = 0; i < count; i++) {
                        b.putLong(i * 8, (long) c.rank() * i);
                    }
                    c.allReduce(b, DataType.INT64, ReduceOp.SUM, Algorithm.RING);
                    for (int i = 0; i < count; i++) {
                        assertEquals(3L * i, b.getLong(i * 8));
                    }
                    final long[] x = {c.rank() == 2 ? 5 : 0};
                    c.broadcast(x, 2);
                    assertEquals(5, x[0]);
                    c.barrier();
                }));
            }
            CompletableFuture.allOf(runs.toArray(new CompletableFuture[0])).join();
        } finally {
            for (Communicator c : comms) {
                c.close();
            }
        }
        final File[] left = new File("/dev/shm").listFiles((d, name) -> name.startsWith("poniard-" + id));
        assertTrue(left == null || left.length == 0, "driver directories left behind");
    }
}
