"""The project's own network fault relay (netem is not in this kernel): a
TCP relay between a peer and its target that adds, per direction, delay,
jitter, a bandwidth cap and stalls, and, on chosen connections, loss by
reset, truncation, a blackhole (a partition) and bit flips at chosen byte
offsets or in chosen resync frames (plaintext clusters only: with TLS
every frame is inside a record).

Threads, bounded: each direction of a connection is a reader that stamps
chunks with their delivery time into a bounded queue and a writer that
delivers them in order at that time and paced to the cap. The relay stops
by itself after `lifetime` seconds and at exit. It only listens on and
connects to loopback or the tests' namespace addresses (10.99.0.0/16).

Faults are armed for the next connection(s) accepted (`arm`), or act on
every live one (`partition`, `reset_all`); every connection is counted and
every fault that fired is recorded in `fired`."""
import atexit
import collections
import ctypes
import ipaddress
import os
import queue
import random
import socket
import struct
import threading
import time

UP, DOWN = "up", "down"  # up: from the connecting side to the target
CHUNK = 65536
# Bytes a direction holds in flight (read, not yet delivered): enough for
# the bandwidth-delay product of any link the tests shape (1 GB/s at
# 25 ms is 25 MB), so that the relay adds delay without becoming a small
# window itself; past it, the reader waits (TCP's back-pressure).
LINE_BYTES = 32 << 20
ALLOWED = [ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("10.99.0.0/16")]
CLONE_NEWNET = 0x40000000


def _allowed(host):
    a = ipaddress.ip_address(host)
    if not any(a in n for n in ALLOWED):
        raise ValueError("relay: %s is neither loopback nor a test namespace address" % host)


_libc = ctypes.CDLL(None, use_errno=True)


class in_netns:
    """with in_netns(name): sockets made in the block belong to network
    namespace name (ip netns add); the thread returns to its own after.
    Sockets keep their namespace wherever they are used from."""

    def __init__(self, name):
        self.name = name

    def __enter__(self):
        if not self.name:
            return self
        self.old = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        fd = os.open("/run/netns/" + self.name, os.O_RDONLY | os.O_CLOEXEC)
        try:
            if _libc.setns(fd, CLONE_NEWNET) != 0:
                e = ctypes.get_errno()
                raise OSError(e, "setns %s: %s" % (self.name, os.strerror(e)))
        finally:
            os.close(fd)
        return self

    def __exit__(self, *exc):
        if not self.name:
            return False
        try:
            if _libc.setns(self.old, CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "setns back")
        finally:
            os.close(self.old)
        return False


class Shape:
    """How one direction behaves: delay and jitter (seconds), a rate cap
    (bytes a second, 0 = none)."""

    def __init__(self, delay=0.0, jitter=0.0, rate=0):
        self.delay, self.jitter, self.rate = delay, jitter, rate


class Fault:
    """A fault for one direction of one connection.
    kind: "flip" (XOR mask into the byte at offset `at` of the stream),
          "flip_frame" (XOR mask into byte `pos` of the `nth` frame of
          resync type `ftype`: pos < 16 is its header; a pos past the end
          of the frame counts back from its end),
          "cut" (forward `at` bytes, then close both sides: truncation),
          "reset" (forward `at` bytes, then RST both sides: loss),
          "blackhole" (forward `at` bytes, then nothing more either way,
          nor a close: a partition of this connection),
          "orphan" (forward `at` bytes, then reset the sending side at
          once and carry nothing more either way; the receiving side
          hears nothing, not even a close: a middlebox that dropped the
          flow and reset one end of it),
          "stall" (forward `at` bytes, hold the rest `seconds`),
          "hold" (forward `at` bytes, hold the rest until release()).
    With ftype set, any kind acts at byte `pos` of the `nth` frame of
    that type (pos 0: where the frame starts) rather than at `at`."""

    def __init__(self, kind, direction=UP, at=0, mask=0xFF, ftype=None, nth=1, pos=0,
                 seconds=0.0):
        self.kind, self.direction, self.at, self.mask = kind, direction, at, mask
        self.ftype, self.nth, self.pos, self.seconds = ftype, nth, pos, seconds
        self.fired = False
        self.where = None  # the stream offset it acted at
        self.closed = None  # when its connection ended after it fired
        self.released = threading.Event()  # "hold": the rest goes on

    def release(self):
        self.released.set()

    def __repr__(self):
        return "Fault(%s %s at=%s type=%s nth=%s pos=%s fired=%s where=%s)" % (
            self.kind, self.direction, self.at, self.ftype, self.nth, self.pos, self.fired,
            self.where)


