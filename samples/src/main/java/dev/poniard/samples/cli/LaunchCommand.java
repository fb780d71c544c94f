package dev.poniard.samples.cli;

import dev.poniard.scheduler.comm.launch.Launcher;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;
import picocli.CommandLine.Parameters;

import java.io.PrintWriter;
import java.lang.management.ManagementFactory;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;
import java.util.concurrent.Callable;

/**
 * {@code poniard launch -n N [--] <sub-command ...>}: runs N ranks of a poniard sub-command as processes of this
 * machine, each re-running the poniard CLI main class with this JVM's class path and JVM flags. Output lines are
 * prefixed {@code [rank k]}; any rank's failure stops all; nothing is left behind (processes, /dev/shm).
 * <p>
 * JIT: training ranks on a host with at least as many ranks as cores run C1 only ({@link Jit#AUTO}). DL4J's heavy
 * lifting is native; what C2 buys the Java orchestration around it is less than what its compiler threads take
 * from workers that already have every core: on 2 cores, {@code bench trainer}'s 2-rank case reached 0.75-1.16 of
 * one process with C1-only ranks against 0.57-0.65 with tiered ones. Other sub-commands keep tiered compilation:
 * C1 slows Java loops such as the communicator's reductions several times.
 */
@Command(name = "launch", mixinStandardHelpOptions = true,
    description = "Run N ranks of a poniard sub-command on this machine (Aeron IPC between them).")
public final class LaunchCommand implements Callable<Integer> {
    /** The CLI main class every rank runs. */
    public static final String CLI_MAIN_CLASS = "dev.poniard.samples.cli.PoniardCli";

    @Option(names = {"-n", "--ranks"}, defaultValue = "2", description = "number of ranks (default: ${DEFAULT-VALUE})")
    int ranks;

    @Option(names = "--grace-ms", defaultValue = "3000",
        description = "how long ranks get to stop after SIGTERM before SIGKILL (default: ${DEFAULT-VALUE})")
    long graceMs;

    @Option(names = "--keep-going", description = "do not stop the other ranks when one fails")
    boolean keepGoing;

    @Option(names = "--jit", defaultValue = "${sys:poniard.launch.jit:-AUTO}",
        description = "JIT of the rank JVMs: AUTO (C1 only for train with as many ranks as cores), TIERED or C1 "
            + "(default: ${DEFAULT-VALUE})")
    Jit jit;

    @Parameters(arity = "1..*", paramLabel = "SUB-COMMAND", description = "the poniard sub-command and its arguments")
    List<String> command = new ArrayList<>();

    @Override
    public Integer call() {
        if (ranks < 1) {
            System.err.println("launch: -n must be >= 1, got " + ranks);
            return 2;
        }
        final Launcher.Context ctx = new Launcher.Context()
            .ranks(ranks)
            .gracePeriodMs(graceMs)
            .stopOnFailure(!keepGoing)
            .command(rankCommand(ranks, command, jit))
            .output(line -> {
                synchronized (System.out) {
                    System.out.println(line);
                }
            });
        int code;
        try (Launcher launcher = Launcher.launch(ctx)) {
            code = launcher.waitFor();
        }
        Path trace = TraceFiles.traceArgument(command);
        if (code == 0 && trace != null) {
            TraceFiles.mergeRanks(trace.toAbsolutePath(), ranks, new PrintWriter(System.out, true));
        }
        return code;
    }

    /** How the rank JVMs compile. */
    public enum Jit {
        /** C1 only for {@code train} when the ranks are at least the cores, else as TIERED. */
        AUTO,
        /** The JVM's default tiered compilation (C1, then C2 for hot code). */
        TIERED,
        /** C1 only ({@code -XX:TieredStopAtLevel=1}). */
        C1;

        /** {@code poniard.launch.jit}, AUTO when unset. */
        public static Jit fromProperty() {
            return valueOf(System.getProperty("poniard.launch.jit", "AUTO").toUpperCase(Locale.ROOT));
        }
    }

    /**
     * The command each of {@code ranks} ranks runs for {@code subCommand}: the CLI main class in a JVM with this
     * JVM's flags, plus C1 only where {@code jit} asks for it. JIT flags given explicitly (PONIARD_JAVA_OPTS) win.
     */
    public static List<String> rankCommand(int ranks, List<String> subCommand, Jit jit) {
        final List<String> cmd = new ArrayList<>(Launcher.javaCommand(CLI_MAIN_CLASS, subCommand));
        final boolean explicit = ManagementFactory.getRuntimeMXBean().getInputArguments().stream()
            .anyMatch(a -> a.contains("TieredStopAtLevel") || a.contains("TieredCompilation"));
        final boolean c1 = switch (jit) {
            case C1 -> true;
            case TIERED -> false;
            case AUTO -> !subCommand.isEmpty() && subCommand.get(0).equals("train")
                && ranks >= Runtime.getRuntime().availableProcessors();
        };
        if (c1 && !explicit) {
            cmd.add(1, "-XX:TieredStopAtLevel=1");
        }
        return cmd;
    }
}
