package dev.poniard.scheduler.stream.cuda;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.poniard.scheduler.stream.Kernel;
import dev.poniard.scheduler.stream.Kernels;
import java.util.ArrayList;
import java.util.List;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import org.junit.jupiter.api.Test;

/**
 * Checks the hand-written PTX without a GPU: NVIDIA's PTX compiler (in JCuda's natives, no driver needed)
 * must assemble every module for the lowest target it declares and for Hopper, and each entry's parameter
 * list must match the Java declaration the launches are validated against.
 */
class KernelPtxTest {
    private static final Pattern PARAM = Pattern.compile("\\.param\\s+\\.(u64|f32|u32)\\s+(\\w+)");

    @Test
    void shouldAssembleEveryKernelForTuringAndHopper() {
        for (Kernel k : Kernels.ALL) {
            String ptx = CudaDevice.readResource(k.module());
            for (String arch : List.of("sm_75", "sm_90")) {
                byte[] cubin = PtxAssembler.assemble(k.module(), ptx, arch);
                assertTrue(cubin.length > 0, k + " for " + arch);
            }
        }
    }

    @Test
    void shouldDeclareTheParametersTheJavaSideLaunches() {
        for (Kernel k : Kernels.ALL) {
            String ptx = CudaDevice.readResource(k.module());
            assertTrue(ptx.startsWith("// " + k.name() + "("), k.module() + " opens with a comment on what it computes");
            int entry = ptx.indexOf(".visible .entry " + k.name() + "(");
            assertTrue(entry >= 0, k.module() + " has no entry " + k.name());
            String sig = ptx.substring(entry, ptx.indexOf(')', entry));
            List<String> types = new ArrayList<>();
            Matcher m = PARAM.matcher(sig);
            while (m.find()) {
                types.add(m.group(1));
            }
            List<String> expected = new ArrayList<>();
            for (Kernel.Param p : k.params()) {
                expected.add(p.type() == Kernel.Type.BUFFER_F32 ? "u64" : p.type() == Kernel.Type.F32 ? "f32" : "u32");
            }
            assertEquals(expected, types, k + ": PTX parameters against the Java declaration");
        }
    }

    @Test
    void shouldReportWhatIsWrongWithBrokenPtx() {
        String ptx = CudaDevice.readResource(Kernels.FILL_F32.module()).replace(".reg .f32 \t%f<2>;", "");
        PtxAssembler.PtxException e = assertThrows(PtxAssembler.PtxException.class,
                () -> PtxAssembler.assemble("broken fill", ptx, "sm_90"));
        assertTrue(e.getMessage().contains("%f1"), e.getMessage());
    }

    @Test
    void shouldKnowTheCompilerVersion() {
        assertTrue(PtxAssembler.version().matches("\\d+\\.\\d+"), PtxAssembler.version());
    }
}
