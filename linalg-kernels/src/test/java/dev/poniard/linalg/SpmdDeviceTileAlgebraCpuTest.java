package dev.poniard.linalg;

import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.poniard.linalg.device.DeviceTileAlgebra;
import dev.poniard.linalg.dist.Distribution;
import dev.poniard.scheduler.stream.Device;
import dev.poniard.scheduler.stream.cpu.CpuDevice;
import java.util.List;
import org.junit.jupiter.api.Test;

/** The SPMD device algebra on CPU-emulated devices: one kernel at a time each, so two busy threads in all. */
class SpmdDeviceTileAlgebraCpuTest extends SpmdDeviceTileAlgebraTest {
    @Override
    protected Device device(int rank, long memoryBytes) {
        return CpuDevice.launch(new CpuDevice.Context().name("rank" + rank + "-device").computeStreams(2)
                .computeCapacity(1).copyBytesPerSecond(50e9).memoryBytes(memoryBytes).stagingBytes(64L << 20));
    }

    @Test
    void shouldRefuseSpreadMatricesWithoutACommunicatorAndReplicatedOnes() {
        try (CpuDevice device = CpuDevice.launch(new CpuDevice.Context().computeStreams(1).computeCapacity(1)
                .memoryBytes(1L << 20).stagingBytes(1L << 20));
             DeviceTileAlgebra la = DeviceTileAlgebra.launch(new DeviceTileAlgebra.Context().device(device));
             DistributedMatrix a = DistributedMatrix.spd(DType.F64, 100, 32, 1, GRID_1X2, 0)) {
            IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> la.cholesky(a));
            assertTrue(e.getMessage().contains("Context.communicator(...)"), e.getMessage());
        }
        List<String[]> refused = onEveryRank((comm, la) -> {
            try (DistributedMatrix a = DistributedMatrix.random(DType.F64, 100, 100, 32, 1, GRID_2X1, comm.rank());
                 DistributedMatrix whole = DistributedMatrix.random(DType.F64, 100, 100, 32, 2);
                 DistributedMatrix c = DistributedMatrix.zeros(DType.F64, 100, 100, 32, GRID_2X1, comm.rank())) {
                return new String[] {assertThrows(IllegalArgumentException.class, () -> la.qr(a)).getMessage(),
                        assertThrows(IllegalArgumentException.class, () -> la.gemm(1, a, whole, 0, c)).getMessage()};
            }
        });
        String split = refused.get(0)[0];
        assertTrue(split.contains("splits tile column 0 over ranks") && split.contains("1 x P grid"), split);
        assertTrue(refused.get(0)[1].contains("operands must all be whole or all spread over the ranks"),
                refused.get(0)[1]);
        List<String> messages = onEveryRank((comm, la) -> {
            Distribution layers = Distribution.replicated25d(1, 1, 2, 1);
            try (DistributedMatrix x = DistributedMatrix.random(DType.F64, 64, 64, 32, 1, layers, comm.rank());
                 DistributedMatrix y = DistributedMatrix.random(DType.F64, 64, 64, 32, 2, layers, comm.rank());
                 DistributedMatrix z = DistributedMatrix.zeros(DType.F64, 64, 64, 32, layers, comm.rank())) {
                return assertThrows(IllegalArgumentException.class, () -> la.gemm(1, x, y, 0, z)).getMessage();
            }
        });
        assertTrue(messages.get(0).contains("replicated on 2 layers"), messages.get(0));
    }
}
