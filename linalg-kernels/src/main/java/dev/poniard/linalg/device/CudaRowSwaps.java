package dev.poniard.linalg.device;

import static jcuda.driver.JCudaDriver.cuLaunchKernel;

import dev.poniard.scheduler.stream.Buffer;
import dev.poniard.scheduler.stream.cuda.CudaCallSite;
import dev.poniard.scheduler.stream.cuda.CudaDevice;
import java.util.List;
import jcuda.Pointer;
import jcuda.driver.CUdeviceptr;
import jcuda.driver.CUfunction;
import jcuda.driver.CUresult;

/**
 * The CUDA side of {@link DeviceTileKernels#laswp}: launches the shipped {@code poniard_laswp} PTX on a call site's
 * stream. Only a CUDA device's streams reach this class, so a host without the JCuda natives never loads it.
 */
final class CudaRowSwaps {
    private static final int BLOCK = 128;

    private CudaRowSwaps() {
    }

    /**
     * Enqueues the interchanges of {@code npiv} rows (pivots in the device buffer {@code piv}, 0-based from the
     * column's first row) on the column of tiles {@code column}, each {@code nb} rows high but the last.
     */
    static void launch(CudaDevice device, CudaCallSite site, List<Buffer> column, int nb, int lastRows, int cols,
                       int elemBytes, Buffer piv, int npiv) {
        CUfunction f = device.function(DeviceTileKernels.LASWP_MODULE, DeviceTileKernels.LASWP_ENTRY);
        // The tile addresses travel by value in a fixed-size parameter array; the unused slots stay null.
        CUdeviceptr[] tiles = new CUdeviceptr[DeviceTileKernels.LASWP_MAX_TILES];
        for (int i = 0; i < tiles.length; i++) {
            tiles[i] = i < column.size() ? site.pointer(column.get(i)) : new CUdeviceptr();
        }
        Pointer params = Pointer.to(Pointer.to(tiles), Pointer.to(site.pointer(piv)), Pointer.to(new int[] {npiv}),
                Pointer.to(new int[] {nb}), Pointer.to(new int[] {lastRows}), Pointer.to(new int[] {column.size()}),
                Pointer.to(new int[] {cols}), Pointer.to(new int[] {elemBytes}));
        int rc = cuLaunchKernel(f, (cols + BLOCK - 1) / BLOCK, 1, 1, BLOCK, 1, 1, 0, site.handle(), params, null);
        if (rc != CUresult.CUDA_SUCCESS) {
            throw new IllegalStateException("cuLaunchKernel(" + DeviceTileKernels.LASWP_ENTRY + ") on " + site.stream()
                    + " failed: " + CUresult.stringFor(rc) + " (" + rc + ")");
        }
    }
}
