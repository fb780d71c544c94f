package dev.poniard.scheduler.comm;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

import java.nio.charset.StandardCharsets;
import java.util.concurrent.CompletableFuture;

import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

@Timeout(60)
class RendezvousTest {

    @Test
    void shouldRefuseAWrongSecretWithAClearMessage() {
        final RendezvousException e = assertThrows(RendezvousException.class, () ->
            LocalCluster.launch(2, ctx -> {
                ctx.alpha(1e-6).beta(1e-9).gamma(1e-9).rendezvousTimeoutMs(3000);
                if (ctx.rank() == 1) {
                    ctx.secret("not-the-secret".getBytes(StandardCharsets.UTF_8));
                }
            }));
        assertTrue(e.getMessage().contains("secret"), e.getMessage());
    }

    @Test
    void shouldRefuseAProtocolVersionMismatch() {
        final RendezvousException e = assertThrows(RendezvousException.class, () ->
            LocalCluster.launch(2, ctx -> {
                ctx.alpha(1e-6).beta(1e-9).gamma(1e-9).rendezvousTimeoutMs(3000);
                if (ctx.rank() == 1) {
                    ctx.protocolVersion(Rendezvous.VERSION + 1);
                }
            }));
        assertTrue(e.getMessage().contains("version"), e.getMessage());
    }

    @Test
    void shouldMeasureTheSameCostModelOnEveryRank() {
        try (LocalCluster cluster = LocalCluster.launch(3, ctx -> { })) {
            final CostModel m0 = cluster.comm(0).costModel();
            for (int r = 1; r < 3; r++) {
                assertTrue(m0.equals(cluster.comm(r).costModel()), "rank " + r + " differs: " + m0 + " vs "
                    + cluster.comm(r).costModel());
            }
            assertTrue(m0.alpha() > 0 && m0.beta() > 0, m0.toString());
            // Measured again on demand (after a warm-up), collectively: every rank installs the same new figures.
            final java.util.List<CostModel> again = cluster.run(Communicator::measureCostModel);
            for (int r = 0; r < 3; r++) {
                assertEquals(again.get(0), again.get(r), "rank " + r);
                assertEquals(again.get(0), cluster.comm(r).costModel(), "rank " + r + " installed it");
            }
            assertTrue(again.get(0).alpha() > 0 && again.get(0).beta() > 0 && again.get(0).gamma() > 0,
                again.get(0).toString());
        }
        CompletableFuture.completedFuture(null).join();
    }
}
