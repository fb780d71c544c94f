/**
 * Poniard's communication layer (MPI over Aeron): ranks, rendezvous, point-to-point, collectives and RMA.
 *
 * <ul>
 *   <li>{@link dev.poniard.scheduler.comm.Communicator} — {@code connect(Context)}, {@code send/recv},
 *       {@code barrier}, {@code broadcast}, {@code reduce}, {@code allReduce}, {@code reduceScatter},
 *       {@code allGather}, {@code gather}, {@code scatter}, {@code allToAll}, {@code allToAllV}, non-blocking
 *       {@code i*} variants and {@code split(color, key)}.</li>
 *   <li>{@link dev.poniard.scheduler.comm.Window} — one-sided put/get/accumulate with fence and passive-target
 *       locks over shared memory.</li>
 *   <li>{@link dev.poniard.scheduler.comm.LocalCluster} — N ranks in one JVM (tests, benchmarks).</li>
 *   <li>{@link dev.poniard.scheduler.comm.launch.Launcher} and
 *       {@link dev.poniard.scheduler.comm.launch.RankEnvironment} — running ranks on one machine, and rank
 *       discovery under Slurm, Open MPI and torchrun.</li>
 *   <li>{@link dev.poniard.scheduler.comm.frame.FrameHeader} / {@link dev.poniard.scheduler.comm.frame.FrameDecoder}
 *       — the wire format and its validating decoder.</li>
 * </ul>
 * Failures surface as {@link dev.poniard.scheduler.comm.CommException} subclasses: a lost rank
 * ({@link dev.poniard.scheduler.comm.RankLostException}), an abort ({@link dev.poniard.scheduler.comm.CommAbortedException}),
 * an operation timeout ({@link dev.poniard.scheduler.comm.CommTimeoutException}) or a refused rendezvous
 * ({@link dev.poniard.scheduler.comm.RendezvousException}).
 */
package dev.poniard.scheduler.comm;
