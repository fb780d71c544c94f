package dev.poniard.samples.cli;

import dev.poniard.scheduler.Trace;
import java.io.IOException;
import java.io.PrintWriter;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;

/** Where the ranks of a job write their traces, and how launchers merge them into one timeline. */
final class TraceFiles {
    private TraceFiles() {
    }

    /** Rank {@code rank}'s trace for a job asked to trace into {@code file}: {@code name-rankK.ext}. */
    static Path perRank(Path file, int rank) {
        String name = file.getFileName().toString();
        int dot = name.lastIndexOf('.');
        String base = dot > 0 ? name.substring(0, dot) : name;
        String ext = dot > 0 ? name.substring(dot) : ".json";
        return file.resolveSibling(base + "-rank" + rank + ext);
    }

    /**
     * Merges the {@code ranks} per-rank traces of {@code file} into {@code file} itself (one process per rank, aligned
     * by wall clock) when every rank wrote one; says so on {@code out}, or why not.
     */
    static void mergeRanks(Path file, int ranks, PrintWriter out) {
        List<Path> parts = new ArrayList<>();
        for (int r = 0; r < ranks; r++) {
            Path p = perRank(file, r);
            if (!Files.isRegularFile(p)) {
                return; // this job wrote no per-rank trace (or not under these names)
            }
            parts.add(p);
        }
        try {
            Trace.mergeChromeJson(parts, file);
            out.println("timeline of all " + ranks + " ranks written to " + file + " (open it in https://ui.perfetto.dev)");
        } catch (IOException | RuntimeException e) {
            out.println("could not merge the ranks' traces into " + file + ": " + e.getMessage()
                    + "; each rank's own trace is in " + parts.get(0).getFileName() + " and the like");
        }
        out.flush();
    }

    /** The value of {@code --trace FILE} or {@code --trace=FILE} among a sub-command's arguments, or null. */
    static Path traceArgument(List<String> args) {
        for (int i = 0; i < args.size(); i++) {
            String a = args.get(i);
            if (a.equals("--trace") && i + 1 < args.size()) {
                return Path.of(args.get(i + 1));
            }
            if (a.startsWith("--trace=")) {
                return Path.of(a.substring("--trace=".length()));
            }
        }
        return null;
    }
}
