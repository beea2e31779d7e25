#!/usr/bin/env python3
"""Quick resync and Diverged secondaries. After a full resync, secondary s
is stopped while 16 MiB are written on the primary through its mount, and
secondary d takes stray writes of its own. The plan shows s Outdated and d
Diverged with the bytes it holds that the primary lacks (its dirty bytes),
both quick; the resync reads and sends only about those blocks (JSON stats)
in under a second, and verify exits 0. status shows dirty bytes and the
last resync of remote nodes too, and d's Diverged state is on its disk.
The proof (on by default) hashes again only the blocks written since the
first resync: its blocks are about the resync's. Volumes: 512 MiB
(sparse); 4 GiB with RESYNC_LONG=1 (the full compares before and after the
quick resync take most of a minute there), where each node's quick resync
with its proof must take under half a second."""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cluster_lib import MB, Cluster, check, resync_json, resync_ok, verify  # noqa: E402
from resyncfs_lib import Scratch  # noqa: E402

GB = 1 << 30
LONG = os.environ.get("RESYNC_LONG") == "1"
SIZE = 4 * GB if LONG else 512 * MB
BLOCK = 64 * 1024
WRITTEN = 16 * MB

sc = Scratch()
c = Cluster(sc, "quick", ["p", "s", "d"], "p", size=SIZE)
for n in c.names:
    c.start(n)
c.write("p", 0, os.urandom(4 * MB))
stats = resync_ok(c, "first resync")
st = c.status()
for n in ("s", "d"):
    check(st[n]["last_resync"] is not None and st[n]["dirty_bytes"] == 0,
          "status shows last_resync and dirty_bytes of remote node %s: %s" % (n, st[n]))
check(st["p"]["last_resync"] is not None, "the primary's last resync: %s" % st["p"])

# s stopped while 16 MiB are written on the primary, scattered over the volume.
c.stop("s")
step = SIZE // 16
for i in range(16):
    c.write("p", i * step + 7 * BLOCK, os.urandom(MB))
c.start("s")
check(c.status()["s"]["last_resync"] is not None, "s's last resync survives its restart")
# d: stray writes of its own (1 MiB, and 100 bytes inside one more block).
c.write("d", SIZE // 3 // BLOCK * BLOCK, os.urandom(MB))
c.write("d", SIZE - BLOCK + 10, b"x" * 100)
stray = MB + BLOCK

st = c.status()
check(st["s"]["dirty_bytes"] == 0, "s has no writes of its own: %s" % st["s"])
check(st["d"]["dirty_bytes"] == stray and st["d"]["state"] == "Diverged",
      "d Diverged with its dirty bytes in status: %s" % st["d"])
check(st["p"]["dirty_bytes"] >= WRITTEN, "the primary's dirty bytes: %s" % st["p"])
own = c.status("d")
check(own["d"]["state"] == "Diverged", "d's Diverged state is on its own disk: %s" % own["d"])

t0 = time.monotonic()
rc, plan, summary, err = resync_json(c)
wall = time.monotonic() - t0
check(rc == 0, "the quick resync exits 0 (%d): %s" % (rc, err))
pn = {n["name"]: n for n in plan["nodes"]}
check(pn["s"]["mode"] == "quick" and pn["d"]["mode"] == "quick", "both quick: %s" % pn)
check(pn["s"]["state"] == "Outdated" and pn["s"]["lacking_bytes"] == 0,
      "the plan shows s Outdated, holding nothing the primary lacks: %s" % pn["s"])
check(pn["d"]["state"] == "Diverged" and pn["d"]["lacking_bytes"] == stray,
      "the plan shows d Diverged with the %d bytes it holds: %s" % (stray, pn["d"]))
check(pn["s"]["differing_bytes"] == WRITTEN and pn["d"]["differing_bytes"] == WRITTEN + stray,
      "the plan's transfer is the union of both bitmaps: %s" % pn)
res = {n["name"]: n for n in summary["nodes"]}
# The blocks of the union are read; of d's 100-byte block only the one
# 4 KiB page that differs is written.
for n, want, written in (("s", WRITTEN, WRITTEN), ("d", WRITTEN + stray, WRITTEN + MB + 4096)):
    x = res[n]
    check(x["bytes_compared"] == 0, "%s: no full compare: %s" % (n, x))
    check(want <= x["bytes_read"] <= want + MB, "%s: read only about %d bytes: %s" % (n, want, x))
    check(x["bytes_written"] == written, "%s: wrote %d bytes: %s" % (n, written, x))
    # d's stray blocks go back to the primary's zeros, which compress.
    check(WRITTEN <= x["bytes_sent"] <= want + MB, "%s: sent about %d bytes: %s" % (n, want, x))
    check(x["seconds"] < (0.5 if LONG else 1.0), "%s: under %s s: %s"
          % (n, 0.5 if LONG else 1.0, x))
    # The proof's leaves were kept: only the blocks written are hashed.
    p = x.get("proof")
    check(p and p["match"] and p["blocks_hashed"] <= (want + MB) // BLOCK + 2,
          "%s: proof made from the written blocks only: %s" % (n, x))
rc, out, err = verify(c)
check(rc == 0, "verify exits 0 after the quick resync (%d): %s %s" % (rc, out, err))
st = c.status()
check(all(st[n]["state"] == "UpToDate" and st[n]["dirty_bytes"] == 0 for n in c.names),
      "every node UpToDate and clean: %s" % st)

# Nothing written since: the next resync is quick and sends nothing.
stats = resync_ok(c, "in sync")
check(all(x["bytes_written"] == 0 and x["bytes_compared"] == 0 for x in stats.values()),
      "an in-sync cluster moves nothing: %s" % stats)
for n in c.names:
    c.stop(n)
print("ok: %d MiB volumes, s read %d sent %d in %.3fs, d read %d sent %d in %.3fs, "
      "command %.2fs" % (SIZE // MB, res["s"]["bytes_read"], res["s"]["bytes_sent"],
                         res["s"]["seconds"], res["d"]["bytes_read"], res["d"]["bytes_sent"],
                         res["d"]["seconds"], wall))
