package dev.poniard.scheduler.stream;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import dev.poniard.scheduler.stream.cpu.CpuDevice;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;

/** The device timeline on the CPU emulation, where kernels written in Java make overlaps deterministic. */
@Timeout(value = 60, unit = TimeUnit.SECONDS)
class DeviceTimelineTest {
    private static CpuDevice open(DeviceTimeline timeline) {
        return CpuDevice.launch(new CpuDevice.Context().name("emu").computeStreams(2).computeCapacity(2)
                .copyBytesPerSecond(50e9).memoryBytes(8L << 20).stagingBytes(8L << 20).timeline(timeline));
    }

    private static void await(CountDownLatch latch) {
        try {
            assertTrue(latch.await(30, TimeUnit.SECONDS), "timed out");
        } catch (InterruptedException e) {
            throw new AssertionError(e);
        }
    }

    @Test
    void shouldShowACopyInsideTheKernelItRanAlongside() {
        DeviceTimeline timeline = new DeviceTimeline();
        try (CpuDevice d = open(timeline); Buffer host = d.staging().acquire(1 << 20);
             Buffer dev = d.memory().acquire(1 << 20)) {
            CountDownLatch started = new CountDownLatch(1);
            CountDownLatch copied = new CountDownLatch(1);
            // The kernel runs until a host function after the copy says the copy is done, and has started before the
            // copy is enqueued: the copy's interval must lie inside the kernel's.
            d.computeStreams().get(0).launch(() -> {
                started.countDown();
                await(copied);
            }, 0);
            await(started);
            d.hostToDevice().copy(host, 0, dev, 0, 1 << 20);
            d.hostToDevice().launchHostFunction(copied::countDown, 0);
            d.synchronize();

            List<DeviceTimeline.Interval> in = timeline.intervals();
            DeviceTimeline.Interval kernel = find(in, "emu-compute-0", "kernel");
            DeviceTimeline.Interval copy = find(in, "emu-h2d", DeviceTimeline.copyName(1 << 20));
            find(in, "emu-h2d", "host function");
            assertTrue(kernel.startNs() <= copy.startNs() && copy.endNs() <= kernel.endNs(),
                    "copy " + copy + " not inside kernel " + kernel);
            assertEquals("copy 1.0 MiB", copy.name());
        }
    }

    @Test
    void shouldForgetWhatRanBeforeItWasCleared() {
        DeviceTimeline timeline = new DeviceTimeline();
        try (CpuDevice d = open(timeline)) {
            d.computeStreams().get(1).launch(() -> { }, 0);
            d.synchronize();
            assertEquals(1, timeline.intervals().size());
            timeline.clear();
            assertEquals(List.of(), timeline.intervals());
            d.computeStreams().get(1).launchHostFunction(() -> { }, 0);
            d.synchronize();
            assertEquals("host function", timeline.intervals().get(0).name());
            assertEquals(1, timeline.intervals().size());
        }
    }

    @Test
    void shouldWriteAChromeTraceWithALanePerStream(@TempDir Path dir) throws Exception {
        DeviceTimeline timeline = new DeviceTimeline();
        try (CpuDevice d = open(timeline); Buffer host = d.staging().acquire(4096);
             Buffer dev = d.memory().acquire(4096)) {
            d.hostToDevice().copy(host, 0, dev, 0, 4096);
            d.computeStreams().get(1).waitFor(d.hostToDevice().record());
            d.computeStreams().get(1).launch(() -> { }, 0);
            d.deviceToHost().waitFor(d.computeStreams().get(1).record());
            d.deviceToHost().copy(dev, 0, host, 0, 4096);
            d.synchronize();
            Path file = dir.resolve("device.json");
            timeline.toTrace(d).ofRank(1).writeChromeJson(file);

            JsonNode events = new ObjectMapper().readTree(file.toFile()).path("traceEvents");
            List<String> lanes = new ArrayList<>();
            List<String> ops = new ArrayList<>();
            String process = null;
            List<String> arrows = new ArrayList<>();
            for (JsonNode e : events) {
                String name = e.path("name").asText();
                if (e.path("ph").asText().equals("s") || e.path("ph").asText().equals("f")) {
                    arrows.add(e.path("ph").asText() + " " + e.path("tid").asInt());
                } else if (name.equals("process_name")) {
                    process = e.path("args").path("name").asText();
                } else if (name.equals("thread_name")) {
                    lanes.add(e.path("args").path("name").asText());
                } else if (e.path("ph").asText().equals("X")) {
                    ops.add(lanes.get(e.path("tid").asInt()) + ": " + name);
                }
            }
            assertEquals("rank 1 · device emu", process);
            assertEquals(List.of("emu-compute-0", "emu-compute-1", "emu-h2d", "emu-d2h"), lanes);
            assertTrue(ops.containsAll(List.of("emu-h2d: copy 4.0 KiB", "emu-compute-1: kernel",
                    "emu-d2h: copy 4.0 KiB")), ops.toString());
            assertEquals(3, ops.size(), ops.toString());
            // copy in -> kernel (lane 2 to lane 1), kernel -> copy out (lane 1 to lane 3)
            assertEquals(List.of("s 2", "f 1", "s 1", "f 3"), arrows);
        }
    }

    private static DeviceTimeline.Interval find(List<DeviceTimeline.Interval> in, String stream, String name) {
        return in.stream().filter(i -> i.stream().equals(stream) && i.name().equals(name)).findFirst()
                .orElseThrow(() -> new AssertionError("no " + name + " on " + stream + " in " + in));
    }
}
