package dev.poniard.scheduler.comm;

import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import javax.crypto.Mac;
import javax.crypto.spec.SecretKeySpec;
import java.io.ByteArrayOutputStream;
import java.io.DataInputStream;
import java.io.DataOutputStream;
import java.io.IOException;
import java.net.InetSocketAddress;
import java.net.ServerSocket;
import java.net.Socket;
import java.nio.charset.StandardCharsets;
import java.security.GeneralSecurityException;
import java.security.MessageDigest;
import java.security.SecureRandom;
import java.util.ArrayList;
import java.util.List;

/**
 * Rank 0 coordinates the job over TCP: every other rank connects, both sides prove knowledge of the shared
 * secret (HMAC-SHA256 over fresh nonces from each side), the joiner states its rank, size and endpoint, and
 * once all ranks have joined rank 0 sends everyone the endpoint table, authenticated with the session MAC.
 *
 * <pre>
 *  joiner -> coordinator : magic u32 "PNRV", version u16, nonceJ[16]
 *  coordinator -> joiner : magic, version, status u8, [status != OK: reason UTF], nonceC[16],
 *                          HMAC(secret, "C" | nonceJ | nonceC)[32]
 *  joiner -> coordinator : HMAC(secret, "J" | nonceC | nonceJ)[32], rank i32, size i32, hostKey UTF, udp UTF
 *  coordinator -> joiner : status u8, [status != OK: reason UTF] | jobId i64, streamBase i32,
 *                          size x (hostKey UTF, udp UTF), HMAC(secret, "T" | nonceJ | nonceC | table)[32]
 * </pre>
 * Every length read is bounded; a wrong secret or protocol version is refused with a clear message on both sides.
 */
final class Rendezvous {
    static final int MAGIC = 0x504E5256;
    static final int VERSION = 1;
    private static final int OK = 0;
    private static final int VERSION_MISMATCH = 1;
    private static final int AUTH_FAILED = 2;
    private static final int BAD_RANK = 3;
    private static final int MAX_STRING = 1024;
    private static final Logger LOG = LoggerFactory.getLogger(Rendezvous.class);

    /** One rank's endpoint: its host key (hostname + media driver directory) and its UDP endpoint. */
    record Endpoint(String hostKey, String udpEndpoint) {
    }

    /** The result: job id, stream id base and every rank's endpoint. */
    record Table(long jobId, int streamBase, List<Endpoint> endpoints) {
    }

    private Rendezvous() {
    }

