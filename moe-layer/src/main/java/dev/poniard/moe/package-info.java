/**
 * A Mixture-of-Experts layer for DL4J models whose expert work is rebalanced at runtime by the scheduler.
 */
package dev.poniard.moe;
