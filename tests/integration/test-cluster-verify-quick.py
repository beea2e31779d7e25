#!/usr/bin/env python3
"""A verify before a resync keeps the quick path of an Outdated secondary
(tools/demo's drift step showed "full" for it). After a full resync,
secondary s is stopped while the primary writes 4 MiB; verify finds s
differing (exit 1), all of it in blocks the primary's dirty bitmap marks;
the resync that follows is quick (no compare, only those blocks read)
and verify then exits 0. Then the other side: a block of s's image
rewritten behind its daemon's back (no bitmap marks it) while the
primary writes again: verify finds both, and the resync that follows is
a full compare, which mends the stray block too."""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cluster_lib import MB, Cluster, check, resync_json, resync_ok, verify  # noqa: E402
from resyncfs_lib import Scratch  # noqa: E402

SIZE = 64 * MB
BLOCK = 64 * 1024
WRITTEN = 4 * MB

t0 = time.monotonic()
sc = Scratch()
c = Cluster(sc, "vquick", ["p", "s"], "p", size=SIZE)
try:
    for n in c.names:
        c.start(n)
    c.write("p", 0, os.urandom(4 * MB))
    resync_ok(c, "first resync")

    # ---- an Outdated secondary: what differs is what the primary marked ----
    c.stop("s")
    for i in range(4):
        c.write("p", 8 * MB + i * 12 * MB, os.urandom(MB))
    c.start("s")
    rc, out, err = verify(c)
    check(rc == 1, "verify finds the Outdated s differing (exit 1, %d): %s %s" % (rc, out, err))
    rc, plan, summary, err = resync_json(c)
    check(rc == 0, "the resync after the verify exits 0 (%d): %s" % (rc, err))
    ps = {n["name"]: n for n in plan["nodes"]}["s"]
    check(ps["mode"] == "quick" and ps["state"] == "Outdated",
          "after a verify, the Outdated s is still quick: %s" % ps)
    x = {n["name"]: n for n in summary["nodes"]}["s"]
    check(x["bytes_compared"] == 0 and WRITTEN <= x["bytes_read"] <= WRITTEN + MB,
          "quick: no compare, only the primary's written blocks read: %s" % x)
    rc, out, err = verify(c)
    check(rc == 0, "verify exits 0 after the quick resync (%d): %s %s" % (rc, out, err))

    # ---- a block changed behind the bitmaps' back: a full compare ----
    fd = os.open(c.image("s"), os.O_WRONLY)
    try:
        os.pwrite(fd, os.urandom(BLOCK), 40 * MB)
        os.fsync(fd)
    finally:
        os.close(fd)
    c.write("p", 20 * MB, os.urandom(MB))
    rc, out, err = verify(c)
    check(rc == 1, "verify finds s differing again (exit 1, %d): %s %s" % (rc, out, err))
    rc, plan, summary, err = resync_json(c)
    check(rc == 0, "the resync after the second verify exits 0 (%d): %s" % (rc, err))
    ps = {n["name"]: n for n in plan["nodes"]}["s"]
    check(ps["mode"] == "full",
          "a block no bitmap marks, found by the verify, needs a full compare: %s" % ps)
    x = {n["name"]: n for n in summary["nodes"]}["s"]
    check(x["bytes_compared"] > 0, "the full compare ran: %s" % x)
    rc, out, err = verify(c)
    check(rc == 0, "verify exits 0 after the full resync: the stray block mended too "
          "(%d): %s %s" % (rc, out, err))
    for n in c.names:
        c.stop(n)
finally:
    c.kill_and_unmount()
print("ok: cluster-verify-quick (%.1f s)" % (time.monotonic() - t0))
