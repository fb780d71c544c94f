/**
 * Distributed dense linear algebra: block-cyclic distributions and tile factorizations (GEMM, Cholesky, LU, QR) written as scheduler DAGs.
 */
package dev.poniard.linalg;
