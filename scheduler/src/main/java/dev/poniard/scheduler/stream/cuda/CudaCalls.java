package dev.poniard.scheduler.stream.cuda;

import jcuda.driver.CUresult;

/** Checks driver API result codes: JCuda's global exception switch is left alone (no global state). */
final class CudaCalls {
    private CudaCalls() {
    }

    static void check(int rc, String call) {
        if (rc != CUresult.CUDA_SUCCESS) {
            throw new CudaFailure(call, rc);
        }
    }

    /** A driver API call that failed; the message names the call and the CUDA error. */
    static final class CudaFailure extends IllegalStateException {
        private static final long serialVersionUID = 1L;
        final int code;

        CudaFailure(String call, int code) {
            super(call + " failed: " + CUresult.stringFor(code) + " (" + code + ")");
            this.code = code;
        }
    }
}