class _Frames:
    """Where the resync frames of a plaintext stream start: a header is
    {magic u32, version u16, type u16, length u32, flags u32}. With TLS
    the "frames" are noise, harmlessly."""

    def __init__(self):
        self.pos = 0          # stream offset of the next byte fed
        self.hdr = b""        # header bytes of the frame being read
        self.left = 0         # payload bytes still to come
        self.start = 0        # stream offset where the current frame began
        self.counts = {}

    def feed(self, data):
        """Advance over data: [(start offset, type, length, count of
        that type so far)] of each frame whose header ends in it."""
        out = []
        i = 0
        while i < len(data):
            if self.left:
                k = min(self.left, len(data) - i)
                self.left -= k
                i += k
                continue
            if not self.hdr:
                self.start = self.pos + i
            k = min(16 - len(self.hdr), len(data) - i)
            self.hdr += data[i:i + k]
            i += k
            if len(self.hdr) < 16:
                continue
            _, _, ftype, length, _ = struct.unpack("<IHHII", self.hdr)
            self.hdr = b""
            self.left = length
            self.counts[ftype] = self.counts.get(ftype, 0) + 1
            out.append((self.start, ftype, length, self.counts[ftype]))
        self.pos += len(data)
        return out


class _Armed:
    """A fault on one connection, from where that stream was when armed."""

    def __init__(self, fault, base, counts):
        self.f, self.base, self.counts, self.target = fault, base, dict(counts), None

    def at(self):
        if self.f.ftype is not None:
            return self.target
        return self.base + self.f.at


class _Line:
    """The FIFO of one direction, bounded by the bytes it holds (always
    room for one item, whatever its size)."""

    def __init__(self, cap=LINE_BYTES):
        self.cv = threading.Condition()
        self.items = collections.deque()
        self.bytes, self.cap = 0, cap

    def put(self, item, timeout=None):
        n = len(item[1][1]) if item[0] == "data" else 0
        with self.cv:
            if not self.cv.wait_for(lambda: self.bytes == 0 or self.bytes + n <= self.cap,
                                    timeout):
                raise queue.Full
            self.items.append((item, n))
            self.bytes += n
            self.cv.notify_all()

    def get(self):
        with self.cv:
            self.cv.wait_for(lambda: self.items)
            item, n = self.items.popleft()
            self.bytes -= n
            self.cv.notify_all()
            return item


