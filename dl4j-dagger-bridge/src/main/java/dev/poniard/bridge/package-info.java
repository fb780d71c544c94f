/**
 * SameDiff graphs as scheduler DAGs: data-parallel batch sharding and pipeline (model-parallel) stages.
 */
package dev.poniard.bridge;
