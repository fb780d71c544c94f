package dev.poniard.scheduler.comm.launch;

import org.agrona.IoUtil;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import java.io.BufferedReader;
import java.io.File;
import java.io.IOException;
import java.io.InputStreamReader;
import java.lang.management.ManagementFactory;
import java.net.ServerSocket;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.security.SecureRandom;
import java.util.ArrayList;
import java.util.HexFormat;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.function.Consumer;

/**
 * Runs N ranks of one SPMD program as child processes of this machine ({@code ./poniard launch -n N}).
 *
 * <h2>Implementation overview</h2>
 * Each child gets {@code PONIARD_RANK}, {@code PONIARD_SIZE}, {@code PONIARD_LOCAL_RANK},
 * {@code PONIARD_COORDINATOR} (127.0.0.1 and a free port), a freshly generated {@code PONIARD_SECRET}, the
 * {@code PONIARD_LAUNCH_ID} that names its Aeron directory ({@code /dev/shm/poniard-<launch id>-*}) and
 * {@code PONIARD_LAUNCHER_PID} (a rank whose launcher disappears exits). One thread per child copies its merged
 * stdout/stderr to the output sink as {@code [rank k] line}. When any child exits with a non-zero status the
 * others are stopped (SIGTERM, then SIGKILL after the grace period) unless {@code stopOnFailure(false)}.
 * Closing, and a JVM shutdown hook, stop every child and its descendants and remove every
 * {@code /dev/shm/poniard-<launch id>-*} directory, so nothing is left behind even when a rank was killed
 * with SIGKILL and could not clean up itself.
 */
public final class Launcher implements AutoCloseable {
    private static final Logger LOG = LoggerFactory.getLogger(Launcher.class);

    private final Context ctx;
    private final List<Process> processes = new ArrayList<>();
    private final List<Thread> pumps = new ArrayList<>();
    private final CompletableFuture<Integer> result = new CompletableFuture<>();
    private final AtomicInteger running;
    private final Thread shutdownHook;
    private volatile int firstFailure;
    private volatile boolean closed;

    private Launcher(Context ctx) {
        this.ctx = ctx;
        this.running = new AtomicInteger(ctx.ranks());
        this.shutdownHook = new Thread(this::cleanUp, "poniard-launcher-cleanup");
    }

    /** Starts the ranks. */
    public static Launcher launch(Context ctx) {
        ctx.conclude();
        final Launcher l = new Launcher(ctx);
        Runtime.getRuntime().addShutdownHook(l.shutdownHook);
        try {
            l.start();
        } catch (IOException | RuntimeException e) {
            l.close();
            throw new IllegalStateException("could not start rank processes: " + e, e);
        }
        return l;
    }

    private void start() throws IOException {
        for (int r = 0; r < ctx.ranks(); r++) {
            final ProcessBuilder pb = new ProcessBuilder(ctx.command()).redirectErrorStream(true);
            final Map<String, String> env = pb.environment();
            env.putAll(ctx.environment());
            env.put("PONIARD_RANK", Integer.toString(r));
            env.put("PONIARD_SIZE", Integer.toString(ctx.ranks()));
            env.put("PONIARD_LOCAL_RANK", Integer.toString(r));
            env.put("PONIARD_LOCAL_SIZE", Integer.toString(ctx.ranks()));
            env.put("PONIARD_COORDINATOR", ctx.coordinatorHost() + ":" + ctx.coordinatorPort());
            env.put("PONIARD_SECRET", ctx.secret());
            env.put("PONIARD_LAUNCH_ID", ctx.launchId());
            env.put("PONIARD_LAUNCHER_PID", Long.toString(ProcessHandle.current().pid()));
            final Process p = pb.start();
            processes.add(p);
            final int rank = r;
            final Thread pump = new Thread(() -> pump(rank, p), "poniard-launcher-out-r" + r);
            pump.setDaemon(true);
            pump.start();
            pumps.add(pump);
            p.onExit().thenAccept(ph -> onExit(rank, ph.exitValue()));
        }
    }

    private void pump(int rank, Process p) {
        try (BufferedReader in = new BufferedReader(new InputStreamReader(p.getInputStream(), StandardCharsets.UTF_8))) {
            String line;
            while ((line = in.readLine()) != null) {
                ctx.output().accept("[rank " + rank + "] " + line);
            }
        } catch (IOException e) {
            LOG.debug("rank {} output closed: {}", rank, e.toString());
        }
    }

