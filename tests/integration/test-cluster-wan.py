#!/usr/bin/env python3
"""The cluster over a WAN: separate hosts (netns_lib), the primary reaching
each secondary through a relay of 25 ms each way (50 ms round trip) with
2 ms of jitter. A full resync, a quick resync, kill -9 of a secondary
mid-resync resumed, then a partition: the link to d goes silent in the
middle of a resync; s completes, the command exits non-zero naming d (its
session times out: session_timeout = 3s), d is Inconsistent; once healed
the next resync completes and every image is byte-identical."""
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cluster_lib import (MB, RESYNCCTL, check, checkpoint, resync_json, resync_ok,  # noqa: E402
                         verify, wait_for)
from netns_lib import BRIDGE_ADDR, PORT, Net, NetnsCluster  # noqa: E402
from relay_lib import DOWN, UP, Relay, Shape  # noqa: E402
from resyncfs_lib import Scratch  # noqa: E402

T0 = time.monotonic()
CHECKPOINT = 16 * MB
ONE_WAY = 0.025
sc = Scratch()
net = Net(["p", "s", "d"])
c = NetnsCluster(sc, "wan", ["p", "s", "d"], "p", 64 * MB, net, extra="session_timeout = 3s")
relays = {n: Relay((net.addr[n], PORT), listen_host=BRIDGE_ADDR, netns=net.bridge,
                   up=Shape(ONE_WAY, 0.002), down=Shape(ONE_WAY, 0.002)) for n in ("s", "d")}
c.reroute({n: r.address for n, r in relays.items()})
times = {}


def timed(what, fn, *a):
    t = time.monotonic()
    x = fn(*a)
    times[what] = time.monotonic() - t
    return x


def stream(*args):
    return subprocess.Popen([RESYNCCTL, "--config", c.conf, "resync", "--yes", "--json"] +
                            list(args), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            text=True)


def until_transfer(run, at):
    done = 0
    for line in run.stdout:
        o = json.loads(line)
        if o.get("type") == "progress" and o.get("phase") == "transfer":
            done = o["bytes_done"]
            if done >= at:
                break
    return done


try:
    for n in c.names:
        c.start(n)

    # ---- full resync ----
    for i in range(12):
        c.write("p", i * 4 * MB + 8192, os.urandom(MB))
    timed("full", resync_ok, c, "full resync over 50 ms")
    check(verify(c)[0] == 0, "verify exits 0 after the full resync")

    # ---- quick: d stopped while the primary takes 2 MiB ----
    c.stop("d")
    c.write("p", 20 * MB, os.urandom(MB))
    c.write("p", 50 * MB, os.urandom(MB))
    c.start("d")
    rc, plan, summary, err = timed("quick", resync_json, c)
    check(rc == 0, "the quick resync exits 0 (%d): %s" % (rc, err))
    check({n["name"]: n for n in plan["nodes"]}["d"]["mode"] == "quick", "d quick: %s" % plan)

    # ---- kill -9 of s mid-resync, resumed ----
    for i in range(10):
        c.write("p", i * 4 * MB + 2 * MB, os.urandom(3 * MB))
    run = stream("--node", "s", "--max-rate", "8M")
    done = until_transfer(run, CHECKPOINT + 2 * MB)
    check(done >= CHECKPOINT + 2 * MB, "the run reached 18 MiB (at %d)" % done)
    # The primary's progress runs ahead of what s has made durable (the
    # more so on a loaded machine): the kill waits for s's checkpoint on
    # its disk (resyncctl info reads it beside the running daemon).
    wait_for(lambda: run.poll() is not None or checkpoint(c, "s") >= CHECKPOINT, timeout=60,
             what="s's first checkpoint on its disk")
    check(run.poll() is None, "the run still ran when s had saved its first checkpoint")
    c.kill9("s")
    run.stdout.read()
    check(run.wait(timeout=60) != 0, "the interrupted resync exits non-zero")
    c.start("s")
    rc, plan, summary, err = timed("resumed", resync_json, c)
    check(rc == 0, "the resumed resync exits 0 (%d): %s" % (rc, err))
    pn = {n["name"]: n for n in plan["nodes"]}
    check((pn["s"].get("resume_offset") or 0) >= CHECKPOINT, "s resumes: %s" % pn["s"])
    check(verify(c)[0] == 0, "verify exits 0 after the resumed resync")

    # ---- d partitioned mid-resync ----
    for i in range(12):
        c.write("p", i * 5 * MB, os.urandom(2 * MB))
    run = stream("--max-rate", "24M")
    done = until_transfer(run, 4 * MB)
    relays["d"].partition(True)
    t = time.monotonic()
    rest = run.stdout.read()
    rc = run.wait(timeout=60)
    times["partition noticed"] = time.monotonic() - t
    summary = json.loads(rest.splitlines()[-1])
    res = {x["name"]: x for x in summary["nodes"]}
    check(rc != 0, "the resync with d partitioned exits non-zero")
    check(res["d"]["result"] == "failed" and "d" in res["d"].get("error", ""),
          "the summary names d: %s" % res["d"])
    check(res["s"]["result"] == "resynced", "s completes: %s" % res["s"])
    st = c.status()
    check(st["d"]["state"] != "UpToDate", "d is not UpToDate: %s" % st["d"])
    relays["d"].partition(False)
    rc, plan, summary, err = timed("after healing", resync_json, c)
    check(rc == 0, "the resync after healing exits 0 (%d): %s %s" % (rc, summary, err))
    check(verify(c)[0] == 0, "verify exits 0 after healing")

    for n in ("s", "d", "p"):
        c.stop(n)
    with open(c.image("p"), "rb") as f:
        want = f.read()
    for n in ("s", "d"):
        with open(c.image(n), "rb") as f:
            check(f.read() == want, "%s byte-identical to the primary" % n)
    check(all(r.bytes[UP] > 0 and r.bytes[DOWN] > 0 for r in relays.values()),
          "both secondaries were reached through their relays")
finally:
    c.kill_and_unmount()
    for r in relays.values():
        r.stop()
    net.cleanup()
print("wan (50 ms RTT): " + ", ".join("%s %.2f s" % x for x in times.items()))
print("ok: full, quick, resumed and a partitioned secondary over 50 ms; identical in %.1f s" %
      (time.monotonic() - T0))
