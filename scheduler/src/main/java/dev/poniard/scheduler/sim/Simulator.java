package dev.poniard.scheduler.sim;

import dev.poniard.scheduler.PlacementPolicy;
import dev.poniard.scheduler.Processor;
import dev.poniard.scheduler.ReadyQueue;
import dev.poniard.scheduler.TaskState;
import dev.poniard.scheduler.Trace;
import dev.poniard.scheduler.comm.Algorithm;
import dev.poniard.scheduler.comm.CostModel;
import java.util.ArrayDeque;
import java.util.ArrayList;
import java.util.List;
import java.util.Objects;
import java.util.PriorityQueue;
import java.util.Random;

/**
 * Runs a {@link SimDag} on a {@link VirtualCluster} in virtual time, with the real scheduler's queues
 * ({@link ReadyQueue}: priorities, critical-path ranks, stealing rules) and placement policies
 * ({@link PlacementPolicy}: EFT, work stealing, FIFO) — shared code, so what the simulator predicts at 1024
 * devices is what the scheduler would decide.
 *
 * <p><b>Implementation overview.</b> A discrete-event simulation over a priority queue of completions
 * ordered by (virtual time, sequence), so equal times resolve deterministically. When a task's last input
 * completes it is placed by the policy, whose view prices each device as queued work plus the remainder of
 * the running task plus the task's estimate plus the α-β time to bring its inputs there (the same formula
 * as the real scheduler's, with transfers). A placed task's remote inputs start moving at once through the
 * device's copy engines (and the NICs of both nodes when they cross nodes: that is where concurrent
 * transfers contend), so later placements see the links it will use. An idle device polls its queue, else
 * steals (when the policy steals; a thief fetches what it lacks when it starts the task); a task computes
 * once its inputs have arrived, for
 * {@code work / speed}, optionally with seeded log-normal noise. Collectives occupy the communication
 * engine of every member device, and every NIC they cross, for the time the communicator's cost model
 * ({@link CostModel}) gives over the link they cross — the same model and choice a real run makes.
 * An input copied to a device stays there for later consumers on that device (read-only data such as
 * replicated weights or a factorization's panel tiles is fetched once per device). Memory: an output lives
 * on its producer, and its copies on their devices, until its last consumer finishes. Tasks are never lost: a run that ends with unfinished tasks
 * (a task whose scope matches no device) fails with an exception naming one.
 */
public final class Simulator {

    /** Configuration; defaults model the real scheduler's default policy. */
    public static final class Context {
        private VirtualCluster cluster = VirtualCluster.cpuNode(2);
        private PlacementPolicy policy = PlacementPolicy.eft();
        private boolean criticalPathPriorities = true;
        private double noiseSigma;
        private long seed = 1;
        private boolean trace;

        public VirtualCluster cluster() {
            return cluster;
        }

        public Context cluster(VirtualCluster value) {
            cluster = value;
            return this;
        }

        public PlacementPolicy policy() {
            return policy;
        }

        public Context policy(PlacementPolicy value) {
            policy = value;
            return this;
        }

        public boolean criticalPathPriorities() {
            return criticalPathPriorities;
        }

        /** Rank tasks by upward rank, as a DataDeps region does for a known DAG (default true). */
        public Context criticalPathPriorities(boolean value) {
            criticalPathPriorities = value;
            return this;
        }

        public double noiseSigma() {
            return noiseSigma;
        }

        /** Log-normal noise on task durations (σ of the log); 0, the default, is noiseless. */
        public Context noiseSigma(double value) {
            noiseSigma = value;
            return this;
        }

        public long seed() {
            return seed;
        }

        public Context seed(long value) {
            seed = value;
            return this;
        }

        public boolean trace() {
            return trace;
        }

        /** Record a trace of the run (memory per task). */
        public Context trace(boolean value) {
            trace = value;
            return this;
        }

