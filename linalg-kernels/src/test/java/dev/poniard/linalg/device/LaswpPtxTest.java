package dev.poniard.linalg.device;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.poniard.scheduler.stream.cuda.PtxAssembler;
import java.io.IOException;
import java.io.InputStream;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.List;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import org.junit.jupiter.api.Test;

/**
 * Checks the hand-written row-interchange PTX without a GPU: NVIDIA's PTX compiler (in JCuda's natives, no driver
 * needed) must assemble it for Turing and Hopper, and its parameters must be the ones {@link DeviceTileKernels}
 * passes to {@code cuLaunchKernel}.
 */
class LaswpPtxTest {
    private static String ptx() throws IOException {
        try (InputStream in = LaswpPtxTest.class.getResourceAsStream(DeviceTileKernels.LASWP_MODULE)) {
            assertTrue(in != null, DeviceTileKernels.LASWP_MODULE + " is on the class path");
            return new String(in.readAllBytes(), StandardCharsets.US_ASCII);
        }
    }

    @Test
    void shouldAssembleTheRowInterchangeKernelForTuringAndHopper() throws IOException {
        String src = ptx();
        for (String arch : List.of("sm_75", "sm_90")) {
            assertTrue(PtxAssembler.assemble(DeviceTileKernels.LASWP_MODULE, src, arch).length > 0, arch);
        }
    }

    @Test
    void shouldDeclareTheParametersTheLaunchPasses() throws IOException {
        String src = ptx();
        int entry = src.indexOf(".visible .entry " + DeviceTileKernels.LASWP_ENTRY + "(");
        assertTrue(entry >= 0, "entry " + DeviceTileKernels.LASWP_ENTRY);
        Matcher m = Pattern.compile("\\.param\\s+(?:\\.align 8 )?\\.(b8|u64|u32)\\s+\\w+(\\[(\\d+)])?")
                .matcher(src.substring(entry, src.indexOf(')', entry)));
        List<String> params = new ArrayList<>();
        while (m.find()) {
            params.add(m.group(1) + (m.group(3) == null ? "" : "[" + m.group(3) + "]"));
        }
        assertEquals(List.of("b8[" + 8 * DeviceTileKernels.LASWP_MAX_TILES + "]", "u64", "u32", "u32", "u32", "u32",
                "u32", "u32"), params);
    }
}
