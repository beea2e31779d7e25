#!/usr/bin/env python3
"""The main cluster scenarios with every node a separate host (netns_lib):
its own network namespace and address (10.99.0.N, reached over veth and a
bridge), its own mount namespace (its FUSE mount is in no other table).
A full resync, a quick resync of a restarted secondary, the faults (the
stream to s cut, then a byte of it flipped, through a relay in the bridge
namespace: s named, Inconsistent; then completed) and kill -9 of s
mid-resync resumed from its checkpoint. Every image ends byte-identical."""
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cluster_lib import (MB, RESYNCCTL, check, checkpoint, resync_json, resync_ok,  # noqa: E402
                         verify, wait_for)
from netns_lib import BRIDGE_ADDR, PORT, Net, NetnsCluster, in_ns_main_table, ip  # noqa: E402
from relay_lib import UP, Fault, Relay  # noqa: E402
from resyncfs_lib import Scratch  # noqa: E402

T0 = time.monotonic()
CHECKPOINT = 16 * MB
sc = Scratch()
net = Net(["p", "s", "d"])
c = NetnsCluster(sc, "netns", ["p", "s", "d"], "p", 64 * MB, net)
relay = Relay((net.addr["s"], PORT), listen_host=BRIDGE_ADDR, netns=net.bridge)
c.reroute({"s": relay.address})
try:
    for n in c.names:
        c.start(n)

    # ---- separate hosts: own address, own mount table ----
    for n in c.names:
        addrs = ip("-n", net.ns[n], "-4", "-o", "addr", "show").stdout
        others = [net.addr[x] for x in c.names if x != n]
        check(net.addr[n] in addrs and not any(a + "/" in addrs for a in others),
              "%s holds its own address only: %s" % (n, addrs))
        check(c.mounted(n), "%s's mount is in its own table" % n)
        check(not in_ns_main_table(c.mount(n)), "%s's mount is not in the test's table" % n)
        for x in c.names:
            if x != n:
                with open("/proc/%d/mountinfo" % c.pids[x]) as f:
                    check(os.path.realpath(c.mount(n)) not in f.read(),
                          "%s's mount is not in %s's table" % (n, x))

    # ---- full resync ----
    for i in range(12):
        c.write("p", i * 4 * MB + 8192, os.urandom(MB))
    st = resync_ok(c, "first resync")
    check(verify(c)[0] == 0, "verify exits 0 after the first resync")
    check(relay.conns > 0 and relay.bytes[UP] >= 12 * MB,
          "the stream to s went through the relay (%d bytes)" % relay.bytes[UP])
    print("full resync: %s" % {n: x["bytes_written"] for n, x in st.items()})

    # ---- quick resync: d stopped while the primary takes 2 MiB ----
    c.stop("d")
    c.write("p", 20 * MB, os.urandom(MB))
    c.write("p", 50 * MB, os.urandom(MB))
    c.start("d")
    rc, plan, summary, err = resync_json(c)
    check(rc == 0, "the quick resync exits 0 (%d): %s" % (rc, err))
    pn = {n["name"]: n for n in plan["nodes"]}
    check(pn["d"]["mode"] == "quick" and pn["d"]["differing_bytes"] == 2 * MB,
          "d is resynced quick, 2 MiB: %s" % pn["d"])
    check(c.same_through_mounts("p", "d"), "d's mount reads as the primary's")

    # ---- faults: the stream to s cut, then flipped ----
    # 24 MiB differ; frames carry up to several MiB: a cut at 12 MiB
    # lands after some were written.
    for i in range(8):
        c.write("p", i * 8 * MB, os.urandom(3 * MB))
    relay.arm(Fault("cut", UP, at=12 * MB))
    rc, plan, summary, err = resync_json(c)
    res = {x["name"]: x for x in summary["nodes"]} if summary else {}
    check(rc != 0 and res.get("s", {}).get("result") == "failed" and "s" in res["s"]["error"],
          "the cut stream fails s's resync and names it (%d): %s %s" % (rc, summary, err))
    check(res["d"]["result"] == "resynced", "d is not held back: %s" % res["d"])
    st = c.status()
    check(st["s"]["state"] == "Inconsistent", "s Inconsistent after the cut: %s" % st["s"])
    relay.arm(Fault("flip", UP, at=2 * MB + 12345))
    rc, plan, summary, err = resync_json(c, "--node", "s")
    res = {x["name"]: x for x in summary["nodes"]} if summary else {}
    check(rc != 0 and res.get("s", {}).get("result") == "failed",
          "a flipped byte fails s's resync (%d): %s %s" % (rc, summary, err))
    check(c.status()["s"]["state"] == "Inconsistent", "s Inconsistent after the flip")
    check(len(relay.fired) == 2, "both faults fired: %s" % relay.fired)
    resync_ok(c, "after the faults")
    check(verify(c)[0] == 0, "verify exits 0 after the faults")

    # ---- kill -9 of s mid-resync, resumed ----
    for i in range(10):
        c.write("p", i * 4 * MB + 4 * MB // 2, os.urandom(4 * MB // 2 + 4 * MB // 4))
    run = subprocess.Popen([RESYNCCTL, "--config", c.conf, "resync", "--yes", "--json",
                            "--node", "s", "--max-rate", "8M"],
                           stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True)
    done = 0
    for line in run.stdout:
        o = json.loads(line)
        if o.get("type") == "progress" and o.get("phase") == "transfer":
            done = o["bytes_done"]
            if done >= CHECKPOINT + 2 * MB:
                break
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
    check(c.status("s")["s"]["state"] == "Inconsistent", "s Inconsistent after kill -9")
    rc, plan, summary, err = resync_json(c)
    check(rc == 0, "the resumed resync exits 0 (%d): %s" % (rc, err))
    pn = {n["name"]: n for n in plan["nodes"]}
    check((pn["s"].get("resume_offset") or 0) >= CHECKPOINT,
          "s resumes from its checkpoint: %s" % pn["s"])
    check(verify(c)[0] == 0, "verify exits 0 after the resumed resync")

    for n in ("s", "d", "p"):
        c.stop(n)
    with open(c.image("p"), "rb") as f:
        want = f.read()
    for n in ("s", "d"):
        with open(c.image(n), "rb") as f:
            check(f.read() == want, "%s byte-identical to the primary" % n)
finally:
    c.kill_and_unmount()
    relay.stop()
    net.cleanup()
print("ok: separate hosts (3 network and mount namespaces): full, quick, cut, flip, "
      "kill -9 resumed; identical in %.1f s" % (time.monotonic() - T0))