        public Context conclude() {
            Objects.requireNonNull(cluster, "cluster");
            Objects.requireNonNull(policy, "policy");
            if (!(noiseSigma >= 0)) {
                throw new IllegalArgumentException("noiseSigma must be >= 0, got " + noiseSigma);
            }
            return this;
        }
    }

    private record Device(int id, String name, Kind kind) implements Processor {
        @Override
        public int memoryDomain() {
            return id;
        }
    }

    private static final int STEAL_SCAN = 64;

    private final Context ctx;

    /**
     * Time in nanoseconds of a collective over {@code ranks} ranks and a link, priced by the communicator's
     * cost model; {@link Algorithm#AUTO} takes the communicator's own choice.
     */
    public static double collectiveNs(SimDag.Collective op, Algorithm algorithm, int ranks, long bytes, LinkSpec link,
                                      double gammaNsPerByte) {
        checkAlgorithm(op, algorithm);
        CostModel model = new CostModel(link.alphaNs() * 1e-9, link.nsPerByte() * 1e-9, gammaNsPerByte * 1e-9);
        double seconds;
        switch (op) {
            case ALL_REDUCE:
                seconds = model.allReduce(algorithm == Algorithm.AUTO ? model.chooseAllReduce(ranks, bytes) : algorithm,
                        ranks, bytes);
                break;
            case BROADCAST:
                seconds = model.broadcast(algorithm == Algorithm.AUTO ? model.chooseBroadcast(ranks, bytes) : algorithm,
                        ranks, bytes);
                break;
            default:
                seconds = model.allToAll(ranks, bytes);
        }
        return ranks <= 1 ? 0 : seconds * 1e9;
    }

    /** Refuses an algorithm that does not perform {@code op}, naming the ones that do. */
    static void checkAlgorithm(SimDag.Collective op, Algorithm algorithm) {
        java.util.EnumSet<Algorithm> ok;
        switch (op) {
            case ALL_REDUCE:
                ok = java.util.EnumSet.of(Algorithm.AUTO, Algorithm.RING, Algorithm.RECURSIVE_DOUBLING,
                        Algorithm.RABENSEIFNER, Algorithm.BINOMIAL_TREE);
                break;
            case BROADCAST:
                ok = java.util.EnumSet.of(Algorithm.AUTO, Algorithm.BINOMIAL_TREE, Algorithm.CHAIN);
                break;
            default:
                ok = java.util.EnumSet.of(Algorithm.AUTO); // pairwise exchange
        }
        if (!ok.contains(algorithm)) {
            throw new IllegalArgumentException(algorithm + " does not perform " + op + "; use one of " + ok);
        }
    }

    public Simulator(Context ctx) {
        this.ctx = ctx.conclude();
    }

    /** Simulates {@code dag} once. Each call is independent and deterministic for a given seed. */
    public SimResult run(SimDag dag) {
        return new Run(ctx, dag).execute();
    }

    /** The state of one simulation. */
    private static final class Run implements PlacementPolicy.SchedulingView {
        private final VirtualCluster cluster;
        private final PlacementPolicy policy;
        private final SimDag dag;
        private final int n;
        private final int devices;
        private final Device[] procs;
        private final List<ReadyQueue<SimDag.Task>> queues = new ArrayList<>();
        private final ReadyQueue<SimDag.Task> shared = new ReadyQueue<>(false);
        private final Random noise;
        private final double sigma;

        // per task
        private final int[] pending;
        private final int[] consumersLeft;
        private final int[] location;
        private final int[][] consumers;
        private final double[] startNs;
        private final double[] endNs;

        // per device
        private final double[] busyUntil;
        private final double[] busyNs;
        private final boolean[] idle;
        private final double[][] copyFree;
        private final double[] commFree;
        private final long[] memory;
        private final long[] peakMemory;
        private final double[] nicFree;
        private final ArrayDeque<Integer> idleList = new ArrayDeque<>();
        /** Arrival time of each copy of a task's output per device (NaN: none); null until the first copy. */
        private final double[][] copyAt;

