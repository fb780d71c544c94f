package dev.poniard.linalg.device;

import static org.junit.jupiter.api.Assertions.assertInstanceOf;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import org.junit.jupiter.api.Test;

class CublasTest {
    /**
     * Where libcublas is missing (the development machines), loading JCublas2 is an {@link UnsatisfiedLinkError}
     * the first time and a {@link NoClassDefFoundError} after: both must read "no cuBLAS", every time.
     */
    @Test
    void shouldReportAMissingCublasAsAClearErrorEveryTime() {
        try {
            Cublas.requireLibrary();
            System.out.println("cuBLAS loaded: the missing-library path is not exercised on this machine");
            Cublas.requireLibrary();
        } catch (IllegalStateException first) {
            assertTrue(first.getMessage().startsWith("no cuBLAS: "), first.getMessage());
            assertInstanceOf(LinkageError.class, first.getCause());
            IllegalStateException again = assertThrows(IllegalStateException.class, Cublas::requireLibrary);
            assertTrue(again.getMessage().startsWith("no cuBLAS: "), again.getMessage());
            System.out.println(first.getMessage());
        }
    }
}
