package dev.poniard.trainer;

import java.util.concurrent.ArrayBlockingQueue;
import java.util.concurrent.BlockingQueue;
import org.nd4j.linalg.dataset.DataSet;
import org.nd4j.linalg.dataset.api.iterator.DataSetIterator;

/**
 * Reads up to {@code depth} batches ahead of training on a background thread, so that a slow iterator (disk,
 * decoding, augmentation) overlaps the steps instead of stalling them. Only this thread touches the iterator
 * while the epoch runs. An exception of the iterator reaches the caller of {@link #next()} as it was thrown;
 * {@link #close()} stops the reader, also when training stopped early.
 */
final class Prefetcher implements AutoCloseable {
    private static final Object END = new Object();

    private final BlockingQueue<Object> queue;
    private final Thread reader;
    private volatile boolean closed;
    private boolean ended;

    Prefetcher(DataSetIterator source, int depth, String name) {
        this.queue = new ArrayBlockingQueue<>(depth);
        this.reader = new Thread(() -> read(source), name);
        reader.setDaemon(true);
        reader.start();
    }

    private void read(DataSetIterator source) {
        Object last = END;
        try {
            while (!closed && source.hasNext()) {
                queue.put(Batches.nonNull(source, source.next())); // blocks while depth batches wait
            }
        } catch (InterruptedException e) {
            return; // closed
        } catch (RuntimeException | Error e) {
            last = e;
        }
        try {
            queue.put(last);
        } catch (InterruptedException e) {
            // closed before the consumer took the end: nobody is waiting for it
        }
    }

    /** The next batch, or null at the end of the data. */
    DataSet next() {
        if (ended) {
            return null;
        }
        Object o;
        try {
            o = queue.take();
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new TrainerException("interrupted while waiting for the next batch", e);
        }
        if (o == END) {
            ended = true;
            return null;
        }
        if (o instanceof RuntimeException e) {
            ended = true;
            throw e;
        }
        if (o instanceof Error e) {
            ended = true;
            throw e;
        }
        return (DataSet) o;
    }

    @Override
    public void close() {
        closed = true;
        reader.interrupt();
        try {
            reader.join(10_000);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
    }
}
