package dev.poniard.scheduler.comm;

import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.Arguments;
import org.junit.jupiter.params.provider.MethodSource;
import org.junit.jupiter.params.provider.ValueSource;

import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Random;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ConcurrentHashMap;
import java.util.stream.Stream;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * Every collective algorithm against a reference computed in the test, on in-JVM clusters of 2, 3, 4 and 6
 * ranks, with element counts that are not multiples of the chunk or the rank count. Values are small integers
 * so that every reduction order gives exact results; determinism is checked separately with random floats.
 */
@Timeout(120)
class CollectivesTest {
    private static final Map<Integer, LocalCluster> CLUSTERS = new ConcurrentHashMap<>();
    /** 0, 1, fewer than the ranks, one chunk plus a bit, many chunks and not a multiple of anything. */
    private static final int[] COUNTS = {0, 1, 5, 16411, 100_003};

    static LocalCluster cluster(int n) {
        return CLUSTERS.computeIfAbsent(n, LocalCluster::launch);
    }

    @AfterAll
    static void closeClusters() {
        CLUSTERS.values().forEach(LocalCluster::close);
        CLUSTERS.clear();
    }

    static Stream<Arguments> sizesAndAllReduceAlgorithms() {
        final List<Arguments> args = new ArrayList<>();
        for (int n : new int[]{2, 3, 4, 6}) {
            for (Algorithm a : new Algorithm[]{Algorithm.RING, Algorithm.RECURSIVE_DOUBLING, Algorithm.RABENSEIFNER,
                Algorithm.SHARED_MEMORY, Algorithm.AUTO}) {
                args.add(Arguments.of(n, a));
            }
        }
        return args.stream();
    }

    /** The value rank r contributes at element i: small integers, never 0 so PROD stays interesting. */
    static long value(int r, long i, ReduceOp op) {
        if (op == ReduceOp.PROD) {
            return ((r + i) % 3 == 0) ? -1 : ((r + i) % 3 == 1 ? 2 : 1);
        }
        return ((r * 7919L + i * 31L) % 201) - 100;
    }

    static long reference(int n, long i, ReduceOp op) {
        long acc = value(0, i, op);
        for (int r = 1; r < n; r++) {
            final long v = value(r, i, op);
            acc = switch (op) {
                case SUM, AVG -> acc + v;
                case PROD -> acc * v;
                case MIN -> Math.min(acc, v);
                case MAX -> Math.max(acc, v);
            };
        }
        return acc;
    }

    static ByteBuffer fill(DataType t, int r, int count, ReduceOp op) {
        final ByteBuffer b = ByteBuffer.allocateDirect(Math.max(1, count * t.size())).order(ByteOrder.nativeOrder());
        for (int i = 0; i < count; i++) {
            put(b, t, i, value(r, i, op));
        }
        b.limit(count * t.size());
        return b;
    }

    static void put(ByteBuffer b, DataType t, int i, long v) {
        switch (t) {
            case FLOAT32 -> b.putFloat(i * 4, v);
            case FLOAT64 -> b.putDouble(i * 8, v);
            case INT32 -> b.putInt(i * 4, (int) v);
            case INT64 -> b.putLong(i * 8, v);
        }
    }

    static double get(ByteBuffer b, DataType t, int i) {
        return switch (t) {
            case FLOAT32 -> b.getFloat(i * 4);
            case FLOAT64 -> b.getDouble(i * 8);
            case INT32 -> b.getInt(i * 4);
            case INT64 -> b.getLong(i * 8);
        };
    }

    static double expected(int n, long i, ReduceOp op, DataType t) {
        final long ref = reference(n, i, op);
        if (op != ReduceOp.AVG) {
            return ref;
        }
        return switch (t) {
            case FLOAT32 -> (float) ref / n;
            case FLOAT64 -> (double) ref / n;
            case INT32 -> (int) ref / n;
            case INT64 -> ref / n;
        };
    }

    static void check(ByteBuffer b, DataType t, int count, int n, ReduceOp op, String what) {
        for (int i = 0; i < count; i++) {
            final double want = expected(n, i, op, t);
            final double got = get(b, t, i);
            if (Double.compare(want, got) != 0) {
                throw new AssertionError(what + ": element " + i + " of " + count + " is " + got + ", expected " + want);
            }
        }
    }