    /** Rank 0: accept {@code size - 1} authenticated joiners and hand out the table. */
    static Table coordinate(ServerSocket server, int size, byte[] secret, Endpoint self, long timeoutMs,
                            int protocolVersion) {
        final SecureRandom random = new SecureRandom();
        final long deadline = System.currentTimeMillis() + timeoutMs;
        final Endpoint[] endpoints = new Endpoint[size];
        endpoints[0] = self;
        final Socket[] sockets = new Socket[size];
        final byte[][] nonces = new byte[size][];
        int joined = 1;
        final List<String> refusals = new ArrayList<>();
        try {
            while (joined < size) {
                final long left = deadline - System.currentTimeMillis();
                if (left <= 0) {
                    throw new RendezvousException("rendezvous timed out after " + timeoutMs + " ms: " + joined
                        + " of " + size + " ranks joined" + (refusals.isEmpty() ? "" : "; refused: " + refusals));
                }
                server.setSoTimeout((int) Math.min(Integer.MAX_VALUE, left));
                final Socket s;
                try {
                    s = server.accept();
                } catch (java.net.SocketTimeoutException e) {
                    continue;
                }
                s.setSoTimeout((int) Math.min(10_000, Math.max(1, left)));
                s.setTcpNoDelay(true);
                try {
                    final DataInputStream in = new DataInputStream(s.getInputStream());
                    final DataOutputStream out = new DataOutputStream(s.getOutputStream());
                    final int magic = in.readInt();
                    final int version = in.readUnsignedShort();
                    if (magic != MAGIC) {
                        s.close();
                        LOG.warn("rendezvous: refused a connection from {} that is not a Poniard rank",
                            s.getRemoteSocketAddress());
                        continue;
                    }
                    final byte[] nonceJ = in.readNBytes(16);
                    out.writeInt(MAGIC);
                    out.writeShort(protocolVersion);
                    if (version != protocolVersion) {
                        refusals.add("protocol version " + version + " (expected " + protocolVersion + ")");
                        refuse(out, s, VERSION_MISMATCH, "protocol version mismatch: this rank speaks version "
                            + version + ", coordinator (rank 0) speaks version " + protocolVersion
                            + "; run the same Poniard build on every rank");
                        continue;
                    }
                    out.writeByte(OK);
                    final byte[] nonceC = new byte[16];
                    random.nextBytes(nonceC);
                    out.write(nonceC);
                    out.write(hmac(secret, "C", nonceJ, nonceC));
                    out.flush();
                    final byte[] macJ = in.readNBytes(32);
                    final int rank = in.readInt();
                    final int theirSize = in.readInt();
                    final String hostKey = readString(in);
                    final String udp = readString(in);
                    if (!MessageDigest.isEqual(macJ, hmac(secret, "J", nonceC, nonceJ))) {
                        LOG.warn("rendezvous: refused rank {} from {}: wrong shared secret", rank,
                            s.getRemoteSocketAddress());
                        refusals.add("rank " + rank + ": wrong shared secret");
                        refuseStatus(out, s, AUTH_FAILED, "authentication failed: wrong shared secret "
                            + "(PONIARD_SECRET / PONIARD_SECRET_FILE differ from rank 0's)");
                        continue;
                    }
                    if (theirSize != size || rank <= 0 || rank >= size || sockets[rank] != null) {
                        refusals.add("rank " + rank + " of size " + theirSize);
                        refuseStatus(out, s, BAD_RANK, "rank " + rank + " of size " + theirSize
                            + " refused: coordinator expects size " + size
                            + (rank > 0 && rank < size && sockets[rank] != null ? " and rank " + rank
                            + " has already joined" : " and ranks 1.." + (size - 1)));
                        continue;
                    }
                    sockets[rank] = s;
                    nonces[rank] = concat(nonceJ, nonceC);
                    endpoints[rank] = new Endpoint(hostKey, udp);
                    joined++;
                } catch (IOException e) {
                    LOG.warn("rendezvous: dropped a joiner from {}: {}", s.getRemoteSocketAddress(), e.toString());
                    refusals.add("a joiner left during the handshake (it rejects rank 0's proof of the shared "
                        + "secret when the secrets differ)");
                    closeQuietly(s);
                }
            }
            final long jobId = random.nextLong();
            final int streamBase = 0x1000 + random.nextInt(1 << 24);
            final byte[] table = encodeTable(jobId, streamBase, endpoints);
            for (int r = 1; r < size; r++) {
                final DataOutputStream out = new DataOutputStream(sockets[r].getOutputStream());
                out.writeByte(OK);
                out.write(table);
                out.write(hmac(secret, "T", nonces[r], table));
                out.flush();
            }
            return new Table(jobId, streamBase, List.of(endpoints));
        } catch (IOException e) {
            throw new RendezvousException("rendezvous failed on rank 0: " + e, e);
        } finally {
            for (Socket s : sockets) {
                closeQuietly(s);
            }
        }
    }

    /** Ranks 1..size-1: join the coordinator at {@code address}, retrying until it listens or time runs out. */
    static Table join(InetSocketAddress address, int rank, int size, byte[] secret, Endpoint self, long timeoutMs,
                      int protocolVersion) {
        final long deadline = System.currentTimeMillis() + timeoutMs;
        IOException last = null;
        while (System.currentTimeMillis() < deadline) {
            try (Socket s = new Socket()) {
                s.connect(address, (int) Math.max(1, Math.min(2000, deadline - System.currentTimeMillis())));
                s.setSoTimeout((int) Math.max(1, deadline - System.currentTimeMillis()));
                s.setTcpNoDelay(true);
                return handshake(s, rank, size, secret, self, protocolVersion);
            } catch (IOException e) {
                last = e;
                LockSupportPause.pause(50);
            }
        }
        throw new RendezvousException("rank " + rank + " could not join the coordinator at " + address + " within "
            + timeoutMs + " ms" + (last == null ? "" : ": " + last), last);
    }

