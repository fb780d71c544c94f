/**
 * A Mixture-of-Experts layer for DL4J models whose expert work is rebalanced at runtime by the scheduler.
 *
 * <p>{@link dev.poniard.moe.MoeLayer} is the configuration (usable in {@code MultiLayerNetwork} and
 * {@code ComputationGraph}, serialised with the model), {@link dev.poniard.moe.MoeLayerImpl} the layer,
 * {@link dev.poniard.moe.RouterType} the choice of router, {@link dev.poniard.moe.RoutingPlan} the discrete
 * routing (top-k with optional selection biases, expert choice), {@code SoftMoe} Soft MoE's mixing,
 * {@link dev.poniard.moe.ExpertExecutor} the (expert, chunk) task runner, {@link dev.poniard.moe.MoeMetrics} and
 * {@link dev.poniard.moe.MoeMetricsListener} the load statistics and {@link dev.poniard.moe.MoeModels} the helpers
 * that find a model's MoE layers.
 *
 * <p>Expert parallelism across ranks: {@code MoeModels.useCommunicator(model, comm)} on each rank's replica
 * ({@link dev.poniard.moe.ExpertParallel}: expert e owned by rank e mod R, tokens exchanged with {@code allToAllV},
 * hot experts shadowed from the step's global load; {@link dev.poniard.moe.ExpertParallelStats} in the metrics).
 */
package dev.poniard.moe;