        private final PriorityQueue<Event> events = new PriorityQueue<>();
        private final List<Trace.TaskRecord> records;
        private double now;
        private long seq;
        private long eventCount;
        private long intraBytes;
        private long interBytes;
        private int finished;

        private record Event(double time, long seq, int task, int device) implements Comparable<Event> {
            @Override
            public int compareTo(Event o) {
                int c = Double.compare(time, o.time);
                return c != 0 ? c : Long.compare(seq, o.seq);
            }
        }

        Run(Context ctx, SimDag dag) {
            this.cluster = ctx.cluster();
            this.policy = ctx.policy();
            this.dag = dag;
            this.n = dag.size();
            this.devices = cluster.devices();
            this.procs = new Device[devices];
            for (int d = 0; d < devices; d++) {
                procs[d] = new Device(d, "n" + cluster.nodeOf(d) + "/" + cluster.device().kind().name().toLowerCase()
                        + (d % cluster.devicesPerNode()), cluster.device().kind());
                queues.add(new ReadyQueue<>(policy.prioritized()));
            }
            this.noise = new Random(ctx.seed());
            this.sigma = ctx.noiseSigma();
            pending = new int[n];
            consumersLeft = new int[n];
            location = new int[n];
            startNs = new double[n];
            endNs = new double[n];
            int[] counts = new int[n];
            for (SimDag.Task t : dag.tasks()) {
                pending[t.index] = t.inputs.length;
                for (int in : t.inputs) {
                    counts[in]++;
                }
            }
            consumers = new int[n][];
            for (int i = 0; i < n; i++) {
                consumers[i] = new int[counts[i]];
                consumersLeft[i] = counts[i];
            }
            int[] fill = new int[n];
            for (SimDag.Task t : dag.tasks()) {
                for (int in : t.inputs) {
                    consumers[in][fill[in]++] = t.index;
                }
            }
            busyUntil = new double[devices];
            busyNs = new double[devices];
            idle = new boolean[devices];
            copyFree = new double[devices][cluster.device().streams()];
            commFree = new double[devices];
            memory = new long[devices];
            peakMemory = new long[devices];
            nicFree = new double[cluster.nodes()];
            records = ctx.trace() ? new ArrayList<>(n) : null;
            copyAt = new double[n][];
            for (SimDag.Task t : dag.tasks()) {
                t.estimateNs = (long) (t.isCollective() ? collectiveNs(t) : t.workNs / cluster.device().speed());
                t.rank = 0;
            }
            if (ctx.criticalPathPriorities()) {
                // upward ranks in reverse topological (= reverse insertion) order
                for (int i = n - 1; i >= 0; i--) {
                    SimDag.Task t = dag.get(i);
                    double succ = 0;
                    for (int c : consumers[i]) {
                        succ = Math.max(succ, dag.get(c).rank);
                    }
                    t.rank = t.estimateNs + succ;
                }
            }
        }

        SimResult execute() {
            long wallStart = System.nanoTime();
            for (int d = 0; d < devices; d++) {
                idle[d] = true;
                idleList.add(d);
            }
            // Queue every initially ready task before any device starts, as a DataDeps region arms its whole
            // DAG before its first task runs: the queues then order them by rank.
            holdStarts = true;
            for (int i = 0; i < n; i++) {
                if (pending[i] == 0) {
                    ready(dag.get(i), -1);
                }
            }
            holdStarts = false;
            for (int d = 0; d < devices; d++) {
                if (idle[d]) {
                    tryStart(d);
                }
            }
            Event e;
            while ((e = events.poll()) != null) {
                now = e.time;
                eventCount++;
                complete(dag.get(e.task), e.device);
            }
            if (finished < n) {
                SimDag.Task t = dag.get(doneSet.nextClearBit(0));
                throw new IllegalStateException("simulation stalled: task " + t + " never ran (scope " + t.scope
                        + " on " + devices + " devices, " + pending[t.index] + " inputs outstanding)");
            }
            double makespan = 0;
            for (double end : endNs) {
                makespan = Math.max(makespan, end);
            }
            Trace trace = null;
            if (records != null) {
                String[] names = new String[devices * 2];
                for (int d = 0; d < devices; d++) {
                    names[d] = procs[d].name();
                    names[devices + d] = procs[d].name() + " comm";
                }
                trace = Trace.of("simulation", names, records);
            }
            return new SimResult(makespan, busyNs, peakMemory, intraBytes, interBytes, eventCount,
                    System.nanoTime() - wallStart, trace);
        }

