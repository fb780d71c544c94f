package dev.poniard.scheduler.sim;

import dev.poniard.scheduler.Schedulable;
import dev.poniard.scheduler.comm.Algorithm;
import dev.poniard.scheduler.Scope;
import java.util.ArrayList;
import java.util.Collections;
import java.util.List;

/**
 * A task DAG for the simulator, built in topological order: every input of a task is added before it.
 * A task either computes (work in nanoseconds on a speed-1 device, an output of some bytes) or is a
 * collective over a group of devices, priced by the communicator's own cost model
 * ({@link dev.poniard.scheduler.comm.CostModel}) with the links of the virtual cluster.
 */
public final class SimDag {
    /** What a collective does. */
    public enum Collective { ALL_REDUCE, BROADCAST, ALL_TO_ALL }

    private final List<Task> tasks = new ArrayList<>();

    /** A task of the DAG; also what the scheduler's queues and policies see during a simulation. */
    public static final class Task implements Schedulable {
        final int index;
        final String name;
        final double workNs;
        final long outputBytes;
        final int[] inputs;
        final int priority;
        final Scope scope;
        /** For collectives: the op, algorithm (null: the model's best), bytes and device group. */
        final Collective op;
        final Algorithm algorithm;
        final int[] group;
        double rank;
        long estimateNs;

        Task(int index, String name, double workNs, long outputBytes, int[] inputs, int priority, Scope scope,
             Collective op, Algorithm algorithm, int[] group) {
            this.index = index;
            this.name = name;
            this.workNs = workNs;
            this.outputBytes = outputBytes;
            this.inputs = inputs;
            this.priority = priority;
            this.scope = scope;
            this.op = op;
            this.algorithm = algorithm;
            this.group = group;
        }

        public String name() {
            return name;
        }

        public int index() {
            return index;
        }

        public boolean isCollective() {
            return group != null;
        }

        @Override
        public long id() {
            return index;
        }

        @Override
        public double rank() {
            return rank;
        }

        @Override
        public Scope scope() {
            return scope;
        }

        @Override
        public int priority() {
            return priority;
        }

        @Override
        public long estimateNs() {
            return estimateNs;
        }

        @Override
        public String toString() {
            return name + "#" + index;
        }
    }

    /** Adds a compute task that may run on any device. Returns its index, to use as an input. */
    public int task(String name, double workNs, long outputBytes, int... inputs) {
        return add(name, workNs, outputBytes, 0, Scope.any(), inputs);
    }

    /** Adds a compute task with a priority and a scope (e.g. {@code Scope.processors(device)} to pin it). */
    public int task(String name, double workNs, long outputBytes, int priority, Scope scope, int... inputs) {
        return add(name, workNs, outputBytes, priority, scope, inputs);
    }

    /**
     * Adds a collective over {@code group} that starts when all inputs are done and occupies the group's
     * communication engines (and, when it spans nodes, their NICs) for the model's time.
     *
     * @param algorithm the algorithm to price, or {@link Algorithm#AUTO} for the communicator's own choice
     */
    public int collective(String name, Collective op, Algorithm algorithm, long bytes, int[] group, int... inputs) {
        if (group.length == 0) {
            throw new IllegalArgumentException("collective " + name + " needs a non-empty device group");
        }
        Simulator.checkAlgorithm(op, algorithm);
        checkInputs(name, inputs);
        Task t = new Task(tasks.size(), name, 0, bytes, inputs.clone(), 0, Scope.any(), op, algorithm, group.clone());
        tasks.add(t);
        return t.index;
    }

    private int add(String name, double workNs, long outputBytes, int priority, Scope scope, int[] inputs) {
        if (!(workNs >= 0) || outputBytes < 0) {
            throw new IllegalArgumentException("task " + name + " needs workNs >= 0 and outputBytes >= 0, got "
                    + workNs + ", " + outputBytes);
        }
        checkInputs(name, inputs);
        Task t = new Task(tasks.size(), name, workNs, outputBytes, inputs.clone(), priority, scope, null, null, null);
        tasks.add(t);
        return t.index;
    }

    private void checkInputs(String name, int[] inputs) {
        for (int in : inputs) {
            if (in < 0 || in >= tasks.size()) {
                throw new IllegalArgumentException("task " + name + " names input " + in + ", but only tasks 0.."
                        + (tasks.size() - 1) + " exist: add inputs before the tasks that use them");
            }
        }
    }

    public int size() {
        return tasks.size();
    }

    public Task get(int index) {
        return tasks.get(index);
    }

    public List<Task> tasks() {
        return Collections.unmodifiableList(tasks);
    }
}
