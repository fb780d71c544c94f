package dev.poniard.bridge;

import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import org.nd4j.autodiff.samediff.SDVariable;
import org.nd4j.autodiff.samediff.SameDiff;
import org.nd4j.autodiff.samediff.TrainingConfig;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.dataset.api.MultiDataSet;
import org.nd4j.linalg.indexing.INDArrayIndex;
import org.nd4j.linalg.indexing.NDArrayIndex;

/** Global batches as placeholder maps: validation, contiguous slices along the batch dimension, DataSet mapping. */
final class Batches {
    private Batches() {
    }

    /**
     * The number of examples: the common first dimension of every placeholder not in {@code unsharded}.
     *
     * @throws IllegalArgumentException naming a key that is not a placeholder or a placeholder whose rows disagree
     */
    static long rows(SameDiff sd, Map<String, INDArray> batch, Set<String> unsharded) {
        long n = -1;
        String first = null;
        for (Map.Entry<String, INDArray> e : batch.entrySet()) {
            if (!sd.hasVariable(e.getKey()) || !sd.getVariable(e.getKey()).isPlaceHolder()) {
                throw new IllegalArgumentException("'" + e.getKey() + "' is not a placeholder of the graph; placeholders: "
                        + placeholderNames(sd));
            }
            if (unsharded.contains(e.getKey())) {
                continue;
            }
            INDArray a = e.getValue();
            if (a.rank() == 0) {
                throw new IllegalArgumentException("placeholder '" + e.getKey() + "' is a scalar and cannot be split "
                        + "along a batch dimension; declare it with Context.unsharded(\"" + e.getKey() + "\")");
            }
            if (n < 0) {
                n = a.size(0);
                first = e.getKey();
            } else if (a.size(0) != n) {
                throw new IllegalArgumentException("placeholder '" + e.getKey() + "' has " + a.size(0) + " rows but '" + first
                        + "' has " + n + ": every sharded placeholder needs the batch as its first dimension (declare "
                        + "others with Context.unsharded)");
            }
        }
        if (n < 1) {
            throw new IllegalArgumentException("the batch has no examples (no sharded placeholder with rows): got "
                    + batch.keySet());
        }
        return n;
    }

    /** Splits n examples into {@code parts} contiguous ranges whose sizes differ by at most one (none empty). */
    static long[] bounds(long n, int parts) {
        int p = (int) Math.min(parts, n);
        long[] b = new long[p + 1];
        for (int i = 0; i < p; i++) {
            b[i + 1] = b[i] + n / p + (i < n % p ? 1 : 0);
        }
        return b;
    }

    /** Rows {@code [from, to)} of every sharded placeholder (contiguous copies); unsharded ones whole. */
    static Map<String, INDArray> slice(Map<String, INDArray> batch, Set<String> unsharded, long from, long to) {
        Map<String, INDArray> shard = new LinkedHashMap<>();
        for (Map.Entry<String, INDArray> e : batch.entrySet()) {
            INDArray a = e.getValue();
            if (unsharded.contains(e.getKey())) {
                shard.put(e.getKey(), a);
            } else {
                INDArrayIndex[] idx = new INDArrayIndex[a.rank()];
                idx[0] = NDArrayIndex.interval(from, to);
                for (int d = 1; d < idx.length; d++) {
                    idx[d] = NDArrayIndex.all();
                }
                shard.put(e.getKey(), a.get(idx).dup(a.ordering()));
            }
        }
        return shard;
    }

    /** A MultiDataSet as placeholders, by the training config's feature, label and mask mappings. */
    static Map<String, INDArray> placeholders(SameDiff sd, MultiDataSet ds) {
        TrainingConfig tc = sd.getTrainingConfig();
        Map<String, INDArray> m = new LinkedHashMap<>();
        put(m, tc.getDataSetFeatureMapping(), ds.getFeatures(), "feature");
        put(m, tc.getDataSetLabelMapping(), ds.getLabels(), "label");
        if (tc.getDataSetFeatureMaskMapping() != null) {
            put(m, tc.getDataSetFeatureMaskMapping(), ds.getFeaturesMaskArrays(), "feature mask");
        }
        if (tc.getDataSetLabelMaskMapping() != null) {
            put(m, tc.getDataSetLabelMaskMapping(), ds.getLabelsMaskArrays(), "label mask");
        }
        return m;
    }

    private static void put(Map<String, INDArray> m, List<String> names, INDArray[] arrays, String what) {
        int have = arrays == null ? 0 : arrays.length;
        int want = names == null ? 0 : names.size();
        if (have != want) {
            throw new IllegalArgumentException("the batch has " + have + " " + what + " arrays but the training config maps "
                    + want + " (" + names + "): set TrainingConfig's dataSet" + (what.startsWith("feature") ? "Feature" : "Label")
                    + "Mapping to match");
        }
        for (int i = 0; i < want; i++) {
            if (arrays[i] != null) {
                m.put(names.get(i), arrays[i]);
            }
        }
    }

    private static List<String> placeholderNames(SameDiff sd) {
        List<String> names = new ArrayList<>();
        for (SDVariable v : sd.variables()) {
            if (v.isPlaceHolder()) {
                names.add(v.name());
            }
        }
        return names;
    }
}
