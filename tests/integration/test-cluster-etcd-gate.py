#!/usr/bin/env python3
"""The checks right before a commit (issue 14), with a real etcd on
loopback. The primary's watch is made to lag behind the whole run
(failpoint etcd-deaf): the leader key moves mid-resync, the transfer
runs to its end, and the primary's own check before each COMMIT refuses
it: the secondary stays Inconsistent, the primary commits nothing, the
lock is released. With that check off too (etcd-deaf-nogate), the
secondary's check refuses the COMMIT of a node the leader key no longer
names, and the primary's summary names the state the secondary's ERROR
said (its status's). Then, the key back, a resync ends identical."""
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cluster_lib import MB, RESYNCCTL, Cluster, check, resync_ok, wait_for  # noqa: E402
from etcd_lib import Etcd, etcd_section, leader_key, lock_key, sanitizer_clean  # noqa: E402
from resyncfs_lib import Scratch  # noqa: E402

SIZE = 64 * MB
TAG = "eg"

sc = Scratch()
e = Etcd(sc)
e.put(leader_key(TAG), "p")
c = Cluster(sc, TAG, ["p", "s"], None, size=SIZE)
with open(c.conf, "a") as f:
    # The lock is released by the primary here, never left to expire: a
    # longer lease than the default 4 s keeps a loaded machine (a slow
    # etcd fsync, a late keep-alive) from ending a case by its expiry.
    f.write(etcd_section(e, TAG, ttl="15s"))
c.start("s")


def primary_of(via):
    r = c.ctl("--node", via, "status", "--json")
    return json.loads(r.stdout).get("primary") if r.returncode == 0 else None


for fp, want in (("etcd-deaf", "names 's', not this node ('p') before the commit"),
                 ("etcd-deaf-nogate", "'s' refused to commit: etcd's leader key names 's' "
                  "now, not 'p'")):
    c.start("p", env={"RESYNC_FAILPOINT": fp})
    wait_for(lambda: primary_of("p") == "p" and primary_of("s") == "p", what="p primary")
    c.write("p", 0, os.urandom(8 * MB))
    since = len(c.log("s"))
    p = subprocess.Popen([RESYNCCTL, "--config", c.conf, "--node", "p", "resync", "--yes",
                          "--json", "--max-rate", "4M"], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    wait_for(lambda: e.get(lock_key(TAG)) is not None, what="the resync lock taken")
    wait_for(lambda: "rewriting this volume" in c.log("s")[since:], what="s being rewritten")
    print("key moved", flush=True)
    e.put(leader_key(TAG), "s")
    out, err = p.communicate(timeout=60)
    check(p.returncode != 0, "%s: the resync fails (%d): %s %s" % (fp, p.returncode, out, err))
    last = json.loads(out.splitlines()[-1])
    s = last["nodes"][0]
    # Where s refused (nogate), its ERROR says its state, as its status
    # shows it: promoted by the key, it is UpToDate by definition
    # (node_primary_init()). Where the primary's own check refused, s
    # said nothing: the primary names it Inconsistent (it wrote).
    told = c.status("s")["s"]["state"] if fp == "etcd-deaf-nogate" else "Inconsistent"
    check(s["result"] != "resynced" and s["state"] == told and
          want in s.get("error", "") and not last["primary_committed"],
          "%s: the commit was refused (%s), nothing committed: %s\n%s" %
          (fp, want, last, c.log("p")[-2000:]))
    check(s["bytes_written"] >= 8 * MB, "%s: the transfer ran to its end: %s" % (fp, s))
    check(e.get(lock_key(TAG)) is None, "%s: the lock is released" % fp)
    e.put(leader_key(TAG), "p")
    c.stop("p")
    print("phase done", flush=True)

c.start("p")
wait_for(lambda: primary_of("p") == "p" and primary_of("s") == "p", what="p primary")
resync_ok(c, "resync with the key back on p")
check(c.same_through_mounts("p", "s"), "p and s are byte-identical")
for n in list(c.procs):
    t0 = time.monotonic()
    c.stop(n)
    print("%s stopped in %.2f s" % (n, time.monotonic() - t0))
sanitizer_clean(c)
print("ok")
