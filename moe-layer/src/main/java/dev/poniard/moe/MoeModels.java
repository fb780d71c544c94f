package dev.poniard.moe;

import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import org.deeplearning4j.nn.api.Layer;
import org.deeplearning4j.nn.api.Model;
import org.deeplearning4j.nn.graph.ComputationGraph;
import org.deeplearning4j.nn.multilayer.MultiLayerNetwork;

/**
 * Finds the MoE layers of a model: to close their schedulers (DL4J's {@code close()} on a model does not reach its
 * layers), to share one executor among them, to run their experts across ranks, and to read their metrics.
 */
public final class MoeModels {
    private MoeModels() {
    }

    /** The model's MoE layers in layer order. */
    public static List<MoeLayerImpl> layers(Model model) {
        Layer[] all;
        if (model instanceof MultiLayerNetwork mln) {
            all = mln.getLayers();
        } else if (model instanceof ComputationGraph cg) {
            all = cg.getLayers();
        } else if (model instanceof MoeLayerImpl l) {
            return List.of(l);
        } else {
            return List.of();
        }
        List<MoeLayerImpl> out = new ArrayList<>();
        if (all != null) {
            for (Layer l : all) {
                if (l instanceof MoeLayerImpl m) {
                    out.add(m);
                }
            }
        }
        return out;
    }

    /** Closes every scheduler the model's MoE layers launched themselves. */
    public static void close(Model model) {
        for (MoeLayerImpl l : layers(model)) {
            l.close();
        }
    }

    /** Runs every MoE layer of the model on {@code executor} (the caller keeps ownership). */
    public static void useExecutor(Model model, ExpertExecutor executor) {
        for (MoeLayerImpl l : layers(model)) {
            l.useExecutor(executor);
        }
    }

    /**
     * Runs the experts of every MoE layer of this model replica across the ranks of {@code comm} (expert
     * parallelism with default shadowing, see {@link ExpertParallel}); null returns to single-process. One replica
     * per rank: binding a second live replica to the same communicator is refused.
     */
    public static void useCommunicator(Model model, dev.poniard.scheduler.comm.Communicator comm) {
        useCommunicator(model, comm, new ExpertParallel.Context());
    }

    /** As {@link #useCommunicator(Model, dev.poniard.scheduler.comm.Communicator)}, with shadowing settings. */
    public static void useCommunicator(Model model, dev.poniard.scheduler.comm.Communicator comm,
                                       ExpertParallel.Context ctx) {
        List<MoeLayerImpl> moe = layers(model);
        if (comm != null && moe.isEmpty()) {
            throw new IllegalArgumentException("the model has no MoE layer to run across ranks (layers are created by "
                    + "init(): call useCommunicator after model.init())");
        }
        if (comm != null) {
            for (MoeLayerImpl l : moe) {
                l.checkParallelRouter(); // refuse before any layer is bound
            }
        }
        for (MoeLayerImpl l : moe) {
            l.useCommunicator(comm, ctx, model);
        }
    }

    /** The last forward pass's metrics of each MoE layer, keyed by layer index; layers not run yet are absent. */
    public static Map<Integer, MoeMetrics> metrics(Model model) {
        Map<Integer, MoeMetrics> out = new LinkedHashMap<>();
        for (MoeLayerImpl l : layers(model)) {
            MoeMetrics m = l.lastMetrics();
            if (m != null) {
                out.put(l.getIndex(), m);
            }
        }
        return out;
    }
}