    private void onExit(int rank, int code) {
        if (code != 0) {
            synchronized (this) {
                if (firstFailure == 0) {
                    firstFailure = code;
                }
            }
            if (ctx.stopOnFailure() && !closed) {
                ctx.output().accept("[launcher] rank " + rank + " exited with status " + code + "; stopping the others");
                stopAll();
            }
        }
        if (running.decrementAndGet() == 0) {
            for (Thread t : pumps) {
                try {
                    t.join(2000);
                } catch (InterruptedException e) {
                    Thread.currentThread().interrupt();
                }
            }
            removeAeronDirectories();
            result.complete(firstFailure);
        }
    }

    /** The launch id that names this job's /dev/shm directories. */
    public String launchId() {
        return ctx.launchId();
    }

    /** The child processes, in rank order. */
    public List<Process> processes() {
        return List.copyOf(processes);
    }

    /** Waits for every rank; returns 0 when all succeeded, else the first non-zero exit status. */
    public int waitFor() {
        return result.join();
    }

    /** Waits at most {@code timeout}; returns the status or -1 if ranks are still running. */
    public int waitFor(long timeout, TimeUnit unit) {
        try {
            return result.get(timeout, unit);
        } catch (java.util.concurrent.TimeoutException e) {
            return -1;
        } catch (Exception e) {
            throw new IllegalStateException(e);
        }
    }

    /** Stops every rank: SIGTERM, then SIGKILL after the grace period. */
    public void stopAll() {
        for (Process p : processes) {
            p.descendants().forEach(ProcessHandle::destroy);
            p.destroy();
        }
        final long deadline = System.nanoTime() + ctx.gracePeriodMs() * 1_000_000L;
        for (Process p : processes) {
            try {
                final long left = deadline - System.nanoTime();
                if (left <= 0 || !p.waitFor(left, TimeUnit.NANOSECONDS)) {
                    p.descendants().forEach(ProcessHandle::destroyForcibly);
                    p.destroyForcibly();
                }
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
                p.destroyForcibly();
            }
        }
    }

    private void cleanUp() {
        for (Process p : processes) {
            if (p.isAlive()) {
                stopAll();
                break;
            }
        }
        for (Process p : processes) {
            try {
                p.waitFor(5, TimeUnit.SECONDS);
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
            }
        }
        removeAeronDirectories();
    }

    /** Removes /dev/shm/poniard-(launch id)-* (and the same under java.io.tmpdir). */
    public void removeAeronDirectories() {
        removeDirectories(ctx.launchId());
    }

    /** Removes the Aeron directories of {@code launchId}; returns how many were removed. */
    public static int removeDirectories(String launchId) {
        int n = 0;
        for (String base : new String[]{"/dev/shm", System.getProperty("java.io.tmpdir")}) {
            final File[] dirs = new File(base).listFiles((d, name) -> name.startsWith("poniard-" + launchId + "-"));
            if (dirs != null) {
                for (File d : dirs) {
                    IoUtil.delete(d, true);
                    n++;
                }
            }
        }
        return n;
    }

    /**
     * Removes Aeron directories {@code poniard-*-aeron} under /dev/shm whose media driver is dead (no heartbeat
     * for {@code staleMs}) and that have not been touched for as long: what ranks killed outside this launcher
     * (Slurm, mpirun) leave behind. Returns how many were removed.
     */
    public static int sweepStaleDirectories(long staleMs) {
        final File[] dirs = new File("/dev/shm").listFiles((d, name) -> name.startsWith("poniard-")
            && name.endsWith("-aeron"));
        int n = 0;
        if (dirs == null) {
            return 0;
        }
        final long now = System.currentTimeMillis();
        for (File d : dirs) {
            if (now - d.lastModified() < staleMs) {
                continue;
            }
            final File cnc = new File(d, io.aeron.CncFileDescriptor.CNC_FILE);
            boolean active;
            try {
                active = cnc.exists() && io.aeron.CommonContext.isDriverActive(d, staleMs, msg -> { });
            } catch (RuntimeException e) {
                active = false;
            }
            if (!active) {
                LOG.info("removing stale Aeron directory {}", d);
                IoUtil.delete(d, true);
                n++;
            }
        }
        return n;
    }

    @Override
    public void close() {
        closed = true;
        cleanUp();
        try {
            Runtime.getRuntime().removeShutdownHook(shutdownHook);
        } catch (IllegalStateException ignored) {
            // shutting down already
        }
    }

