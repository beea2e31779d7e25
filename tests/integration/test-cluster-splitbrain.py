#!/usr/bin/env python3
"""Split brain (issue 11): two nodes p and s, each promoted and written in
turn (the config's primary edited between daemon restarts): p primary,
resync, stop; s primary, a write through s's mount, stop; p primary
again, a write through p's mount. Both sides detect it (status asked on
p and on s, both daemons' logs), in 10 of 10 fresh clusters. On the
last: resync --yes refuses without --force (exit non-zero, names s, no
byte changes), with --force s it runs, s's old data goes to its undo
journal (status shows the window), and a rollback restores it. Then two
nodes that both believe they are primary (a config changed on one node
only) are reported on both sides."""
import hashlib
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cluster_lib import MB, Cluster, check, resync_json, resync_ok  # noqa: E402
from resyncfs_lib import Scratch  # noqa: E402

SIZE = 8 * MB
RUNS = 10


def set_primary(c, name):
    with open(c.conf) as f:
        lines = f.read().splitlines()
    lines = [("primary = " + name) if x.startswith("primary = ") else x for x in lines]
    with open(c.conf, "w") as f:
        f.write("\n".join(lines) + "\n")


def digest(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def content(c, n):
    with open(c.file(n), "rb") as f:
        return f.read()


def split_brain_cluster(sc, i):
    c = Cluster(sc, "sb%d" % i, ["p", "s"], "p", size=SIZE)
    c.start("p")
    c.start("s")
    c.write("p", 0, os.urandom(2 * MB))
    resync_ok(c, "run %d: first resync" % i)
    c.stop("s")
    c.stop("p")
    set_primary(c, "s")
    c.start("s")
    c.start("p")
    c.write("s", 1 * MB, os.urandom(128 << 10))
    c.stop("p")
    c.stop("s")
    set_primary(c, "p")
    c.start("p")
    c.start("s")
    c.write("p", 4 * MB, os.urandom(128 << 10))
    return c


def detected(c, i):
    for via in ("p", "s"):
        st = c.status(via)
        check(st["s"].get("split_brain") is True and "split brain" in st["s"].get("reason", ""),
              "run %d: status asked on %s shows s in split brain: %s" % (i, via, st["s"]))
        check(st["s"]["state"] == "Diverged", "run %d: s Diverged (via %s)" % (i, via))
        txt = c.ctl("--node", via, "status").stdout
        check("s: SPLIT BRAIN: " in txt and "--force s" in txt,
              "run %d: the text status (via %s) says s is in split brain: %s" % (i, via, txt))
    for n in ("p", "s"):
        check("split brain" in c.log(n), "run %d: %s's log says split brain" % (i, n))


t0 = time.monotonic()
sc = Scratch()
for i in range(RUNS):
    c = split_brain_cluster(sc, i)
    detected(c, i)
    if i < RUNS - 1:
        c.kill_and_unmount()

# ---- the last cluster: refused without --force, no byte changes ----
before = {n: digest(c.image(n)) for n in c.names}
s_before = content(c, "s")
rc, plan, summary, err = resync_json(c)
check(rc != 0 and "'s'" in err and "split brain" in err and "--force" in err,
      "resync without --force refused naming s: rc %d: %s" % (rc, err))
check("bytes of its own" in err, "the refusal says what s holds: %s" % err)
check({n: digest(c.image(n)) for n in c.names} == before, "no byte changed by the refusal")
check(not os.path.exists(c.image("s") + ".resync-undo"), "no journal yet")

# ---- with --force s: resynced, s's old data in its journal ----
rc, plan, summary, err = resync_json(c, "--force", "s")
check(rc == 0, "resync --force s: %s %s" % (err, summary))
pl = {x["name"]: x for x in plan["nodes"]}
check(pl["s"]["undo"] is True and pl["s"]["split_brain"] is True,
      "the plan: s in split brain, journaled: %s" % pl["s"])
check(content(c, "s") == content(c, "p"), "s now has the primary's data")
check(os.path.exists(c.image("s") + ".resync-undo"), "s's journal exists")
st = c.status()
check(st["s"].get("undo") and st["s"]["undo"]["bytes"] > 0,
      "status shows s's undo window: %s" % st["s"])
r = c.ctl("rollback", "s", "--yes", "--json")
check(r.returncode == 0, "rollback s: %s %s" % (r.stdout, r.stderr))
check(content(c, "s") == s_before, "the rollback restores s's pre-resync bytes")
c.kill_and_unmount()

# ---- two primaries: s's config names s, p's names p ----
c = Cluster(sc, "two", ["p", "s"], "p", size=SIZE)
c.start("p")
c.start("s")
resync_ok(c, "two primaries: first resync")
c.stop("s")
with open(c.conf) as f:
    conf_s = f.read().replace("primary = p", "primary = s")
conf_p = c.conf
c.conf = sc.path("two-s.conf")
with open(c.conf, "w") as f:
    f.write(conf_s)
c.start("s")
c.conf = conf_p
st = c.status("p")
check(st["s"].get("split_brain") is True and "two primaries" in st["s"].get("reason", ""),
      "p's status reports s acting as primary too: %s" % st["s"])
for n in ("p", "s"):
    check("two primaries" in c.log(n), "%s's log reports two primaries" % n)
c.kill_and_unmount()
print(json.dumps({"ok": True, "runs": RUNS, "seconds": round(time.monotonic() - t0, 1)}))
sc.cleanup()
