#!/usr/bin/env python3
"""Disk faults on both sides, through the engine's fault I/O backend: one
daemon restarted with RESYNC_IO=fault and RESYNC_FAULT=op=...,nth=...,
errno=... (process-wide call counts, so nth is a point in its run). EIO
on read, write and fsync at random points, ENOSPC, on the secondary and
on the primary: the resync exits non-zero naming the node and the reason,
the secondary is not UpToDate, the primary's image is unchanged (hash
before and after); restarted without the fault, the next resync makes
the secondary byte-identical. Short reads and writes (short=1) are no
fault at all: the I/O layer makes them total, and the resync completes.

The paths that honour RESYNC_IO: the volume hashing (blockcmp, no mmap
with an explicit backend), the patch writer's writes and fdatasync, the
FUSE mount's I/O, and the primary's reads of the data it sends. Not: the
secondary's reads for PAGE_REQ, metadata, tree cache and spool files."""
import hashlib
import os
import random
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cluster_lib import MB, Cluster, check, resync_json, resync_ok  # noqa: E402
from resyncfs_lib import Scratch  # noqa: E402

T0 = time.monotonic()
SIZE = 16 * MB
LONG = os.environ.get("RESYNC_LONG") == "1"
rng = random.Random(int(os.environ.get("RESYNC_SEED", "5")))
sc = Scratch()
c = Cluster(sc, "disk", ["p", "s"], "p", size=SIZE)
for n in c.names:
    c.start(n)


def digest(n):
    with open(c.image(n), "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


REASON = {"EIO": "input/output", "ENOSPC": "space"}
# (node, op, nth, errno, short); nth drawn in the case when None.
cases = [
    ("s", "write", 1, "EIO", False),
    ("s", "write", None, "EIO", False),
    ("s", "write", 2, "ENOSPC", False),
    ("s", "write", None, "ENOSPC", False),
    ("s", "fsync", 1, "EIO", False),
    ("s", "read", 1, "EIO", False),
    ("s", "read", None, "EIO", False),
    ("s", "any", None, "EIO", False),
    ("s", "write", None, None, True),
    ("p", "read", 1, "EIO", False),
    ("p", "read", None, "EIO", False),
    ("p", "read", None, "EIO", False),
    ("p", "any", None, "EIO", False),
    ("p", "read", None, None, True),
]
if LONG:
    cases += [(n, op, None, e, False) for n in ("p", "s") for op in ("read", "write", "any")
              for e in ("EIO", "ENOSPC") for _ in range(3) if not (n == "p" and op == "write")]

passed = 0
try:
    for i, (node, op, nth, err, short) in enumerate(cases):
        if nth is None and not short:
            nth = rng.randrange(2, 5 if op == "write" else 9)
        # Something to send: 6 MiB of new data (in 1 MiB pieces) on the primary.
        for k in range(6):
            c.write("p", rng.randrange(0, SIZE // MB) * MB, os.urandom(MB))
        if node == "s" and op in ("read", "any"):
            # A secondary reads its volume only to compare it in full:
            # made Inconsistent first (a failed write), it is compared.
            c.stop("s")
            c.start("s", env={"RESYNC_IO": "fault", "RESYNC_FAULT": "op=write,nth=1,errno=EIO"})
            check(resync_json(c)[0] != 0, "s made Inconsistent by a failed write")
        while True:
            spec = "op=%s" % op + (",short=1" if short else ",nth=%d,errno=%s" % (nth, err))
            label = "%s %s" % (node, spec)
            c.stop(node)
            c.start(node, env={"RESYNC_IO": "fault", "RESYNC_FAULT": spec})
            before = digest("p")
            rc, plan, summary, errout = resync_json(c)
            res = {x["name"]: x for x in summary["nodes"]} if summary else {}
            check(digest("p") == before, "%s: the primary's image is unchanged" % label)
            if short or rc != 0 or nth == 1:
                break
            # The run made fewer calls than nth: no fault. Identical, and
            # again with an earlier point (and new data to send).
            check(digest("s") == digest("p"), "%s: no fault fired; s identical" % label)
            print("  %-40s past the end of the run: again earlier" % label)
            nth = 1 + (nth - 1) // 2
            for k in range(6):
                c.write("p", rng.randrange(0, SIZE // MB) * MB, os.urandom(MB))
        st = c.status()["s"]["state"]
        if short:
            check(rc == 0 and res["s"]["result"] == "resynced",
                  "%s: short I/O is no fault: the resync completes (%d): %s %s" %
                  (label, rc, summary, errout))
            check(digest("s") == digest("p"), "%s: s identical" % label)
        else:
            why = (res.get("s", {}).get("error", "") + " " + errout).lower()
            check(rc != 0 and res.get("s", {}).get("result") == "failed",
                  "%s: the resync fails (%d): %s %s" % (label, rc, summary, errout))
            check(node in why and (REASON[err] in why),
                  "%s: the failure names %s and says %s: %s" % (label, node, REASON[err], why))
            check(st != "UpToDate", "%s: s is not UpToDate (%s)" % (label, st))
            check(REASON[err] in c.log(node).lower(), "%s: %s logs the reason" % (label, node))
        # The fault gone: restart without it; the next resync completes.
        c.stop(node)
        c.start(node)
        resync_ok(c, label + ", fault gone")
        check(digest("s") == digest("p"), "%s: s byte-identical once the fault is gone" % label)
        print("  %-40s s was %s; then identical" % (label, st))
        passed += 1
finally:
    c.kill_and_unmount()
print("disk-fault cases passed: %d/%d in %.1f s" % (passed, len(cases), time.monotonic() - T0))
check(passed == len(cases), "every disk-fault case passed")
