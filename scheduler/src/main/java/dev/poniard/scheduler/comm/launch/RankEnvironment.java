package dev.poniard.scheduler.comm.launch;

import java.util.Map;

/**
 * Where this process sits in a job, read from the environment the launcher left: Poniard's own launcher
 * ({@code PONIARD_RANK}, {@code PONIARD_SIZE}, {@code PONIARD_LOCAL_RANK}, {@code PONIARD_COORDINATOR},
 * {@code PONIARD_LAUNCH_ID}), Slurm ({@code SLURM_PROCID}, {@code SLURM_NTASKS}, {@code SLURM_LOCALID}),
 * Open MPI ({@code OMPI_COMM_WORLD_RANK}, {@code OMPI_COMM_WORLD_SIZE}, {@code OMPI_COMM_WORLD_LOCAL_RANK})
 * or torchrun ({@code RANK}, {@code WORLD_SIZE}, {@code LOCAL_RANK}, {@code MASTER_ADDR},
 * {@code MASTER_PORT}). The coordinator (rank 0's rendezvous address) comes from {@code PONIARD_COORDINATOR}
 * ({@code host:port}) or {@code MASTER_ADDR}/{@code MASTER_PORT}; without either it is 127.0.0.1:29500.
 *
 * @param source which launcher was recognised: poniard, slurm, openmpi, torchrun or none (a single rank)
 */
public record RankEnvironment(int rank, int size, int localRank, String coordinatorHost, int coordinatorPort,
                              String launchId, String source) {
    /** Default rendezvous port, as torchrun's. */
    public static final int DEFAULT_PORT = 29500;

    /** Reads the current process environment. */
    public static RankEnvironment detect() {
        return detect(System.getenv());
    }

    /** Reads the given environment (tests pass a map). */
    public static RankEnvironment detect(Map<String, String> env) {
        String host = "127.0.0.1";
        int port = DEFAULT_PORT;
        final String coordinator = env.get("PONIARD_COORDINATOR");
        if (coordinator != null && !coordinator.isBlank()) {
            final int colon = coordinator.lastIndexOf(':');
            if (colon <= 0) {
                throw new IllegalArgumentException("PONIARD_COORDINATOR must be host:port, got '" + coordinator + "'");
            }
            host = coordinator.substring(0, colon);
            port = parse(env, "PONIARD_COORDINATOR port", coordinator.substring(colon + 1));
        } else {
            if (env.get("MASTER_ADDR") != null) {
                host = env.get("MASTER_ADDR");
            }
            if (env.get("MASTER_PORT") != null) {
                port = parse(env, "MASTER_PORT", env.get("MASTER_PORT"));
            }
        }
        if (env.containsKey("PONIARD_RANK")) {
            return make(env, "PONIARD_RANK", "PONIARD_SIZE", "PONIARD_LOCAL_RANK", host, port,
                env.getOrDefault("PONIARD_LAUNCH_ID", "p" + port), "poniard");
        }
        if (env.containsKey("SLURM_PROCID") && env.containsKey("SLURM_NTASKS")) {
            return make(env, "SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID", host, port,
                "slurm" + env.getOrDefault("SLURM_JOB_ID", "0") + "." + env.getOrDefault("SLURM_STEP_ID", "0"),
                "slurm");
        }
        if (env.containsKey("OMPI_COMM_WORLD_RANK")) {
            return make(env, "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK", host,
                port, "ompi" + env.getOrDefault("OMPI_MCA_ess_base_jobid", "p" + port), "openmpi");
        }
        if (env.containsKey("RANK") && env.containsKey("WORLD_SIZE")) {
            return make(env, "RANK", "WORLD_SIZE", "LOCAL_RANK", host, port,
                "torch" + env.getOrDefault("TORCHELASTIC_RUN_ID", "p" + port), "torchrun");
        }
        return new RankEnvironment(0, 1, 0, host, port, "single" + ProcessHandle.current().pid(), "none");
    }

    private static RankEnvironment make(Map<String, String> env, String rankVar, String sizeVar, String localVar,
                                        String host, int port, String launchId, String source) {
        final int rank = parse(env, rankVar, env.get(rankVar));
        final String sizeText = env.get(sizeVar);
        if (sizeText == null) {
            throw new IllegalArgumentException(rankVar + " is set but " + sizeVar + " is not");
        }
        final int size = parse(env, sizeVar, sizeText);
        if (size < 1 || rank < 0 || rank >= size) {
            throw new IllegalArgumentException(rankVar + "=" + rank + " is not in [0, " + sizeVar + "=" + size + ")");
        }
        final String local = env.get(localVar);
        final int localRank = local == null ? rank : parse(env, localVar, local);
        return new RankEnvironment(rank, size, localRank, host, port, sanitize(launchId), source);
    }

    private static int parse(Map<String, String> env, String name, String value) {
        try {
            return Integer.parseInt(value.trim());
        } catch (NumberFormatException e) {
            throw new IllegalArgumentException(name + " must be an integer, got '" + value + "'", e);
        }
    }

    private static String sanitize(String id) {
        return id.replaceAll("[^A-Za-z0-9._-]", "_");
    }
}
