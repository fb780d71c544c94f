/**
 * A drop-in data-parallel trainer for DL4J and SameDiff models, with gradients all-reduced across workers and ranks.
 */
package dev.poniard.trainer;