        private final java.util.BitSet doneSet = new java.util.BitSet();
        /** While set, placing a task does not start it: used to queue the initially ready tasks first. */
        private boolean holdStarts;

        // ---- readiness and placement ------------------------------------------------------------

        private void ready(SimDag.Task t, int preferred) {
            if (t.isCollective()) {
                startCollective(t);
                return;
            }
            int i = policy.place(t, this, preferred);
            if (i == PlacementPolicy.SHARED_QUEUE) {
                shared.push(t);
                Integer d = holdStarts ? null : pollIdle(t);
                if (d != null) {
                    tryStart(d);
                }
                return;
            }
            if (i < 0 || i >= devices || !t.scope.allows(procs[i])) {
                throw new IllegalStateException(i < 0
                        ? "no device of the cluster matches the scope " + t.scope + " of task " + t
                        : "policy " + policy.name() + " placed " + t + " on device " + i + ", which its scope "
                                + t.scope + " does not allow");
            }
            queues.get(i).push(t);
            // inputs start moving as soon as the task is placed (a copy engine prefetches them), so later
            // placements see the links and NICs this one will use
            for (int in : t.inputs) {
                fetch(in, i);
            }
            if (holdStarts) {
                return;
            }
            if (idle[i]) {
                tryStart(i);
            } else if (policy.stealing() && t.scope.isAny()) {
                Integer d = pollIdle(t);
                if (d != null) {
                    tryStart(d);
                }
            }
        }

        /** An idle device that may run {@code t}, removed from the idle list; null if none. */
        private Integer pollIdle(SimDag.Task t) {
            for (int k = idleList.size(); k > 0; k--) {
                int d = idleList.poll();
                if (!idle[d]) {
                    continue; // stale entry
                }
                if (t.scope.allows(procs[d])) {
                    return d;
                }
                idleList.add(d);
            }
            return null;
        }

        private void tryStart(int d) {
            SimDag.Task t = queues.get(d).poll();
            if (t != null) {
                queues.get(d).pulled(t.estimateNs);
            } else if (!shared.isEmpty()) {
                t = shared.steal(procs[d], STEAL_SCAN);
                if (t != null) {
                    shared.pulled(t.estimateNs);
                }
            }
            if (t == null && policy.stealing()) {
                for (int k = 1; k < devices && t == null; k++) {
                    ReadyQueue<SimDag.Task> victim = queues.get((d + k) % devices);
                    if (victim.hasStealable()) {
                        t = victim.steal(procs[d], STEAL_SCAN);
                        if (t != null) {
                            victim.pulled(t.estimateNs);
                        }
                    }
                }
            }
            if (t == null) {
                if (!idle[d]) {
                    idle[d] = true;
                    idleList.add(d);
                }
                return;
            }
            idle[d] = false;
            start(t, d);
        }

        private void start(SimDag.Task t, int d) {
            double arrival = now;
            for (int in : t.inputs) {
                arrival = Math.max(arrival, fetch(in, d));
            }
            double duration = t.workNs / cluster.device().speed();
            if (sigma > 0) {
                duration *= Math.exp(sigma * noise.nextGaussian() - sigma * sigma / 2);
            }
            startNs[t.index] = arrival;
            double end = arrival + duration;
            busyUntil[d] = end;
            busyNs[d] += duration;
            eventCount++;
            events.add(new Event(end, seq++, t.index, d));
        }

