#!/usr/bin/env python3
"""etcd's own failures during a resync (issue 14), with a real
three-member etcd cluster on loopback. One member killed during a
resync (the one resyncd spoke to first): the resync completes, since
etcd's quorum holds. Then the lock survives its holder's crash only for
its lease: kill -9 of the primary's daemon during a resync of one node;
the leader key moves to that node, half-rewritten, which refuses the
role (Inconsistent), then to another node, whose resync is refused
(naming the dead holder) while the lease runs, and starts once it expired (lock_ttl 4s),
not before; it ends identical."""
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cluster_lib import MB, RESYNCCTL, Cluster, check, wait_for  # noqa: E402
from etcd_lib import Etcd, etcd_section, leader_key, lock_key, sanitizer_clean  # noqa: E402
from resyncfs_lib import Scratch  # noqa: E402

SIZE = 64 * MB
TAG = "ef"
TTL = 4

sc = Scratch()
e = Etcd(sc, members=3)
e.put(leader_key(TAG), "a")
c = Cluster(sc, TAG, ["a", "b", "d"], None, size=SIZE)
with open(c.conf, "a") as f:
    f.write(etcd_section(e, TAG, ttl="%ds" % TTL))
for n in c.names:
    c.start(n)


def primary_of(via):
    r = c.ctl("--node", via, "status", "--json")
    return json.loads(r.stdout).get("primary") if r.returncode == 0 else None


def slow_resync(via, *more):
    return subprocess.Popen([RESYNCCTL, "--config", c.conf, "--node", via, "resync", "--yes",
                             "--json", "--max-rate", "8M"] + list(more),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


wait_for(lambda: all(primary_of(n) == "a" for n in c.names), what="every node's primary a")

# One of three members killed mid-resync: the resync completes.
c.write("a", 0, os.urandom(24 * MB))
p = slow_resync("a")
wait_for(lambda: e.get(lock_key(TAG)) is not None, what="the resync lock taken")
e.kill(e.names[0])
out, err = p.communicate(timeout=120)
check(p.returncode == 0, "the resync completes with two of three etcd members (%d): %s %s\n%s"
      % (p.returncode, out, err, c.log("a")[-2000:]))
for n in ("b", "d"):
    check(c.same_through_mounts("a", n), "a and %s are byte-identical" % n)
check(e.get(lock_key(TAG)) is None, "the lock is released")
check("reading the leader key again" in c.log("a"),
      "a's watch on the killed member broke and went on through another one")

# kill -9 of the holder mid-resync (of d; b keeps its consistent data):
# its lock lives as long as its lease.
c.write("a", 0, os.urandom(24 * MB))
since = len(c.log("d"))
p = slow_resync("a", "--node", "d")
wait_for(lambda: e.get(lock_key(TAG)) is not None, what="the resync lock taken")
wait_for(lambda: "rewriting this volume" in c.log("d")[since:], what="d being rewritten")
c.kill9("a")
t_kill = time.monotonic()
p.communicate(timeout=60)
# d, half-rewritten by the dead holder, refuses the primary's role.
e.put(leader_key(TAG), "d")
wait_for(lambda: "refused to act as primary" in c.log("d")[since:], what="d's refusal")
r = c.ctl("--node", "d", "status", "--json")
st = {x["name"]: x for x in json.loads(r.stdout)["nodes"]} if r.returncode == 0 else {}
check(st.get("d", {}).get("state") == "Inconsistent" and
      "its volume is Inconsistent" in st["d"].get("promotion_refused", ""),
      "d, Inconsistent, refused the role: %s %s" % (r.stdout, r.stderr))
r = c.ctl("--node", "b", "resync", "--yes", "--node", "d")
check(r.returncode != 0 and "no acting primary: 'd' refused to act as primary" in r.stderr,
      "a resync while the key names d is refused, saying why: %s %s" % (r.stdout, r.stderr))
e.put(leader_key(TAG), "b")
wait_for(lambda: primary_of("b") == "b" and primary_of("d") == "b", what="b primary")
r = c.ctl("--node", "b", "resync", "--yes", "--node", "d")
early = time.monotonic() - t_kill
check(r.returncode != 0 and "held by node 'a'" in r.stderr,
      "a resync while the dead holder's lease runs is refused, naming it: %s %s" %
      (r.stdout, r.stderr))
check(early < TTL, "that refusal came before the lease could expire (%.1f s)" % early)
wait_for(lambda: e.get(lock_key(TAG)) is None, timeout=TTL + 10, what="the lease's expiry")
gone = time.monotonic() - t_kill
check(gone >= TTL * 2 / 3 - 0.5, "the lock outlived its holder until its lease expired "
      "(%.1f s after the kill, TTL %d s)" % (gone, TTL))
r = c.ctl("--node", "b", "resync", "--yes", "--json", "--node", "d")
check(r.returncode == 0, "the resync from b once the lease expired exits 0: %s %s" %
      (r.stdout, r.stderr))
check(c.same_through_mounts("b", "d"), "b and d are byte-identical")
for n in list(c.procs):
    t0 = time.monotonic()
    c.stop(n)
    print("%s stopped in %.2f s" % (n, time.monotonic() - t0))
sanitizer_clean(c)
print("ok")
