package dev.poniard.scheduler.stream.cuda;

import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeFalse;

import org.junit.jupiter.api.Test;

/** Detection on any machine: it never throws, and without a GPU it says why. */
class CudaDevicesTest {
    @Test
    void shouldDetectWithoutThrowing() {
        CudaDevices.Detection d = CudaDevices.detect();
        System.out.println("CUDA detection here: " + d);
        assertTrue(d.available() ? d.count() > 0 && d.reason().isEmpty() : d.count() == 0 && !d.reason().isBlank(),
                d.toString());
    }

    @Test
    void shouldRefuseToOpenADeviceWhereThereIsNone() {
        assumeFalse(CudaDevices.detect().available(), "this machine has a GPU");
        IllegalStateException e = assertThrows(IllegalStateException.class,
                () -> CudaDevice.launch(new CudaDevice.Context()));
        assertTrue(e.getMessage().startsWith("no CUDA device: "), e.getMessage());
        assertTrue(e.getMessage().contains("README"), "says where to read on: " + e.getMessage());
    }

    @Test
    void shouldHonourTheSwitchThatDisablesCuda() {
        System.setProperty("poniard.cuda.disable", "true");
        try {
            CudaDevices.Detection d = CudaDevices.probe();
            assertFalse(d.available());
            assertTrue(d.toString().startsWith("no CUDA device: disabled"), d.toString());
        } finally {
            System.clearProperty("poniard.cuda.disable");
        }
    }

    @Test
    void shouldValidateTheContextWithTheBadValue() {
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> new CudaDevice.Context().computeStreams(0).conclude());
        assertTrue(e.getMessage().contains("got 0"), e.getMessage());
        assertThrows(IllegalArgumentException.class, () -> new CudaDevice.Context().ordinal(-1).conclude());
    }
}