        /**
         * Makes task {@code in}'s output available on device {@code d}: nothing if it is there or already
         * copied there, else a transfer starting now. Returns when it is (or will be) there.
         */
        private double fetch(int in, int d) {
            int src = location[in];
            if (src < 0 || src == d) {
                return now;
            }
            double[] at = copyAt[in];
            if (at == null) {
                at = copyAt[in] = new double[devices];
                java.util.Arrays.fill(at, Double.NaN);
            }
            if (!Double.isNaN(at[d])) {
                return at[d];
            }
            long bytes = dag.get(in).outputBytes;
            int from = nearestHolder(in, d);
            double ready = from == src ? now : Math.max(now, at[from]);
            double done = transfer(from, d, bytes, ready);
            at[d] = done;
            allocate(d, bytes);
            return done;
        }

        /**
         * The holder of task {@code in}'s output (its producer, or a device it is copied or being copied to) that
         * gets it to device {@code d} first: a copy already in d's node beats the NIC.
         */
        private int nearestHolder(int in, int d) {
            int src = location[in];
            double[] at = copyAt[in];
            long bytes = dag.get(in).outputBytes;
            int from = src;
            double best = estimateArrival(src, d, bytes, now);
            if (at != null) {
                for (int h = 0; h < devices; h++) {
                    if (!Double.isNaN(at[h]) && h != d) {
                        double e = estimateArrival(h, d, bytes, Math.max(now, at[h]));
                        if (e < best) {
                            best = e;
                            from = h;
                        }
                    }
                }
            }
            return from;
        }

        /** When task {@code in}'s output would be on device {@code d}, without moving anything. */
        private double arrivalEstimate(int in, int d) {
            int src = location[in];
            if (src < 0 || src == d) {
                return now;
            }
            double[] at = copyAt[in];
            if (at != null && !Double.isNaN(at[d])) {
                return at[d];
            }
            int from = nearestHolder(in, d);
            return estimateArrival(from, d, dag.get(in).outputBytes, from == src ? now : Math.max(now, at[from]));
        }

        private double estimateArrival(int from, int to, long bytes, double ready) {
            double begin = ready;
            int fn = cluster.nodeOf(from), tn = cluster.nodeOf(to);
            if (fn != tn) {
                begin = Math.max(begin, Math.max(nicFree[fn], nicFree[tn]));
            }
            return begin + cluster.link(from, to).timeNs(bytes);
        }

        /** Moves bytes from src to dst, starting no earlier than {@code ready}; returns the arrival time. */
        private double transfer(int src, int dst, long bytes, double ready) {
            LinkSpec link = cluster.link(src, dst);
            double[] lanes = copyFree[dst];
            int lane = 0;
            for (int l = 1; l < lanes.length; l++) {
                if (lanes[l] < lanes[lane]) {
                    lane = l;
                }
            }
            double begin = Math.max(ready, lanes[lane]);
            int sn = cluster.nodeOf(src), dn = cluster.nodeOf(dst);
            boolean crossNode = sn != dn;
            if (crossNode) {
                begin = Math.max(begin, Math.max(nicFree[sn], nicFree[dn]));
            }
            double end = begin + link.timeNs(bytes);
            lanes[lane] = end;
            if (crossNode) {
                nicFree[sn] = end;
                nicFree[dn] = end;
                interBytes += bytes;
            } else {
                intraBytes += bytes;
            }
            eventCount++;
            return end;
        }