    @ParameterizedTest(name = "{0} ranks, {1}")
    @MethodSource("sizesAndAllReduceAlgorithms")
    void shouldAllReduceLikeTheReference(int n, Algorithm algorithm) {
        final LocalCluster cluster = cluster(n);
        for (int count : COUNTS) {
            for (DataType t : DataType.values()) {
                for (ReduceOp op : ReduceOp.values()) {
                    if (t != DataType.FLOAT32 && count > 20_000 && op != ReduceOp.SUM) {
                        continue;
                    }
                    cluster.run(c -> {
                        final ByteBuffer b = fill(t, c.rank(), count, op);
                        c.allReduce(b, t, op, algorithm);
                        check(b, t, count, n, op, algorithm + " " + t + " " + op + " rank " + c.rank());
                        return null;
                    });
                }
            }
        }
    }

    @ParameterizedTest(name = "{0} ranks")
    @ValueSource(ints = {2, 3, 4, 6})
    void shouldBroadcastWithBothAlgorithmsFromEveryRoot(int n) {
        final LocalCluster cluster = cluster(n);
        for (Algorithm a : new Algorithm[]{Algorithm.BINOMIAL_TREE, Algorithm.CHAIN, Algorithm.AUTO}) {
            for (int root = 0; root < n; root++) {
                for (int count : COUNTS) {
                    final int rt = root;
                    cluster.run(c -> {
                        final ByteBuffer b = ByteBuffer.allocateDirect(Math.max(1, count * 4)).order(ByteOrder.nativeOrder());
                        for (int i = 0; i < count; i++) {
                            b.putInt(i * 4, c.rank() == rt ? i * 3 + rt : -1);
                        }
                        b.limit(count * 4);
                        c.broadcast(Communicator.address(b), count * 4L, rt, a);
                        for (int i = 0; i < count; i++) {
                            assertEquals(i * 3 + rt, b.getInt(i * 4), a + " root " + rt + " element " + i);
                        }
                        return null;
                    });
                }
            }
        }
        // A cost model with a tiny alpha makes the chain use thousands of segments: exercises the pipeline.
        cluster.run(c -> {
            final CostModel saved = c.costModel();
            c.costModel(new CostModel(1e-12, 1e-9, 0));
            try {
                final ByteBuffer b = ByteBuffer.allocateDirect(300_001);
                if (c.rank() == n - 1) {
                    for (int i = 0; i < b.capacity(); i++) {
                        b.put(i, (byte) (i * 7));
                    }
                }
                c.broadcast(Communicator.address(b), b.capacity(), n - 1, Algorithm.CHAIN);
                for (int i = 0; i < b.capacity(); i++) {
                    assertEquals((byte) (i * 7), b.get(i));
                }
            } finally {
                c.costModel(saved);
            }
            return null;
        });
    }

    @ParameterizedTest(name = "{0} ranks")
    @ValueSource(ints = {2, 3, 4, 6})
    void shouldReduceToEveryRootAndLeaveOthersUntouched(int n) {
        final LocalCluster cluster = cluster(n);
        for (int root = 0; root < n; root++) {
            for (int count : COUNTS) {
                for (ReduceOp op : ReduceOp.values()) {
                    final int rt = root;
                    cluster.run(c -> {
                        final ByteBuffer b = fill(DataType.FLOAT64, c.rank(), count, op);
                        c.reduce(b, DataType.FLOAT64, op, rt);
                        if (c.rank() == rt) {
                            check(b, DataType.FLOAT64, count, n, op, "reduce root " + rt);
                        } else {
                            for (int i = 0; i < count; i++) {
                                assertEquals(value(c.rank(), i, op), b.getDouble(i * 8), 0.0);
                            }
                        }
                        return null;
                    });
                }
            }
        }
    }

    @ParameterizedTest(name = "{0} ranks")
    @ValueSource(ints = {2, 3, 4, 6})
    void shouldReduceScatterAndAllGather(int n) {
        final LocalCluster cluster = cluster(n);
        for (int block : new int[]{0, 1, 3, 16411}) {
            for (ReduceOp op : ReduceOp.values()) {
                cluster.run(c -> {
                    final ByteBuffer send = fill(DataType.INT32, c.rank(), block * n, op);
                    final ByteBuffer recv = ByteBuffer.allocateDirect(Math.max(1, block * 4)).order(ByteOrder.nativeOrder());
                    recv.limit(block * 4);
                    c.reduceScatter(send, recv, DataType.INT32, op);
                    for (int i = 0; i < block; i++) {
                        assertEquals(expected(n, (long) c.rank() * block + i, op, DataType.INT32), recv.getInt(i * 4),
                            0.0, "reduceScatter " + op + " element " + i);
                    }
                    // All-gather the blocks back: equals the full reduction.
                    final ByteBuffer all = ByteBuffer.allocateDirect(Math.max(1, block * n * 4)).order(ByteOrder.nativeOrder());
                    all.limit(block * n * 4);
                    c.allGather(recv, all);
                    check(all, DataType.INT32, block * n, n, op, "allGather");
                    return null;
                });
            }
        }
    }

