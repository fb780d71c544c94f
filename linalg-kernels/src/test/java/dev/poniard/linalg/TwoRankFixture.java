package dev.poniard.linalg;

import dev.poniard.linalg.dist.Distribution;
import dev.poniard.scheduler.comm.Communicator;
import dev.poniard.scheduler.comm.LocalCluster;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;

/**
 * What the SPMD test classes share: one 2-rank {@link LocalCluster} per test class (one JVM, Aeron IPC), started
 * before its first test and closed after its last, the two-rank distributions they draw from, and helpers.
 */
abstract class TwoRankFixture {
    static final Distribution GRID_1X2 = Distribution.blockCyclic2d(1, 2, 1, 1, 1);
    static final Distribution GRID_2X1 = Distribution.blockCyclic2d(2, 1, 1, 1, 1);
    static final Distribution CYCLIC_COLUMNS = Distribution.cyclic1d(Distribution.Axis.COLUMNS, 2, 1);
    static final Distribution CYCLIC_ROWS = Distribution.cyclic1d(Distribution.Axis.ROWS, 2, 1);

    static LocalCluster cluster;

    @BeforeAll
    static void startCluster() {
        cluster = LocalCluster.launch(2);
    }

    @AfterAll
    static void stopCluster() {
        if (cluster != null) {
            cluster.close();
            cluster = null;
        }
    }

    /** The whole matrix on rank 0 as column-major doubles, null elsewhere. */
    static double[] gathered(DistributedMatrix m, Communicator comm) {
        try (DistributedMatrix whole = m.gather(comm, 0)) {
            return whole == null ? null : whole.toColumnMajor();
        }
    }
}
