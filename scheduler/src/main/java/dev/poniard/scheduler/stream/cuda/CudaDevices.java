package dev.poniard.scheduler.stream.cuda;

import java.util.List;

/**
 * Finds CUDA devices without ever failing: on a machine without a GPU or without the NVIDIA driver,
 * {@link #detect()} returns a detection that says "no CUDA device" and why.
 *
 * <p>JCuda's driver bindings link against {@code libcuda.so.1}; without it, merely initialising the class
 * {@code JCudaDriver} throws {@link UnsatisfiedLinkError} (and every later use {@link NoClassDefFoundError}).
 * So no JCuda class is touched here: {@link CudaProbe} does the work, and its linkage errors are caught.
 * {@code java -cp ... dev.poniard.scheduler.stream.cuda.CudaDevices} prints what was found.
 */
public final class CudaDevices {
    /**
     * What was found.
     *
     * @param devices one line per device (name, compute capability, SMs, memory), by ordinal
     * @param driverVersion the driver's CUDA version as the driver API reports it (12060 = 12.6), 0 if unknown
     * @param reason why no device is available; empty when one is
     */
    public record Detection(boolean available, List<String> devices, int driverVersion, String reason) {
        public int count() {
            return devices.size();
        }

        static Detection none(String reason) {
            return new Detection(false, List.of(), 0, reason);
        }

        @Override
        public String toString() {
            return available ? devices.size() + " CUDA device(s), driver " + driverVersion / 1000 + "."
                    + driverVersion % 1000 / 10 + ": " + String.join("; ", devices) : "no CUDA device: " + reason;
        }
    }

    private static volatile Detection cached;

    private CudaDevices() {
    }

    /** The devices of this machine, probed once per JVM (the answer does not change while it runs). */
    public static Detection detect() {
        Detection d = cached;
        if (d == null) {
            synchronized (CudaDevices.class) {
                d = cached;
                if (d == null) {
                    d = probe();
                    cached = d;
                }
            }
        }
        return d;
    }

    /** Probes now, without the cache; never throws. */
    static Detection probe() {
        if (Boolean.getBoolean("poniard.cuda.disable")) {
            return Detection.none("disabled by -Dponiard.cuda.disable=true");
        }
        try {
            return CudaProbe.run();
        } catch (LinkageError e) {
            return Detection.none("the CUDA driver library could not be loaded (" + firstLine(e) + "); a GPU run needs"
                    + " a host with an NVIDIA driver (libcuda.so.1) and JCuda's jcuda-natives jar on the class path");
        } catch (RuntimeException e) {
            return Detection.none("probing the CUDA driver failed: " + firstLine(e));
        }
    }

    static String firstLine(Throwable e) {
        String s = e.toString();
        int nl = s.indexOf('\n');
        return nl < 0 ? s : s.substring(0, nl);
    }

    /** Prints the detection; exit status 0 with a device, 3 without. */
    public static void main(String[] args) {
        Detection d = detect();
        System.out.println(d);
        System.exit(d.available() ? 0 : 3);
    }
}
