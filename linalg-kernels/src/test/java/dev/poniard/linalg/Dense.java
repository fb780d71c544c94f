package dev.poniard.linalg;

import dev.poniard.linalg.tile.Tile;

/** Straightforward column-major reference computations for the tests. */
final class Dense {
    private Dense() {
    }

    /** C = op(A) op(B), A m x k (or k x m), column-major with leading dimensions = row counts. */
    static double[] mul(double[] a, int ar, int ac, boolean ta, double[] b, int br, int bc, boolean tb) {
        int m = ta ? ac : ar;
        int k = ta ? ar : ac;
        int n = tb ? br : bc;
        double[] c = new double[m * n];
        for (int j = 0; j < n; j++) {
            for (int l = 0; l < k; l++) {
                double y = tb ? b[l * br + j] : b[j * br + l];
                if (y == 0) {
                    continue;
                }
                for (int i = 0; i < m; i++) {
                    double x = ta ? a[i * ar + l] : a[l * ar + i];
                    c[j * m + i] += x * y;
                }
            }
        }
        return c;
    }

    /** A tile's entries, column-major. */
    static double[] values(Tile t) {
        double[] v = new double[t.size()];
        for (int i = 0; i < v.length; i++) {
            v[i] = t.getFlat(i);
        }
        return v;
    }

    static double frob(double[] a) {
        double s = 0;
        for (double v : a) {
            s += v * v;
        }
        return Math.sqrt(s);
    }

    static double frobDiff(double[] a, double[] b) {
        double s = 0;
        for (int i = 0; i < a.length; i++) {
            double d = a[i] - b[i];
            s += d * d;
        }
        return Math.sqrt(s);
    }

    /** Lower triangle (with diagonal, or unit diagonal) of an m x n column-major matrix, as m x min(m,n). */
    static double[] lower(double[] a, int m, int n, boolean unit) {
        int k = Math.min(m, n);
        double[] l = new double[m * k];
        for (int j = 0; j < k; j++) {
            for (int i = j; i < m; i++) {
                l[j * m + i] = i == j && unit ? 1 : a[j * m + i];
            }
        }
        return l;
    }

    /** Upper triangle of the first min(m,n) rows, as min(m,n) x n. */
    static double[] upper(double[] a, int m, int n) {
        int k = Math.min(m, n);
        double[] u = new double[k * n];
        for (int j = 0; j < n; j++) {
            for (int i = 0; i <= Math.min(j, k - 1); i++) {
                u[j * k + i] = a[j * m + i];
            }
        }
        return u;
    }

    /**
     * ||PA - LU||_F for the packed factors of an m x n LU (unit lower L below the diagonal, U on and above it) with
     * row permutation {@code perm}: row i of PA is row perm[i] of A.
     */
    static double luResidual(double[] a, double[] factors, int m, int n, int[] perm) {
        int k = Math.min(m, n);
        double[] lu = mul(lower(factors, m, n, true), m, k, false, upper(factors, m, n), k, n, false);
        double[] pa = new double[m * n];
        for (int j = 0; j < n; j++) {
            for (int i = 0; i < m; i++) {
                pa[j * m + i] = a[j * m + perm[i]];
            }
        }
        return frobDiff(pa, lu);
    }

    /** A fresh seed for a test's random matrices, printed so that a failure can be replayed. */
    static long seed(String test) {
        long seed = System.nanoTime();
        System.out.println(test + " seed " + seed);
        return seed;
    }

    static double[] identity(int n) {
        double[] a = new double[n * n];
        for (int i = 0; i < n; i++) {
            a[i * n + i] = 1;
        }
        return a;
    }
}