    private static Table handshake(Socket s, int rank, int size, byte[] secret, Endpoint self, int protocolVersion)
        throws IOException {
        final DataInputStream in = new DataInputStream(s.getInputStream());
        final DataOutputStream out = new DataOutputStream(s.getOutputStream());
        final byte[] nonceJ = new byte[16];
        new SecureRandom().nextBytes(nonceJ);
        out.writeInt(MAGIC);
        out.writeShort(protocolVersion);
        out.write(nonceJ);
        out.flush();
        if (in.readInt() != MAGIC) {
            throw new RendezvousException("the coordinator is not a Poniard rank 0");
        }
        final int theirVersion = in.readUnsignedShort();
        final int status = in.readUnsignedByte();
        if (status != OK) {
            throw new RendezvousException("rendezvous refused by coordinator: " + readString(in));
        }
        if (theirVersion != protocolVersion) {
            throw new RendezvousException("protocol version mismatch: rank " + rank + " speaks version "
                + protocolVersion + ", coordinator speaks version " + theirVersion);
        }
        final byte[] nonceC = in.readNBytes(16);
        final byte[] macC = in.readNBytes(32);
        if (!MessageDigest.isEqual(macC, hmac(secret, "C", nonceJ, nonceC))) {
            throw new RendezvousException("authentication failed: the coordinator does not know this rank's shared "
                + "secret (PONIARD_SECRET / PONIARD_SECRET_FILE differ)");
        }
        out.write(hmac(secret, "J", nonceC, nonceJ));
        out.writeInt(rank);
        out.writeInt(size);
        writeString(out, self.hostKey());
        writeString(out, self.udpEndpoint());
        out.flush();
        final int result = in.readUnsignedByte();
        if (result != OK) {
            throw new RendezvousException("rendezvous refused by coordinator: " + readString(in));
        }
        final long jobId = in.readLong();
        final int streamBase = in.readInt();
        final int n = in.readInt();
        if (n != size) {
            throw new RendezvousException("coordinator sent a table of " + n + " ranks, expected " + size);
        }
        final Endpoint[] endpoints = new Endpoint[n];
        for (int i = 0; i < n; i++) {
            endpoints[i] = new Endpoint(readString(in), readString(in));
        }
        final byte[] table = encodeTable(jobId, streamBase, endpoints);
        final byte[] mac = in.readNBytes(32);
        if (!MessageDigest.isEqual(mac, hmac(secret, "T", concat(nonceJ, nonceC), table))) {
            throw new RendezvousException("the endpoint table from the coordinator failed authentication");
        }
        return new Table(jobId, streamBase, List.of(endpoints));
    }

    private static void refuse(DataOutputStream out, Socket s, int status, String reason) throws IOException {
        refuseStatus(out, s, status, reason);
    }

    private static void refuseStatus(DataOutputStream out, Socket s, int status, String reason) throws IOException {
        LOG.warn("rendezvous: {}", reason);
        out.writeByte(status);
        writeString(out, reason);
        out.flush();
        s.close();
    }

    private static byte[] encodeTable(long jobId, int streamBase, Endpoint[] endpoints) throws IOException {
        final ByteArrayOutputStream bytes = new ByteArrayOutputStream();
        final DataOutputStream out = new DataOutputStream(bytes);
        out.writeLong(jobId);
        out.writeInt(streamBase);
        out.writeInt(endpoints.length);
        for (Endpoint e : endpoints) {
            writeString(out, e.hostKey());
            writeString(out, e.udpEndpoint());
        }
        return bytes.toByteArray();
    }

    private static void writeString(DataOutputStream out, String s) throws IOException {
        final byte[] b = s.getBytes(StandardCharsets.UTF_8);
        if (b.length > MAX_STRING) {
            throw new IllegalArgumentException("string too long for rendezvous: " + b.length + " bytes");
        }
        out.writeShort(b.length);
        out.write(b);
    }

    private static String readString(DataInputStream in) throws IOException {
        final int len = in.readUnsignedShort();
        if (len > MAX_STRING) {
            throw new IOException("rendezvous string of " + len + " bytes exceeds " + MAX_STRING);
        }
        return new String(in.readNBytes(len), StandardCharsets.UTF_8);
    }

    static byte[] hmac(byte[] secret, String label, byte[] a, byte[] b) {
        try {
            final Mac mac = Mac.getInstance("HmacSHA256");
            mac.init(new SecretKeySpec(secret.length == 0 ? new byte[1] : secret, "HmacSHA256"));
            mac.update(label.getBytes(StandardCharsets.US_ASCII));
            mac.update(a);
            mac.update(b);
            return mac.doFinal();
        } catch (GeneralSecurityException e) {
            throw new IllegalStateException("HmacSHA256 unavailable", e);
        }
    }

    private static byte[] concat(byte[] a, byte[] b) {
        final byte[] r = new byte[a.length + b.length];
        System.arraycopy(a, 0, r, 0, a.length);
        System.arraycopy(b, 0, r, a.length, b.length);
        return r;
    }

    private static void closeQuietly(Socket s) {
        if (s != null) {
            try {
                s.close();
            } catch (IOException ignored) {
                // best effort
            }
        }
    }

    /** A bounded pause by parking the thread. */
    static final class LockSupportPause {
        private LockSupportPause() {
        }

        static void pause(long millis) {
            java.util.concurrent.locks.LockSupport.parkNanos(millis * 1_000_000L);
        }
    }

    static List<String> describe(Table t) {
        final List<String> out = new ArrayList<>();
        for (Endpoint e : t.endpoints()) {
            out.add(e.hostKey() + "/" + e.udpEndpoint());
        }
        return out;
    }
}
