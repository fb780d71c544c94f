package dev.poniard.bridge;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;
import org.nd4j.linalg.indexing.NDArrayIndex;

@Timeout(value = 60, unit = TimeUnit.SECONDS)
class AccumulateTest {
    /** The element-wise reference, computed in double whatever the arrays' type. */
    private static double[] expected(INDArray y, double w, INDArray x) {
        double[] e = new double[(int) y.length()];
        for (int i = 0; i < e.length; i++) {
            e[i] = y.getDouble(i / y.columns(), i % y.columns()) + w * x.getDouble(i / x.columns(), i % x.columns());
        }
        return e;
    }

    private static void assertElements(double[] want, INDArray got, double tol) {
        for (int i = 0; i < want.length; i++) {
            assertEquals(want[i], got.getDouble(i / got.columns(), i % got.columns()), tol, "element " + i);
        }
    }

    @ParameterizedTest(name = "{0} x in ''{1}'' into ''{2}''")
    @CsvSource({"FLOAT, c, c", "FLOAT, f, f", "FLOAT, f, c", "FLOAT, c, f", "DOUBLE, c, c", "DOUBLE, f, c"})
    void shouldAddTheScaledArrayElementByElementWhateverTheLayouts(DataType type, char xOrder, char yOrder) {
        Nd4j.getRandom().setSeed(3);
        INDArray x = Nd4j.rand(type, 7, 5).dup(xOrder);
        INDArray y = Nd4j.rand(type, 7, 5).dup(yOrder);
        INDArray xBefore = x.dup();
        double[] want = expected(y, 0.375, x);
        Accumulate.addScaled(y, 0.375, x);
        assertElements(want, y, type == DataType.FLOAT ? 1e-6 : 1e-14);
        assertEquals(xBefore, x, "the added array must not change");
    }

    @Test
    void shouldAddIntoAViewWithoutTouchingTheRestOfItsBuffer() {
        INDArray flat = Nd4j.rand(DataType.FLOAT, 1, 100);
        INDArray before = flat.dup();
        INDArray view = flat.get(NDArrayIndex.point(0), NDArrayIndex.interval(30, 30 + 4 * 6)).reshape('c', 4, 6);
        assertTrue(view.isView());
        INDArray x = Nd4j.rand(DataType.FLOAT, 4, 6);
        double[] want = expected(view, -2.0, x);
        Accumulate.addScaled(view, -2.0, x);
        assertElements(want, view, 1e-6);
        for (int i = 0; i < 100; i++) {
            if (i < 30 || i >= 54) {
                assertEquals(before.getFloat(0, i), flat.getFloat(0, i), "element " + i + " lies outside the view");
            }
        }
    }

    @Test
    void shouldCastAnArrayOfAnotherTypeIntoTheAccumulatorsType() {
        INDArray x = Nd4j.rand(DataType.FLOAT, 3, 4);
        INDArray y = Nd4j.rand(DataType.DOUBLE, 3, 4);
        double[] want = expected(y, 0.5, x);
        Accumulate.addScaled(y, 0.5, x);
        assertElements(want, y, 1e-7);
        assertEquals(DataType.DOUBLE, y.dataType());
    }

    @Test
    void shouldRefuseArraysOfDifferentShapesNamingBoth() {
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> Accumulate.addScaled(Nd4j.zeros(DataType.FLOAT, 4, 6), 1.0, Nd4j.zeros(DataType.FLOAT, 6, 4)));
        assertTrue(e.getMessage().contains("[6, 4]") && e.getMessage().contains("[4, 6]"), e.getMessage());
    }
}