class _Conn:
    def __init__(self, relay, a, b, faults):
        self.relay, self.a, self.b = relay, a, b
        self.frames = {UP: _Frames(), DOWN: _Frames()}
        self.armed = {UP: [], DOWN: []}
        self.fired_here = []
        self.add(faults)
        self.closed = False
        self.silent = False  # partitioned: nothing more goes through
        self.lost = {UP: False, DOWN: False}  # orphaned: this direction's bytes dropped
        self.lock = threading.Lock()
        if relay.line_bytes < LINE_BYTES:
            # A small line is a link that pushes back early: the
            # kernel's buffer in front of it small too.
            a.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, relay.line_bytes)
        for d, src, dst in ((UP, a, b), (DOWN, b, a)):
            q = _Line(relay.line_bytes)
            relay._spawn(self._read, d, src, q)
            relay._spawn(self._write, d, dst, q)

    def add(self, faults):
        for f in faults:
            fr = self.frames[f.direction]
            self.armed[f.direction].append(_Armed(f, fr.pos, fr.counts))

    def close(self, rst=False):
        with self.lock:
            if self.closed:
                return
            self.closed = True
        for f in self.fired_here:
            f.closed = time.monotonic()
        for s in (self.a, self.b):
            try:
                if rst:
                    # Linger 0: the close sends RST; SHUT_RD only wakes a
                    # reader blocked on the socket, sending nothing.
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    s.shutdown(socket.SHUT_RD)
                else:
                    s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            try:
                s.close()
            except OSError:
                pass

    def _read(self, d, src, q):
        frames = self.frames[d]
        last = 0.0
        try:
            while not self.closed:
                data = src.recv(CHUNK)
                if not data:
                    break
                if self.silent or self.lost[d]:
                    continue  # a partition: the bytes are lost
                done = frames.pos
                for start, ftype, length, count in frames.feed(data):
                    for x in self.armed[d]:
                        f = x.f
                        if (f.ftype is not None and x.target is None and f.ftype == ftype
                                and count - x.counts.get(ftype, 0) == f.nth):
                            p = f.pos
                            if p >= 16 + length:
                                p = 16 + length - 1 - (p - 16 - length) % (16 + length)
                            x.target = start + p
                for x in list(self.armed[d]):
                    f, at = x.f, x.at()
                    if f.fired or at is None:
                        continue
                    if f.kind in ("flip", "flip_frame"):
                        if not done <= at < done + len(data):
                            continue
                    elif at >= done + len(data):
                        continue
                    at = max(at, done)
                    f.fired, f.where = True, at
                    self.relay.fired.append(f)
                    self.fired_here.append(f)
                    i = at - done
                    if f.kind in ("flip", "flip_frame"):
                        data = data[:i] + bytes([data[i] ^ f.mask]) + data[i + 1:]
                        continue
                    # Forward what comes before the fault's offset.
                    if i:
                        last = self._stamp(d, q, data[:i], last)
                    data = data[i:]
                    done = at
                    if f.kind in ("cut", "reset"):
                        q.put(("close", f.kind == "reset"))
                        return
                    if f.kind == "blackhole":
                        self.silent = True
                        break
                    if f.kind == "orphan":
                        self._orphan(d, src, q)
                        return
                    if f.kind == "stall":
                        q.put(("sleep", f.seconds))
                    if f.kind == "hold":
                        q.put(("hold", f.released))
                if self.silent:
                    continue
                last = self._stamp(d, q, data, last)
        except OSError:
            pass
        q.put(("close", False))

    def _orphan(self, d, src, q):
        """What came before goes on to the receiving side, then nothing
        more either way; the sending side is reset now."""
        self.lost[UP if d == DOWN else DOWN] = True
        q.put(("orphan", None))
        try:
            src.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            src.shutdown(socket.SHUT_RD)
            src.close()
        except OSError:
            pass

    def _stamp(self, d, q, data, last):
        shape = self.relay.shape[d]
        t = time.monotonic() + shape.delay + (random.uniform(0, shape.jitter)
                                              if shape.jitter else 0.0)
        t = max(t, last)  # in order, as TCP is
        while not self.closed:
            try:
                q.put(("data", (t, data)), timeout=0.5)
                break
            except queue.Full:
                continue
        return t

    def _write(self, d, dst, q):
        budget_t = time.monotonic()
        try:
            while True:
                kind, x = q.get()
                if kind == "close":
                    self.close(rst=x)
                    return
                if kind == "sleep":
                    time.sleep(x)
                    continue
                if kind == "hold":
                    while not x.wait(0.5) and not self.closed and not self.lost[d]:
                        pass
                    continue
                if kind == "orphan":
                    self.lost[d] = True
                    return  # the receiving side stays open, hearing nothing
                t, data = x
                if self.silent or self.lost[d]:
                    continue
                now = time.monotonic()
                if t > now:
                    time.sleep(t - now)
                rate = self.relay.shape[d].rate
                if rate:
                    budget_t = max(budget_t, time.monotonic()) + len(data) / rate
                    wait = budget_t - time.monotonic()
                    if wait > 0:
                        time.sleep(wait)
                if self.closed:
                    return
                dst.sendall(data)
                self.relay.bytes[d] += len(data)
        except OSError:
            if not self.lost[d]:
                self.close()


