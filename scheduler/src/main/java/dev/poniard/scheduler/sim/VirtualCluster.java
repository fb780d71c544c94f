package dev.poniard.scheduler.sim;

import com.fasterxml.jackson.databind.DeserializationFeature;
import com.fasterxml.jackson.databind.ObjectMapper;
import dev.poniard.scheduler.Processor;
import java.io.IOException;
import java.nio.file.Path;

/**
 * A cluster that exists only in the simulator: {@code nodes} nodes of {@code devicesPerNode} identical
 * devices, an intra-node link between devices of a node and an inter-node link between nodes (one NIC per
 * node: transfers and collectives that leave a node share it). Build it in code or read it from JSON:
 *
 * <pre>{@code
 * {"nodes": 16, "devicesPerNode": 8,
 *  "device": {"kind": "GPU", "speed": 1.0, "memoryBytes": 85899345920, "streams": 4},
 *  "intraNode": {"alphaUs": 3, "gbPerS": 150},
 *  "interNode": {"alphaUs": 8, "gbPerS": 25},
 *  "reduceGbPerS": 500}
 * }</pre>
 *
 * @param device every device's kind, relative speed (task durations divide by it), memory and streams
 * @param reduceGbPerS how fast a device combines reduction operands (the γ of α-β-γ collective models)
 */
public record VirtualCluster(int nodes, int devicesPerNode, DeviceSpec device, LinkSpec intraNode,
                             LinkSpec interNode, double reduceGbPerS) {

    /**
     * @param speed relative speed: a task of work w nanoseconds (on a speed-1 device) takes w / speed
     * @param memoryBytes memory per device; the simulator reports peak use against it
     * @param streams concurrent copy engines per device (at least 1)
     */
    public record DeviceSpec(Processor.Kind kind, double speed, long memoryBytes, int streams) {
        public DeviceSpec {
            if (kind == null || !(speed > 0) || memoryBytes <= 0 || streams < 1) {
                throw new IllegalArgumentException("device needs a kind, speed > 0, memoryBytes > 0 and streams >= 1; got "
                        + kind + ", " + speed + ", " + memoryBytes + ", " + streams);
            }
        }
    }

    public VirtualCluster {
        if (nodes < 1 || devicesPerNode < 1) {
            throw new IllegalArgumentException("a cluster needs nodes >= 1 and devicesPerNode >= 1, got " + nodes
                    + " x " + devicesPerNode);
        }
        if (device == null || intraNode == null || interNode == null || !(reduceGbPerS > 0)) {
            throw new IllegalArgumentException("a cluster needs device, intraNode, interNode and reduceGbPerS > 0");
        }
    }

    /** A typical GPU cluster: H100-class devices, NVLink-class links inside a node, 200 Gb/s between nodes. */
    public static VirtualCluster gpuCluster(int nodes, int devicesPerNode) {
        return new VirtualCluster(nodes, devicesPerNode,
                new DeviceSpec(Processor.Kind.GPU, 1.0, 80L << 30, 4),
                new LinkSpec(3, 150), new LinkSpec(8, 25), 500);
    }

    /** {@code cores} CPU workers on one node sharing memory (copies at memcpy speed). */
    public static VirtualCluster cpuNode(int cores) {
        return new VirtualCluster(1, cores, new DeviceSpec(Processor.Kind.CPU, 1.0, 8L << 30, 1),
                new LinkSpec(0, 10), new LinkSpec(16, 1.2), 8);
    }

    public static VirtualCluster fromJson(Path file) throws IOException {
        return new ObjectMapper().configure(DeserializationFeature.FAIL_ON_UNKNOWN_PROPERTIES, true)
                .readValue(file.toFile(), VirtualCluster.class);
    }

    public int devices() {
        return nodes * devicesPerNode;
    }

    public int nodeOf(int device) {
        return device / devicesPerNode;
    }

    /** The link between two devices (null for the same device). */
    public LinkSpec link(int from, int to) {
        if (from == to) {
            return null;
        }
        return nodeOf(from) == nodeOf(to) ? intraNode : interNode;
    }

    /** Nanoseconds per byte to combine reduction operands. */
    public double gammaNsPerByte() {
        return 1 / reduceGbPerS;
    }
}
