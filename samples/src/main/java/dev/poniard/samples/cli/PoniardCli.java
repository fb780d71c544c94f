package dev.poniard.samples.cli;

import dev.poniard.bridge.NativeMemoryGuard;
import java.io.PrintStream;
import picocli.CommandLine;
import picocli.CommandLine.Command;

/** The {@code ./poniard} command line. */
@Command(name = "poniard", mixinStandardHelpOptions = true, versionProvider = PoniardCli.Version.class,
        description = "Dynamic task-DAG scheduling and multi-device training for Deeplearning4j.",
        subcommands = {TrainCommand.class, LaunchCommand.class, BenchCommand.class, SimulateCommand.class, LinalgCommand.class, DemoCommand.class, CommandLine.HelpCommand.class})
public final class PoniardCli implements Runnable {
    @CommandLine.Spec
    CommandLine.Model.CommandSpec spec;

    public static void main(String[] args) {
        System.setOut(new SameDiffNoiseFilter(System.out));
        String limit = System.getProperty("poniard.maxPhysicalBytes");
        if (limit == null) {
            System.exit(run(args));
        }
        int code;
        try (NativeMemoryGuard guard = NativeMemoryGuard.start(new NativeMemoryGuard.Context()
                .limitBytes(NativeMemoryGuard.parseBytes("poniard.maxPhysicalBytes", limit)))) {
            code = run(args);
        }
        System.exit(code);
    }

    /**
     * Standard output without SameDiff 1.0.0-M2.1's "Added differentiated op ..." lines, which it prints for every op of
     * every gradient function it builds: dozens per model, again for each replica, stage and timing copy. Every other
     * line passes unchanged.
     */
    static final class SameDiffNoiseFilter extends PrintStream {
        static final String PREFIX = "Added differentiated op ";

        SameDiffNoiseFilter(PrintStream out) {
            super(out, true);
        }

        @Override
        public void println(String x) {
            if (x == null || !x.startsWith(PREFIX)) {
                super.println(x);
            }
        }
    }

    /** Runs the command line and returns its exit code (tests call this instead of main). */
    public static int run(String... args) {
        CommandLine cl = new CommandLine(new PoniardCli());
        cl.setExecutionExceptionHandler((ex, commandLine, parseResult) -> {
            commandLine.getErr().println("poniard " + commandLine.getCommandName() + ": " + describe(ex));
            org.slf4j.LoggerFactory.getLogger(PoniardCli.class).debug("command failed", ex);
            return 1;
        });
        int code = cl.execute(args);
        // commands print through picocli's writers, which flush only on println
        cl.getOut().flush();
        cl.getErr().flush();
        return code;
    }

    private static String describe(Throwable ex) {
        StringBuilder b = new StringBuilder(String.valueOf(ex.getMessage() != null ? ex.getMessage() : ex.toString()));
        for (Throwable c = ex.getCause(); c != null && c != c.getCause(); c = c.getCause()) {
            b.append("\n  caused by: ").append(c);
        }
        return b.toString();
    }

    @Override
    public void run() {
        spec.commandLine().usage(spec.commandLine().getOut());
    }

    static final class Version implements CommandLine.IVersionProvider {
        @Override
        public String[] getVersion() {
            String v = PoniardCli.class.getPackage().getImplementationVersion();
            return new String[] {"poniard " + (v == null ? "development build" : v),
                    "Java " + System.getProperty("java.version") + " (" + System.getProperty("java.vm.name") + ")"};
        }
    }
}
