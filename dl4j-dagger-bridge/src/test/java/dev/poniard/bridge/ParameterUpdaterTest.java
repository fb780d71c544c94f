package dev.poniard.bridge;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotEquals;

import java.util.List;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.nd4j.autodiff.samediff.SameDiff;
import org.nd4j.autodiff.samediff.TrainingConfig;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;
import org.nd4j.linalg.learning.config.Adam;

@Timeout(value = 60, unit = TimeUnit.SECONDS)
class ParameterUpdaterTest {
    private static SameDiff graph() {
        SameDiff sd = SameDiff.create();
        sd.placeHolder("in", DataType.FLOAT, -1, 5);
        sd.var("w", Nd4j.linspace(DataType.FLOAT, -1, 0.1, 15).reshape('c', 5, 3));
        sd.setTrainingConfig(TrainingConfig.builder().updater(new Adam(0.05)).l2(1e-2).dataSetFeatureMapping("in")
                .markLabelsUnused().build());
        return sd;
    }

    /** SameDiff hands out matmul weight gradients in 'f' order; the update must not depend on the layout. */
    @Test
    void shouldUpdateAParameterTheSameWhetherItsGradientIsLaidOutLikeItOrNot() {
        SameDiff a = graph();
        SameDiff b = graph();
        ParameterUpdater ua = new ParameterUpdater(a, List.of("w"));
        ParameterUpdater ub = new ParameterUpdater(b, List.of("w"));
        INDArray start = a.getArrForVarName("w").dup();
        Nd4j.getRandom().setSeed(11);
        for (int it = 0; it < 3; it++) {
            INDArray g = Nd4j.rand(DataType.FLOAT, 5, 3).subi(0.5);
            ua.apply("w", a.getArrForVarName("w"), g.dup('c'), a.getTrainingConfig(), it, 0);
            ub.apply("w", b.getArrForVarName("w"), g.dup('f'), b.getTrainingConfig(), it, 0);
            assertEquals(a.getArrForVarName("w"), b.getArrForVarName("w"), "after update " + it);
        }
        assertNotEquals(start, a.getArrForVarName("w"), "the updates must have moved the parameter");
        assertEquals('c', b.getArrForVarName("w").ordering());
    }
}
