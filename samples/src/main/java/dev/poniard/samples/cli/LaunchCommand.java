package dev.poniard.samples.cli;

import dev.poniard.scheduler.comm.launch.Launcher;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;
import picocli.CommandLine.Parameters;

import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.Callable;

/**
 * {@code poniard launch -n N [--] <sub-command ...>}: runs N ranks of a poniard sub-command as processes of this
 * machine, each re-running the poniard CLI main class with this JVM's class path and JVM flags. Output lines are
 * prefixed {@code [rank k]}; any rank's failure stops all; nothing is left behind (processes, /dev/shm).
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
            .command(Launcher.javaCommand(CLI_MAIN_CLASS, command))
            .output(line -> {
                synchronized (System.out) {
                    System.out.println(line);
                }
            });
        try (Launcher launcher = Launcher.launch(ctx)) {
            return launcher.waitFor();
        }
    }
}
