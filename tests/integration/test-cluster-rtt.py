#!/usr/bin/env python3
"""Round trips paid in sequence (issue 18): the primary reaches both
secondaries through the project's relay, 25 ms each way (50 ms round
trip), with the proof on. A full resync of scattered pages (metadata
removed: a full compare over the hash tree) must cost each secondary's
job at most MAX_ROUND_TRIPS waits for an answer, as the daemon counts
them (round_trips in the summary), whatever the volume's size: a later
change that adds one per block, per tree level or per checkpoint shows
here. n3 is an older peer without PROOF_COMMIT (RESYNC_FEATURES_OFF): it
still resyncs byte-identical, over PROOF_REQ and COMMIT, one round trip
more than n2. Then a resync with nothing to do (both up to date, quick)."""
import os
import random
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cluster_lib import MB, Cluster, check, resync_ok, verify  # noqa: E402
from relay_lib import Relay, Shape  # noqa: E402
from resyncfs_lib import Scratch  # noqa: E402

T0 = time.monotonic()
ONE_WAY = 0.025
VOLUME = 48 * MB
PAGE = 4096
PROOF_COMMIT = 1 << 10
# TCP and TLS handshakes (2), hello with status (1), the tree's walk
# (3 levels below the first fetched whole, at this size: 3), the end of
# the first pass made durable (1), the proof and the commit (1), and
# room for 2 waits the timing may add (a reply read just before it came).
MAX_ROUND_TRIPS = 10
CHANGED = 300  # pages changed on each secondary
QUICK_MAX_ROUND_TRIPS = 7
rng = random.Random(18)
sc = Scratch()
c = Cluster(sc, "rtt", ["n1", "n2", "n3"], "n1", size=VOLUME)
with open(c.conf) as f:
    conf = f.read()
with open(c.conf, "w") as f:
    f.write(conf.replace("[cluster]\n", "[cluster]\nproof = true\n", 1))
with open(c.conf) as f:
    conf = f.read()
addr = {n: next(x.split("=")[1].strip() for x in conf.split("[node %s]" % n)[1].splitlines()
                if x.startswith("address")) for n in ("n2", "n3")}
relays = {n: Relay(("127.0.0.1", int(addr[n].rsplit(":", 1)[1])), up=Shape(ONE_WAY),
                   down=Shape(ONE_WAY)) for n in ("n2", "n3")}
via = sc.path("rtt-via.conf")
with open(via, "w") as f:
    text = conf
    for n, r in relays.items():
        text = text.replace("address = " + addr[n], "address = " + r.address)
    f.write(text)
own = c.conf
OLD = {"RESYNC_FEATURES_OFF": str(PROOF_COMMIT)}


def start_all():
    c.conf = via
    c.start("n1")
    c.conf = own
    c.start("n2")
    c.start("n3", env=OLD)
    c.conf = via


def stop_all():
    for n in c.names:
        c.stop(n)


def same(n):
    with open(c.image("n1"), "rb") as a, open(c.image(n), "rb") as b:
        return a.read() == b.read()


try:
    data = os.urandom(VOLUME)
    for n in c.names:
        with open(c.image(n), "wb") as f:
            f.write(data)
    # Scattered pages changed on each secondary, and its metadata gone
    # (an image restored from elsewhere): a full compare.
    for n in ("n2", "n3"):
        with open(c.image(n), "r+b") as f:
            for p in rng.sample(range(VOLUME // PAGE), CHANGED):
                f.seek(p * PAGE)
                f.write(os.urandom(PAGE))
    start_all()
    t = time.monotonic()
    nodes = resync_ok(c, "full resync over 50 ms")
    full_s = time.monotonic() - t
    rt = {n: nodes[n].get("round_trips") for n in ("n2", "n3")}
    ex = {n: nodes[n].get("exchanges") for n in ("n2", "n3")}
    check(all(isinstance(v, int) and v > 0 for v in rt.values()),
          "the summary counts round trips: %s" % nodes)
    check(all(isinstance(v, int) and v >= rt[n] - 2 for n, v in ex.items()),
          "the summary counts exchanges (%s) at least as the waits (%s)" % (ex, rt))
    for n in ("n2", "n3"):
        check(rt[n] <= MAX_ROUND_TRIPS, "%s: %d round trips in sequence, at most %d" %
              (n, rt[n], MAX_ROUND_TRIPS))
        check(nodes[n].get("proof", {}).get("match") is True,
              "%s: the proof matched: %s" % (n, nodes[n].get("proof")))
    check(rt["n3"] > rt["n2"] or rt["n3"] == MAX_ROUND_TRIPS,
          "the older peer n3 paid the separate commit (%s)" % rt)
    # Every byte the relays carried: the secondaries were reached there.
    check(all(r.conns > 0 for r in relays.values()), "both went through the relays")
    check(verify(c)[0] == 0, "verify exits 0 after the full resync")
    stop_all()
    for n in ("n2", "n3"):
        check(same(n), "%s byte-identical to the primary" % n)

    # Nothing to do: the quick way, still few waits.
    start_all()
    nodes = resync_ok(c, "resync with nothing to do")
    for n in ("n2", "n3"):
        check(nodes[n].get("round_trips", 99) <= QUICK_MAX_ROUND_TRIPS,
              "%s: %s round trips when up to date, at most %d" %
              (n, nodes[n].get("round_trips"), QUICK_MAX_ROUND_TRIPS))
    stop_all()
finally:
    c.kill_and_unmount()
    for r in relays.values():
        r.stop()
print("rtt (50 ms): full resync %.2f s, round trips n2 %d n3 %d (limit %d), exchanges %s" %
      (full_s, rt["n2"], rt["n3"], MAX_ROUND_TRIPS, ex))
print("ok: round trips in sequence bounded over a 50 ms relay in %.1f s" %
      (time.monotonic() - T0))