    @ParameterizedTest(name = "{0} ranks")
    @ValueSource(ints = {2, 3, 4, 6})
    void shouldGatherScatterAndAllToAll(int n) {
        final LocalCluster cluster = cluster(n);
        for (int block : new int[]{0, 1, 13, 70_001}) {
            for (int root = 0; root < n; root++) {
                final int rt = root;
                cluster.run(c -> {
                    final ByteBuffer mine = ByteBuffer.allocateDirect(Math.max(1, block));
                    for (int i = 0; i < block; i++) {
                        mine.put(i, (byte) (c.rank() * 31 + i));
                    }
                    mine.limit(block);
                    final ByteBuffer all = ByteBuffer.allocateDirect(Math.max(1, block * n));
                    all.limit(block * n);
                    c.gather(mine, all, rt);
                    if (c.rank() == rt) {
                        for (int r = 0; r < n; r++) {
                            for (int i = 0; i < block; i++) {
                                assertEquals((byte) (r * 31 + i), all.get(r * block + i));
                            }
                        }
                    }
                    final ByteBuffer back = ByteBuffer.allocateDirect(Math.max(1, block));
                    back.limit(block);
                    c.scatter(all, back, rt);
                    if (c.rank() == rt || block == 0) {
                        assertEquals(mine.rewind().limit(block), back.rewind().limit(block));
                    }
                    return null;
                });
            }
            cluster.run(c -> {
                final ByteBuffer send = ByteBuffer.allocateDirect(Math.max(1, block * n));
                for (int j = 0; j < n; j++) {
                    for (int i = 0; i < block; i++) {
                        send.put(j * block + i, (byte) (c.rank() * 17 + j * 5 + i));
                    }
                }
                send.limit(block * n);
                final ByteBuffer recv = ByteBuffer.allocateDirect(Math.max(1, block * n));
                recv.limit(block * n);
                c.allToAll(send, recv);
                for (int j = 0; j < n; j++) {
                    for (int i = 0; i < block; i++) {
                        assertEquals((byte) (j * 17 + c.rank() * 5 + i), recv.get(j * block + i));
                    }
                }
                return null;
            });
        }
    }

    @ParameterizedTest(name = "{0} ranks")
    @ValueSource(ints = {2, 3, 4, 6})
    void shouldAllToAllWithVariableCounts(int n) {
        final LocalCluster cluster = cluster(n);
        cluster.run(c -> {
            final int r = c.rank();
            // Rank r sends (r + 2j) * 1000 + 1 bytes to rank j.
            final long[] sc = new long[n];
            final long[] sd = new long[n];
            final long[] rc = new long[n];
            final long[] rd = new long[n];
            long s = 0;
            long q = 0;
            for (int j = 0; j < n; j++) {
                sc[j] = (r + 2L * j) * 1000 + 1;
                sd[j] = s;
                s += sc[j];
                rc[j] = (j + 2L * r) * 1000 + 1;
                rd[j] = q;
                q += rc[j];
            }
            final ByteBuffer send = ByteBuffer.allocateDirect((int) s);
            for (int j = 0; j < n; j++) {
                for (int i = 0; i < sc[j]; i++) {
                    send.put((int) (sd[j] + i), (byte) (r * 13 + j * 7 + i));
                }
            }
            final ByteBuffer recv = ByteBuffer.allocateDirect((int) q);
            c.allToAllV(send, sc, sd, recv, rc, rd);
            for (int j = 0; j < n; j++) {
                for (int i = 0; i < rc[j]; i++) {
                    assertEquals((byte) (j * 13 + r * 7 + i), recv.get((int) (rd[j] + i)), "from " + j + " byte " + i);
                }
            }
            return null;
        });
    }