    /**
     * The command line that runs {@code mainClass} in a new JVM with this JVM's class path and JVM flags
     * (module exports/opens, -X and -D options).
     */
    public static List<String> javaCommand(String mainClass, List<String> args) {
        final List<String> cmd = new ArrayList<>();
        final Path java = Paths.get(System.getProperty("java.home"), "bin", "java");
        cmd.add(java.toString());
        for (String a : ManagementFactory.getRuntimeMXBean().getInputArguments()) {
            if (a.startsWith("--add-") || a.startsWith("-X") || a.startsWith("-D") || a.startsWith("-ea")) {
                if (!a.startsWith("-Xdebug") && !a.startsWith("-Xrunjdwp")) {
                    cmd.add(a);
                }
            }
        }
        cmd.add("-cp");
        cmd.add(System.getProperty("java.class.path"));
        cmd.add(mainClass);
        cmd.addAll(args);
        return cmd;
    }

    /** Settings of a launch. */
    public static final class Context {
        private int ranks = Integer.getInteger("poniard.launch.ranks", 2);
        private List<String> command;
        private Map<String, String> environment = new LinkedHashMap<>();
        private Consumer<String> output = line -> LOG.info("{}", line);
        private boolean stopOnFailure = true;
        private long gracePeriodMs = Long.getLong("poniard.launch.gracePeriodMs", 3000);
        private String coordinatorHost = "127.0.0.1";
        private int coordinatorPort;
        private String launchId;
        private String secret;

        /** Fills generated fields and validates. */
        public Context conclude() {
            if (ranks < 1 || ranks > 1024) {
                throw new IllegalArgumentException("ranks must be in [1, 1024]: " + ranks);
            }
            if (command == null || command.isEmpty()) {
                throw new IllegalArgumentException("command must not be empty: " + command);
            }
            if (gracePeriodMs < 0) {
                throw new IllegalArgumentException("gracePeriodMs must be >= 0: " + gracePeriodMs);
            }
            final SecureRandom random = new SecureRandom();
            if (launchId == null) {
                final byte[] id = new byte[6];
                random.nextBytes(id);
                launchId = "l" + HexFormat.of().formatHex(id);
            }
            if (!launchId.matches("[A-Za-z0-9._-]+")) {
                throw new IllegalArgumentException("launchId may hold only letters, digits, '.', '_', '-': " + launchId);
            }
            if (secret == null) {
                final byte[] s = new byte[32];
                random.nextBytes(s);
                secret = HexFormat.of().formatHex(s);
            }
            if (coordinatorPort == 0) {
                try (ServerSocket probe = new ServerSocket(0)) {
                    coordinatorPort = probe.getLocalPort();
                } catch (IOException e) {
                    throw new IllegalStateException("no free port for the rendezvous: " + e, e);
                }
            }
            if (coordinatorPort < 0 || coordinatorPort > 65535) {
                throw new IllegalArgumentException("coordinatorPort must be in [0, 65535]: " + coordinatorPort);
            }
            return this;
        }

        public int ranks() {
            return ranks;
        }

        public Context ranks(int ranks) {
            this.ranks = ranks;
            return this;
        }

        public List<String> command() {
            return command;
        }

        /** The full command line every rank runs (see {@link Launcher#javaCommand}). */
        public Context command(List<String> command) {
            this.command = List.copyOf(command);
            return this;
        }

        public Map<String, String> environment() {
            return environment;
        }

        /** Extra environment for every rank. */
        public Context environment(Map<String, String> env) {
            this.environment = new LinkedHashMap<>(env);
            return this;
        }

        public Consumer<String> output() {
            return output;
        }

        /** Receives every output line prefixed {@code [rank k]} (default: logged at INFO). */
        public Context output(Consumer<String> output) {
            this.output = output;
            return this;
        }

        public boolean stopOnFailure() {
            return stopOnFailure;
        }

        /** Whether a failing rank stops the others (default true). */
        public Context stopOnFailure(boolean stop) {
            this.stopOnFailure = stop;
            return this;
        }

        public long gracePeriodMs() {
            return gracePeriodMs;
        }

        public Context gracePeriodMs(long ms) {
            this.gracePeriodMs = ms;
            return this;
        }

        public String coordinatorHost() {
            return coordinatorHost;
        }

        public int coordinatorPort() {
            return coordinatorPort;
        }

        /** The rendezvous port (default: a free port). */
        public Context coordinatorPort(int port) {
            this.coordinatorPort = port;
            return this;
        }

        public String launchId() {
            return launchId;
        }

        public Context launchId(String id) {
            this.launchId = id;
            return this;
        }

        public String secret() {
            return secret;
        }

        /** The shared secret handed to the ranks (default: 32 random bytes, hex). */
        public Context secret(String secret) {
            this.secret = secret;
            return this;
        }
    }
}