class Relay:
    """A relay from (listen_host, port) to target (host, port). netns: the
    network namespace both its sockets live in (None: this one)."""

    def __init__(self, target, listen_host="127.0.0.1", netns=None, lifetime=300.0,
                 up=None, down=None):
        _allowed(target[0])
        _allowed(listen_host)
        self.target, self.netns = target, netns
        self.shape = {UP: up or Shape(), DOWN: down or Shape()}
        # Bytes a direction holds in flight: LINE_BYTES, or fewer for
        # connections accepted after it is set.
        self.line_bytes = LINE_BYTES
        self.armed = []       # lists of faults, until they fire or disarm()
        self.conns = 0
        self.live = []
        self.every = []  # every connection accepted (frames())
        self.fired = []
        self.bytes = {UP: 0, DOWN: 0}
        self.partitioned = False
        self.stopped = False
        self.threads = []
        with in_netns(netns):
            self.srv = socket.socket()
        self.srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.srv.bind((listen_host, 0))
        self.srv.listen(32)
        self.port = self.srv.getsockname()[1]
        self.address = "%s:%d" % (listen_host, self.port)
        self._spawn(self._accept)
        self.timer = threading.Timer(lifetime, self.stop)
        self.timer.daemon = True
        self.timer.start()
        atexit.register(self.stop)

    def _spawn(self, fn, *args):
        t = threading.Thread(target=fn, args=args, daemon=True)
        t.start()
        self.threads = [x for x in self.threads if x.is_alive()] + [t]

    def set_shape(self, direction, shape):
        self.shape[direction] = shape

    def arm(self, *faults):
        """These faults act on the next connection accepted and on every
        live one (the daemons keep their connections), offsets counted
        from where each stream is now; each fires once, wherever first."""
        self.armed.append(list(faults))
        for c in self.live:
            if not c.closed:
                c.add(faults)

    def disarm(self):
        """Faults not fired yet will not."""
        self.armed = []
        for c in self.live:
            for d in (UP, DOWN):
                c.armed[d] = [x for x in c.armed[d] if x.f.fired]

    def frames(self, direction, ftype):
        """Frames of that type seen so far in that direction (plaintext
        clusters), over every connection."""
        return sum(c.frames[direction].counts.get(ftype, 0) for c in self.every)

    def reset_all(self):
        for c in list(self.live):
            c.close(rst=True)

    def partition(self, on=True):
        """On: every live connection goes silent (neither data nor a close,
        as a cable pulled) and new ones are dropped at once. Off: heal."""
        self.partitioned = on
        for c in list(self.live):
            if on:
                c.silent = True
            elif c.silent:
                c.close(rst=True)

    def _accept(self):
        while not self.stopped:
            try:
                a, _ = self.srv.accept()
            except OSError:
                return
            self.conns += 1
            if self.partitioned:
                a.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                a.close()
                continue
            try:
                with in_netns(self.netns):
                    b = socket.socket()
                b.settimeout(10)
                b.connect(self.target)
                b.settimeout(None)
            except OSError:
                a.close()
                continue
            faults = [f for fl in self.armed for f in fl if not f.fired]
            conn = _Conn(self, a, b, faults)
            self.live = [c for c in self.live if not c.closed] + [conn]
            self.every.append(conn)

    def stop(self):
        if self.stopped:
            return
        self.stopped = True
        self.timer.cancel()
        try:
            self.srv.close()
        except OSError:
            pass
        for c in self.live:
            c.close(rst=True)