    @Test
    void shouldGiveBitwiseIdenticalFloatResultsOnEveryRankAndRun() {
        final long seed = System.nanoTime();
        System.out.println("shouldGiveBitwiseIdenticalFloatResultsOnEveryRankAndRun seed=" + seed);
        final int n = 3;
        final int count = 50_021;
        for (Algorithm a : new Algorithm[]{Algorithm.RING, Algorithm.RECURSIVE_DOUBLING, Algorithm.RABENSEIFNER,
            Algorithm.SHARED_MEMORY}) {
            final List<float[]> first = cluster(n).run(c -> runRandom(c, seed, count, a));
            final List<float[]> second = cluster(n).run(c -> runRandom(c, seed, count, a));
            for (int r = 0; r < n; r++) {
                assertArrayEquals(first.get(0), first.get(r), a + ": rank " + r + " differs from rank 0");
                assertArrayEquals(first.get(r), second.get(r), a + ": second run differs on rank " + r);
            }
            // Close to the straightforward sum.
            final Random[] rs = new Random[n];
            final float[][] inputs = new float[n][count];
            for (int r = 0; r < n; r++) {
                rs[r] = new Random(seed + r);
                for (int i = 0; i < count; i++) {
                    inputs[r][i] = rs[r].nextFloat() * 2 - 1;
                }
            }
            for (int i = 0; i < count; i++) {
                double sum = 0;
                for (int r = 0; r < n; r++) {
                    sum += inputs[r][i];
                }
                assertEquals(sum, first.get(0)[i], 1e-5);
            }
        }
    }

    private static float[] runRandom(Communicator c, long seed, int count, Algorithm a) {
        final Random random = new Random(seed + c.rank());
        final ByteBuffer b = ByteBuffer.allocateDirect(count * 4).order(ByteOrder.nativeOrder());
        for (int i = 0; i < count; i++) {
            b.putFloat(i * 4, random.nextFloat() * 2 - 1);
        }
        c.allReduce(b, DataType.FLOAT32, ReduceOp.SUM, a);
        final float[] out = new float[count];
        b.asFloatBuffer().get(out);
        return out;
    }

    @Test
    void shouldReduceJavaArrays() {
        cluster(3).run(c -> {
            final float[] f = {c.rank(), 1.5f, -c.rank()};
            c.allReduce(f, ReduceOp.SUM);
            assertArrayEquals(new float[]{3, 4.5f, -3}, f);
            final double[] d = {c.rank()};
            c.allReduce(d, ReduceOp.MAX);
            assertEquals(2.0, d[0]);
            final int[] i = {c.rank() + 1};
            c.allReduce(i, ReduceOp.PROD);
            assertEquals(6, i[0]);
            final long[] l = {c.rank() == 1 ? 42 : 0};
            c.broadcast(l, 1);
            assertEquals(42, l[0]);
            final float[] gathered = new float[6];
            c.allGather(new float[]{c.rank(), c.rank() * 10}, gathered);
            assertArrayEquals(new float[]{0, 0, 1, 10, 2, 20}, gathered);
            return null;
        });
    }

    @Test
    void shouldRunNonBlockingCollectivesConcurrently() {
        cluster(4).run(c -> {
            final List<ByteBuffer> bufs = new ArrayList<>();
            final List<CompletableFuture<Void>> fs = new ArrayList<>();
            for (int k = 0; k < 6; k++) {
                final ByteBuffer b = fill(DataType.INT64, c.rank() + k, 20_000, ReduceOp.SUM);
                bufs.add(b);
                fs.add(c.iallReduce(b, DataType.INT64, ReduceOp.SUM));
            }
            fs.add(c.ibarrier());
            CompletableFuture.allOf(fs.toArray(new CompletableFuture[0])).join();
            for (int k = 0; k < 6; k++) {
                for (int i = 0; i < 20_000; i++) {
                    long want = 0;
                    for (int r = 0; r < 4; r++) {
                        want += value(r + k, i, ReduceOp.SUM);
                    }
                    assertEquals(want, bufs.get(k).getLong(i * 8));
                }
            }
            return null;
        });
    }

    @Test
    void shouldSplitIntoSubCommunicators() {
        cluster(6).run(c -> {
            final Communicator sub = c.split(c.rank() % 2, -c.rank());
            assertEquals(3, sub.size());
            // Keys are -rank, so the order is reversed.
            final int expectedRank = 2 - c.rank() / 2;
            assertEquals(expectedRank, sub.rank());
            final int[] v = {c.rank()};
            sub.allReduce(v, ReduceOp.SUM);
            assertEquals(c.rank() % 2 == 0 ? 0 + 2 + 4 : 1 + 3 + 5, v[0]);
            final Communicator none = c.split(c.rank() == 0 ? 0 : -1, 0);
            if (c.rank() == 0) {
                assertEquals(1, none.size());
            } else {
                assertNull(none);
            }
            c.barrier();
            return null;
        });
    }

    @Test
    void shouldBarrierRepeatedly() {
        cluster(6).run(c -> {
            for (int i = 0; i < 50; i++) {
                c.barrier();
            }
            return null;
        });
        assertTrue(true);
    }
}
