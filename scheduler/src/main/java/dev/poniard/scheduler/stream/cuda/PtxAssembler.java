package dev.poniard.scheduler.stream.cuda;

import static jcuda.nvptxcompiler.JNvPTXCompiler.nvPTXCompilerCompile;
import static jcuda.nvptxcompiler.JNvPTXCompiler.nvPTXCompilerCreate;
import static jcuda.nvptxcompiler.JNvPTXCompiler.nvPTXCompilerDestroy;
import static jcuda.nvptxcompiler.JNvPTXCompiler.nvPTXCompilerGetCompiledProgram;
import static jcuda.nvptxcompiler.JNvPTXCompiler.nvPTXCompilerGetCompiledProgramSize;
import static jcuda.nvptxcompiler.JNvPTXCompiler.nvPTXCompilerGetErrorLog;
import static jcuda.nvptxcompiler.JNvPTXCompiler.nvPTXCompilerGetErrorLogSize;
import static jcuda.nvptxcompiler.JNvPTXCompiler.nvPTXCompilerGetVersion;

import java.nio.charset.StandardCharsets;
import jcuda.nvptxcompiler.nvPTXCompileResult;
import jcuda.nvptxcompiler.nvPTXCompilerHandle;

/**
 * Assembles PTX into a cubin with NVIDIA's PTX compiler library (ptxas as a library, shipped in JCuda's
 * natives; it needs no GPU and no driver). The build uses it to check the hand-written PTX of every
 * kernel; a {@link CudaDevice} falls back to it when the driver's JIT refuses a module, and then reports
 * the assembler's log, which says what is wrong with the PTX.
 */
public final class PtxAssembler {
    /** PTX that does not assemble; the message carries the assembler's error log. */
    public static final class PtxException extends RuntimeException {
        private static final long serialVersionUID = 1L;

        PtxException(String message) {
            super(message);
        }
    }

    private PtxAssembler() {
    }

    /** The compiler's version, e.g. "12.6". */
    public static String version() {
        int[] major = {0}, minor = {0};
        check(nvPTXCompilerGetVersion(major, minor), "nvPTXCompilerGetVersion");
        return major[0] + "." + minor[0];
    }

    /**
     * Assembles {@code ptx} for {@code gpuName} (e.g. {@code sm_90}).
     *
     * @param what the module's name, for messages
     * @throws PtxException when the PTX has errors; the message has the compiler's log
     */
    public static byte[] assemble(String what, String ptx, String gpuName) {
        byte[] src = ptx.getBytes(StandardCharsets.US_ASCII);
        nvPTXCompilerHandle h = new nvPTXCompilerHandle();
        check(nvPTXCompilerCreate(h, src.length, src), "nvPTXCompilerCreate");
        try {
            int rc = nvPTXCompilerCompile(h, 1, new String[] {"--gpu-name=" + gpuName});
            if (rc != nvPTXCompileResult.NVPTXCOMPILE_SUCCESS) {
                throw new PtxException("PTX module " + what + " does not assemble for " + gpuName + " ("
                        + nvPTXCompileResult.stringFor(rc) + "): " + errorLog(h));
            }
            long[] size = {0};
            check(nvPTXCompilerGetCompiledProgramSize(h, size), "nvPTXCompilerGetCompiledProgramSize");
            byte[] cubin = new byte[(int) size[0]];
            check(nvPTXCompilerGetCompiledProgram(h, cubin), "nvPTXCompilerGetCompiledProgram");
            return cubin;
        } finally {
            nvPTXCompilerDestroy(h);
        }
    }

    private static String errorLog(nvPTXCompilerHandle h) {
        long[] size = {0};
        if (nvPTXCompilerGetErrorLogSize(h, size) != nvPTXCompileResult.NVPTXCOMPILE_SUCCESS || size[0] <= 0) {
            return "(no log)";
        }
        byte[] log = new byte[(int) size[0]];
        nvPTXCompilerGetErrorLog(h, log);
        int n = 0;
        while (n < log.length && log[n] != 0) {
            n++;
        }
        return new String(log, 0, n, StandardCharsets.UTF_8).trim();
    }

    private static void check(int rc, String call) {
        if (rc != nvPTXCompileResult.NVPTXCOMPILE_SUCCESS) {
            throw new IllegalStateException(call + " failed: " + nvPTXCompileResult.stringFor(rc));
        }
    }
}
