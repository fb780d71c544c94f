package dev.poniard.scheduler.sim;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertSame;
import static org.junit.jupiter.api.Assertions.assertThrows;

import dev.poniard.scheduler.Processor;
import java.nio.file.Files;
import java.nio.file.Path;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

class VirtualClusterTest {

    @Test
    void shouldReadAClusterFromJson(@TempDir Path dir) throws Exception {
        Path file = dir.resolve("cluster.json");
        Files.writeString(file, "{\"nodes\": 4, \"devicesPerNode\": 8,"
                + " \"device\": {\"kind\": \"GPU\", \"speed\": 2.0, \"memoryBytes\": 1000, \"streams\": 4},"
                + " \"intraNode\": {\"alphaUs\": 3, \"gbPerS\": 150}, \"interNode\": {\"alphaUs\": 8, \"gbPerS\": 25},"
                + " \"reduceGbPerS\": 500}");
        VirtualCluster c = VirtualCluster.fromJson(file);
        assertEquals(32, c.devices());
        assertEquals(Processor.Kind.GPU, c.device().kind());
        assertEquals(3, c.nodeOf(31));
        assertSame(c.intraNode(), c.link(0, 7));
        assertSame(c.interNode(), c.link(7, 8));
        assertNull(c.link(5, 5));
    }

    @Test
    void shouldRefuseNonsenseWithTheBadValue(@TempDir Path dir) throws Exception {
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> new LinkSpec(1, 0));
        assertEquals(true, e.getMessage().contains("0.0 GB/s"), e.getMessage());
        Path file = dir.resolve("bad.json");
        Files.writeString(file, "{\"nodes\": 0, \"devicesPerNode\": 8}");
        assertThrows(Exception.class, () -> VirtualCluster.fromJson(file));
    }
}