        private void startCollective(SimDag.Task t) {
            double begin = now;
            int firstNode = cluster.nodeOf(t.group[0]);
            boolean crossNode = false;
            for (int g : t.group) {
                begin = Math.max(begin, commFree[g]);
                crossNode |= cluster.nodeOf(g) != firstNode;
            }
            java.util.BitSet nodes = null;
            if (crossNode) {
                nodes = new java.util.BitSet();
                for (int g : t.group) {
                    nodes.set(cluster.nodeOf(g));
                }
                for (int nd = nodes.nextSetBit(0); nd >= 0; nd = nodes.nextSetBit(nd + 1)) {
                    begin = Math.max(begin, nicFree[nd]);
                }
            }
            double end = begin + collectiveNs(t);
            for (int g : t.group) {
                commFree[g] = end;
            }
            if (nodes != null) {
                for (int nd = nodes.nextSetBit(0); nd >= 0; nd = nodes.nextSetBit(nd + 1)) {
                    nicFree[nd] = end;
                }
                interBytes += t.outputBytes * (long) nodes.cardinality();
            } else {
                intraBytes += t.outputBytes * (long) t.group.length;
            }
            startNs[t.index] = begin;
            eventCount++;
            events.add(new Event(end, seq++, t.index, -1 - t.group[0]));
        }

        private double collectiveNs(SimDag.Task t) {
            boolean crossNode = false;
            int firstNode = cluster.nodeOf(t.group[0]);
            for (int g : t.group) {
                crossNode |= cluster.nodeOf(g) != firstNode;
            }
            return Simulator.collectiveNs(t.op, t.algorithm, t.group.length, t.outputBytes,
                    crossNode ? cluster.interNode() : cluster.intraNode(), cluster.gammaNsPerByte());
        }

        // ---- completion -------------------------------------------------------------------------

        private void complete(SimDag.Task t, int device) {
            int i = t.index;
            endNs[i] = now;
            doneSet.set(i);
            finished++;
            boolean collective = device < 0;
            location[i] = collective ? -1 : device;
            if (records != null) {
                int lane = collective ? devices + (-1 - device) : device;
                records.add(new Trace.TaskRecord(i, t.name, lane, (long) startNs[i], (long) now, TaskState.DONE,
                        toLongs(t.inputs)));
            }
            if (!collective) {
                // the device is free again before its task's consumers are placed: one placed here starts here
                idle[device] = true;
                idleList.add(device);
                if (consumers[i].length > 0) {
                    allocate(device, t.outputBytes);
                }
                for (int in : t.inputs) {
                    int src = location[in];
                    if (--consumersLeft[in] == 0 && src >= 0) {
                        long bytes = dag.get(in).outputBytes;
                        memory[src] -= bytes;
                        double[] at = copyAt[in];
                        if (at != null) {
                            for (int c = 0; c < devices; c++) {
                                if (!Double.isNaN(at[c])) {
                                    memory[c] -= bytes;
                                }
                            }
                            copyAt[in] = null;
                        }
                    }
                }
            }
            for (int c : consumers[i]) {
                if (--pending[c] == 0) {
                    ready(dag.get(c), collective ? -1 : device);
                }
            }
            if (!collective && idle[device]) {
                tryStart(device);
            }
        }

        private void allocate(int device, long bytes) {
            memory[device] += bytes;
            if (memory[device] > peakMemory[device]) {
                peakMemory[device] = memory[device];
            }
        }

        private static long[] toLongs(int[] a) {
            long[] r = new long[a.length];
            for (int k = 0; k < a.length; k++) {
                r[k] = a[k];
            }
            return r;
        }

        // ---- the view the placement policy sees ---------------------------------------------------

        @Override
        public int processorCount() {
            return devices;
        }

        @Override
        public Processor processor(int index) {
            return procs[index];
        }

        @Override
        public long estimatedFinishNs(PlacementPolicy.ReadyTask task, int index) {
            SimDag.Task t = (SimDag.Task) task;
            // Inputs are prefetched from placement on, so their transfers overlap the wait in the queue: the task
            // starts when both the device and its last input are there. Transfers come from the nearest holder
            // (a copy in flight to a node-mate beats the NIC), as fetch will move them.
            double start = now + queues.get(index).queuedWorkNs() + Math.max(0, busyUntil[index] - now);
            for (int in : t.inputs) {
                start = Math.max(start, arrivalEstimate(in, index));
            }
            return (long) (start - now + t.estimateNs);
        }
    }
}
