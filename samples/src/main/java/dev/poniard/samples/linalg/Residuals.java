package dev.poniard.samples.linalg;

/**
 * O(n²) residual checks for dense factorizations on column-major arrays: each compares A x with the
 * factors applied to the same random vector x and scales by ||A|| ||x|| n eps, so values below 10 mean
 * a backward-stable result at any size where an n³ check would cost as much as the factorization.
 */
public final class Residuals {
    private static final double EPS = Math.ulp(1.0) / 2;

    private Residuals() {
    }

    public static double[] vector(int n) {
        java.util.SplittableRandom rnd = new java.util.SplittableRandom(2024);
        double[] x = new double[n];
        for (int i = 0; i < n; i++) {
            x[i] = rnd.nextDouble() - 0.5;
        }
        return x;
    }

    /** y = A x for column-major m x n A. */
    public static double[] matvec(double[] a, int m, int n, double[] x) {
        double[] y = new double[m];
        for (int j = 0; j < n; j++) {
            double xj = x[j];
            int off = j * m;
            for (int i = 0; i < m; i++) {
                y[i] += a[off + i] * xj;
            }
        }
        return y;
    }

    /** y = U x with U the upper triangle of column-major n x n a. */
    public static double[] upperMatvec(double[] a, int n, double[] x) {
        double[] y = new double[n];
        for (int j = 0; j < n; j++) {
            double xj = x[j];
            for (int i = 0; i <= j; i++) {
                y[i] += a[j * n + i] * xj;
            }
        }
        return y;
    }

    /** ||A x − L (L^T x)|| / (||A|| ||x|| n eps), L the lower triangle of f. */
    public static double choleskyResidual(double[] a, double[] f, int n) {
        double[] x = vector(n);
        double[] y = new double[n];
        for (int j = 0; j < n; j++) {
            double s = 0;
            for (int i = j; i < n; i++) {
                s += f[j * n + i] * x[i];
            }
            y[j] = s;
        }
        double[] z = new double[n];
        for (int j = 0; j < n; j++) {
            for (int i = j; i < n; i++) {
                z[i] += f[j * n + i] * y[j];
            }
        }
        return diff(matvec(a, n, n, x), z) / (norm(a) * norm(x) * n * EPS);
    }

    /** ||P A x − L (U x)|| / (||A|| ||x|| n eps), pivots 0-based LAPACK style. */
    public static double luResidual(double[] a, double[] f, int[] piv, int n) {
        double[] x = vector(n);
        double[] ax = matvec(a, n, n, x);
        for (int r = 0; r < piv.length; r++) {
            double t = ax[r];
            ax[r] = ax[piv[r]];
            ax[piv[r]] = t;
        }
        double[] ux = upperMatvec(f, n, x);
        double[] lux = ux.clone();
        for (int j = 0; j < n; j++) {
            for (int i = j + 1; i < n; i++) {
                lux[i] += f[j * n + i] * ux[j];
            }
        }
        return diff(ax, lux) / (norm(a) * norm(x) * n * EPS);
    }

    /** ||A x − b|| / (||A|| ||x|| n eps) for a solution x of A x = b, A column-major n x n. */
    public static double solveResidual(double[] a, double[] x, double[] b, int n) {
        return diff(matvec(a, n, n, x), b) / (norm(a) * norm(x) * n * EPS);
    }

    public static double norm(double[] v) {
        double s = 0;
        for (double d : v) {
            s += d * d;
        }
        return Math.sqrt(s);
    }

    public static double diff(double[] a, double[] b) {
        double s = 0;
        for (int i = 0; i < a.length; i++) {
            double d = a[i] - b[i];
            s += d * d;
        }
        return Math.sqrt(s);
    }
}
