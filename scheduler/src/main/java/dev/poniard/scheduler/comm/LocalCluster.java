package dev.poniard.scheduler.comm;

import io.aeron.driver.MediaDriver;
import io.aeron.driver.ThreadingMode;
import org.agrona.IoUtil;

import java.io.File;
import java.io.IOException;
import java.net.ServerSocket;
import java.security.SecureRandom;
import java.util.ArrayList;
import java.util.HexFormat;
import java.util.List;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;
import java.util.function.Consumer;
import java.util.function.Function;

/**
 * N ranks in one JVM over Aeron IPC with one shared embedded media driver: the fast harness for tests and
 * benchmarks. Each rank is a full {@link Communicator} (own progress thread, real rendezvous); {@link #run}
 * executes an SPMD body on one thread per rank. Closing removes the media driver directory.
 */
public final class LocalCluster implements AutoCloseable {
    private final MediaDriver driver;
    private final String dir;
    private final Communicator[] comms;
    private final ExecutorService threads;

    private LocalCluster(MediaDriver driver, String dir, Communicator[] comms, ExecutorService threads) {
        this.driver = driver;
        this.dir = dir;
        this.comms = comms;
        this.threads = threads;
    }

    /** Starts {@code n} ranks with default settings (cost model fixed, nothing measured). */
    public static LocalCluster launch(int n) {
        return launch(n, ctx -> ctx.alpha(5e-6).beta(2.5e-10).gamma(5e-10));
    }

    /** Starts {@code n} ranks; {@code customizer} adjusts each rank's context (it sees rank and size set). */
    public static LocalCluster launch(int n, Consumer<Communicator.Context> customizer) {
        return launch(n, customizer, false);
    }

    /**
     * Starts {@code n} ranks that each run their own media driver, so that they talk UDP over loopback and use
     * no shared memory between them: the multi-host code paths, on one machine.
     */
    public static LocalCluster launchAsSeparateHosts(int n, Consumer<Communicator.Context> customizer) {
        return launch(n, customizer, true);
    }

    private static LocalCluster launch(int n, Consumer<Communicator.Context> customizer, boolean separateHosts) {
        if (n < 1) {
            throw new IllegalArgumentException("n must be >= 1: " + n);
        }
        final byte[] id = new byte[6];
        final SecureRandom random = new SecureRandom();
        random.nextBytes(id);
        final String launchId = "local-" + HexFormat.of().formatHex(id);
        final File shm = new File("/dev/shm");
        final String dir = (shm.isDirectory() ? shm.getPath() : System.getProperty("java.io.tmpdir"))
            + File.separator + "poniard-" + launchId + "-aeron";
        final MediaDriver driver = separateHosts ? null : MediaDriver.launch(new MediaDriver.Context()
            .aeronDirectoryName(dir)
            .dirDeleteOnStart(true)
            .dirDeleteOnShutdown(true)
            .threadingMode(ThreadingMode.SHARED)
            .sharedIdleStrategy(new Communicator.DriverIdleStrategy(true))
            .termBufferSparseFile(true)
            .clientLivenessTimeoutNs(TimeUnit.SECONDS.toNanos(5)));
        final byte[] secret = new byte[32];
        random.nextBytes(secret);
        final int port;
        try (ServerSocket probe = new ServerSocket(0)) {
            port = probe.getLocalPort();
        } catch (IOException e) {
            if (driver != null) {
                driver.close();
            }
            throw new CommException("no free port for the rendezvous: " + e, e);
        }
        final ExecutorService threads = Executors.newFixedThreadPool(n, r -> {
            final Thread t = new Thread(r, "poniard-local-rank");
            t.setDaemon(true);
            return t;
        });
        final List<Future<Communicator>> futures = new ArrayList<>();
        for (int r = 0; r < n; r++) {
            final Communicator.Context ctx = new Communicator.Context().rank(r).size(n).localRank(r)
                .coordinatorHost("127.0.0.1").coordinatorPort(port).secret(secret).launchId(launchId)
                .aeronDirectoryName(separateHosts ? dir + "-host" + r : dir).launchDriver(separateHosts)
                .rendezvousTimeoutMs(30_000);
            customizer.accept(ctx);
            futures.add(threads.submit(() -> Communicator.connect(ctx)));
        }
        final Communicator[] comms = new Communicator[n];
        Throwable failure = null;
        for (int r = 0; r < n; r++) {
            try {
                comms[r] = futures.get(r).get(60, TimeUnit.SECONDS);
            } catch (ExecutionException e) {
                failure = failure == null ? e.getCause() : failure;
            } catch (InterruptedException | TimeoutException e) {
                failure = failure == null ? e : failure;
            }
        }
        final LocalCluster cluster = new LocalCluster(driver, dir, comms, threads);
        if (failure != null) {
            cluster.close();
            if (failure instanceof RuntimeException re) {
                throw re;
            }
            throw new CommException("local cluster failed to start: " + failure, failure);
        }
        return cluster;
    }

    /** Number of ranks. */
    public int size() {
        return comms.length;
    }

    /** Rank {@code r}'s communicator. */
    public Communicator comm(int r) {
        return comms[r];
    }

    /** The media driver directory (removed on close). */
    public String aeronDirectoryName() {
        return dir;
    }

    /** Runs {@code body} on every rank concurrently and returns the results in rank order. */
    public <T> List<T> run(Function<Communicator, T> body) {
        final List<Future<T>> futures = new ArrayList<>();
        for (Communicator c : comms) {
            futures.add(threads.submit(() -> body.apply(c)));
        }
        final List<T> results = new ArrayList<>();
        RuntimeException failure = null;
        for (Future<T> f : futures) {
            try {
                results.add(f.get());
            } catch (ExecutionException e) {
                results.add(null);
                if (failure == null) {
                    failure = e.getCause() instanceof RuntimeException re ? re
                        : new CommException("rank failed: " + e.getCause(), e.getCause());
                }
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
                throw new CommException("interrupted", e);
            }
        }
        if (failure != null) {
            throw failure;
        }
        return results;
    }

    @Override
    public void close() {
        for (Communicator c : comms) {
            if (c != null) {
                try {
                    c.close();
                } catch (RuntimeException ignored) {
                    // keep closing the others
                }
            }
        }
        threads.shutdownNow();
        if (driver != null) {
            driver.close();
        }
        IoUtil.delete(new File(dir), true);
        for (int r = 0; r < comms.length; r++) {
            IoUtil.delete(new File(dir + "-host" + r), true);
        }
    }
}
