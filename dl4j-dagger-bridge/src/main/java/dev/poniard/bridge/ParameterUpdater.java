package dev.poniard.bridge;

import java.util.HashMap;
import java.util.List;
import java.util.Map;
import org.nd4j.autodiff.samediff.SameDiff;
import org.nd4j.autodiff.samediff.TrainingConfig;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;
import org.nd4j.linalg.learning.GradientUpdater;
import org.nd4j.linalg.learning.config.IUpdater;
import org.nd4j.linalg.learning.regularization.Regularization;

/**
 * Applies a combined gradient to parameters exactly as SameDiff's own training does after each gradient (its
 * {@code TrainingSession}): regularization before the updater, the per-parameter {@link GradientUpdater}, regularization
 * after it, then {@code param -= update} ({@code +=} when the training config maximises). One {@link GradientUpdater}
 * per parameter, created and initialised as SameDiff's {@code initializeTraining} does, from
 * {@code getTrainingConfig().getUpdater()}.
 *
 * <p>Instances for disjoint parameter sets may be used from different threads; one parameter's updater must only be
 * used by one thread at a time.
 */
final class ParameterUpdater {
    private final Map<String, GradientUpdater<?>> updaters = new HashMap<>();
    /** Per parameter: its updater's state view (null for a stateless updater such as SGD). */
    private final Map<String, INDArray> states = new HashMap<>();
    /** Per parameter: a buffer in the parameter's layout, for gradients that come in the other one. */
    private final Map<String, INDArray> relaid = new HashMap<>();

    /** Creates updater state for {@code params}, shaped like their arrays in {@code sd}. */
    ParameterUpdater(SameDiff sd, List<String> params) {
        this(sd, params, null, Map.of());
    }

    /**
     * Updater state for {@code params}: a parameter that one of {@code previous} (null entries allowed, or null)
     * holds keeps that state (shared, so only one of the two may be used afterwards), one in {@code carried} starts
     * from a copy of that state (another process's, {@link #state}), the others get new state.
     */
    ParameterUpdater(SameDiff sd, List<String> params, ParameterUpdater[] previous, Map<String, INDArray> carried) {
        IUpdater updater = sd.getTrainingConfig().getUpdater();
        for (String name : params) {
            ParameterUpdater holder = null;
            for (int i = 0; previous != null && i < previous.length && holder == null; i++) {
                holder = previous[i] != null && previous[i].updaters.containsKey(name) ? previous[i] : null;
            }
            if (holder != null) {
                updaters.put(name, holder.updaters.get(name));
                states.put(name, holder.states.get(name));
                continue;
            }
            INDArray arr = sd.getArrForVarName(name);
            long stateSize = updater.stateSize(arr.length());
            INDArray view = stateSize == 0 ? null : Nd4j.createUninitialized(arr.dataType(), 1, stateSize);
            INDArray given = view == null ? null : carried.get(name);
            if (given != null) {
                view.assign(given);
            }
            GradientUpdater<?> gu = updater.instantiate(view, false);
            gu.setStateViewArray(view, arr.shape(), arr.ordering(), given == null);
            updaters.put(name, gu);
            states.put(name, view);
        }
    }

    /** The updater state of parameter {@code name} as one flat array, or null for a stateless updater. */
    INDArray state(String name) {
        return states.get(name);
    }

    /**
     * Updates {@code param} in place with {@code grad} (which may be overwritten by the update) at the given iteration
     * and epoch of {@code tc}. A gradient laid out otherwise than its parameter is copied into the parameter's layout
     * first: the updater's element-wise ops with its state would otherwise each run across layouts, several times
     * slower (SameDiff returns matmul weight gradients in 'f' order).
     */
    void apply(String name, INDArray param, INDArray grad, TrainingConfig tc, int iteration, int epoch) {
        if (grad.ordering() != param.ordering() && grad.rank() > 1) {
            grad = relaid.computeIfAbsent(name, k -> Nd4j.createUninitialized(param.dataType(), param.shape(),
                    param.ordering())).assign(grad);
        }
        IUpdater config = tc.getUpdater();
        List<Regularization> regs = tc.getRegularization() == null ? List.of() : tc.getRegularization();
        double lr = config.hasLearningRate() ? config.getLearningRate(iteration, epoch) : 1.0;
        for (Regularization r : regs) {
            if (r.applyStep() == Regularization.ApplyStep.BEFORE_UPDATER) {
                r.apply(param, grad, lr, iteration, epoch);
            }
        }
        GradientUpdater<?> u = updaters.get(name);
        if (u == null) {
            throw new IllegalArgumentException("no updater state for parameter '" + name + "'");
        }
        u.applyUpdater(grad, iteration, epoch);
        for (Regularization r : regs) {
            if (r.applyStep() == Regularization.ApplyStep.POST_UPDATER) {
                r.apply(param, grad, lr, iteration, epoch);
            }
        }
        if (tc.isMinimize()) {
            param.subi(grad);
        } else {
            param.addi(grad);
        }
    }
}
