package dev.poniard.scheduler.stream.cuda;

import static jcuda.driver.JCudaDriver.cuDeviceGet;
import static jcuda.driver.JCudaDriver.cuDeviceGetAttribute;
import static jcuda.driver.JCudaDriver.cuDeviceGetCount;
import static jcuda.driver.JCudaDriver.cuDeviceGetName;
import static jcuda.driver.JCudaDriver.cuDeviceTotalMem;
import static jcuda.driver.JCudaDriver.cuDriverGetVersion;
import static jcuda.driver.JCudaDriver.cuInit;

import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.List;
import jcuda.driver.CUdevice;
import jcuda.driver.CUdevice_attribute;
import jcuda.driver.CUresult;

/** The JCuda calls of detection; only {@link CudaDevices} calls this, inside a catch of linkage errors. */
final class CudaProbe {
    private CudaProbe() {
    }

    static CudaDevices.Detection run() {
        int rc = cuInit(0);
        if (rc != CUresult.CUDA_SUCCESS) {
            return CudaDevices.Detection.none("cuInit failed with " + CUresult.stringFor(rc)
                    + " (no GPU, or a driver too old or not loaded; nvidia-smi says more)");
        }
        int[] version = {0};
        cuDriverGetVersion(version);
        int[] count = {0};
        rc = cuDeviceGetCount(count);
        if (rc != CUresult.CUDA_SUCCESS || count[0] == 0) {
            return CudaDevices.Detection.none("the driver reports no CUDA device ("
                    + (rc == CUresult.CUDA_SUCCESS ? "0 devices" : CUresult.stringFor(rc)) + ")");
        }
        List<String> devices = new ArrayList<>();
        for (int i = 0; i < count[0]; i++) {
            devices.add(describe(i));
        }
        return new CudaDevices.Detection(true, List.copyOf(devices), version[0], "");
    }

    static String describe(int ordinal) {
        CUdevice dev = new CUdevice();
        CudaCalls.check(cuDeviceGet(dev, ordinal), "cuDeviceGet(" + ordinal + ")");
        byte[] name = new byte[256];
        cuDeviceGetName(name, name.length, dev);
        int n = 0;
        while (n < name.length && name[n] != 0) {
            n++;
        }
        long[] mem = {0};
        cuDeviceTotalMem(mem, dev);
        return "cuda:" + ordinal + " " + new String(name, 0, n, StandardCharsets.UTF_8) + " (sm_"
                + attribute(dev, CUdevice_attribute.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR)
                + attribute(dev, CUdevice_attribute.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR) + ", "
                + attribute(dev, CUdevice_attribute.CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT) + " SMs, "
                + (mem[0] >> 20) + " MiB, " + attribute(dev, CUdevice_attribute.CU_DEVICE_ATTRIBUTE_ASYNC_ENGINE_COUNT)
                + " copy engines)";
    }

    static int attribute(CUdevice dev, int attribute) {
        int[] v = {0};
        CudaCalls.check(cuDeviceGetAttribute(v, attribute, dev), "cuDeviceGetAttribute(" + attribute + ")");
        return v[0];
    }
}
