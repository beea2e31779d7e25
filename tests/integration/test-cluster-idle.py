#!/usr/bin/env python3
"""Idle TCP connections to the peer ports do not hold a resync: the accept
loop only accepts, each connection's handshake runs on its own thread
under its deadline. 50 idle connections held open to the primary's peer
port and 50 to a secondary's delay the same resync by under a second and
are not refused (none is closed while the resync runs); the resync ends
byte-identical. Past NODE_UNAUTH_MAX (64) connections that have not said
hello, the newest are closed at once, said once (rate-limited)."""
import json
import os
import select
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cluster_lib import (MB, Cluster, check, fail, resync_ok,  # noqa: E402
                         wait_for)
from resyncfs_lib import Scratch  # noqa: E402

IDLE = 50
DATA = 32 * MB

sc = Scratch()
c = Cluster(sc, "idle", ["p", "s"], "p", size=64 * MB)
for n in c.names:
    c.start(n)


def peer_port(n):
    section = None
    with open(c.conf) as f:
        for line in f:
            line = line.strip()
            if line.startswith("[node "):
                section = line[6:-1]
            elif section == n and line.startswith("address"):
                return int(line.rsplit(":", 1)[1])
    fail("no address for %s" % n)


def open_idle(port, count):
    socks = []
    for _ in range(count):
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        socks.append(s)
    return socks


def closed_by_peer(s):
    """Whether the daemon closed s (readable and at its end, or reset)."""
    r, _, _ = select.select([s], [], [], 0)
    if not r:
        return False
    try:
        return s.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True


def drift_and_resync(what):
    """New data on the primary (the same amount each time), then a timed
    resync: a quick resync of DATA bytes."""
    for i in range(DATA // (4 * MB)):
        c.write("p", i * 4 * MB, os.urandom(4 * MB))
    t0 = time.monotonic()
    res = resync_ok(c, what)
    return time.monotonic() - t0, res


# A first resync (full compare of blank s) warms both sides up.
drift_and_resync("first resync")
base, res = drift_and_resync("resync without idle connections")
sent = res["s"]["bytes_written"]

idle = open_idle(peer_port("p"), IDLE) + open_idle(peer_port("s"), IDLE)
with_idle, res = drift_and_resync("resync with %d idle connections" % (2 * IDLE))
check(res["s"]["bytes_written"] == sent, "both timed resyncs write as much (%d, %d)" %
      (sent, res["s"]["bytes_written"]))
dropped = [s for s in idle if closed_by_peer(s)]
check(not dropped, "%d of the %d idle connections were closed during the resync" %
      (len(dropped), len(idle)))
for n in c.names:
    check("have not authenticated yet" not in c.log(n),
          "%s refused none of the idle connections: %s" % (n, c.log(n)))
print("resync of %d MiB: %.3f s without, %.3f s with %d idle connections" %
      (DATA // MB, base, with_idle, 2 * IDLE))
check(with_idle - base < 1.0, "idle connections delay the resync by under 1 s "
      "(%.3f s without, %.3f s with)" % (base, with_idle))
check(c.same_through_mounts("p", "s"), "p and s identical after the resync")

# Past the cap (64 not yet authenticated on s), the newest are closed at
# once, and said once however many there are.
more = open_idle(peer_port("s"), 30)
wait_for(lambda: sum(closed_by_peer(s) for s in more) >= 30 + IDLE - 64,
         what="the connections past the cap closed")
wait_for(lambda: "have not authenticated yet" in c.log("s"), what="the cap's warning")
check(c.log("s").count("have not authenticated yet") == 1,
      "the cap's warning is rate-limited: %s" % c.log("s"))
for s in idle + more:
    s.close()

# Once they are gone, peers are served again at once.
resync_ok(c, "resync after the idle connections closed")
for n in c.names:
    c.stop(n)
with open(c.image("p"), "rb") as a, open(c.image("s"), "rb") as b:
    if a.read() != b.read():
        fail("the images differ after the resyncs")
print(json.dumps({"without_idle_s": round(base, 3), "with_idle_s": round(with_idle, 3),
                  "idle_connections": 2 * IDLE}))
