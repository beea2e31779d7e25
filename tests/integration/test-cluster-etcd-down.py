#!/usr/bin/env python3
"""etcd unreachable (issue 14), with a real single-member etcd on
loopback. etcd stopped: a resync refuses to start and says why (the
primary cannot be known), and status shows etcd unreachable. etcd
stopped during a resync: the resync stops at a checkpoint, commits
nothing (the secondary stays Inconsistent, the primary does not
commit), and once etcd is back (and the dead run's lease expired) the
next resync ends identical. A daemon started while etcd is down serves
without a primary and follows the leader key once etcd answers."""
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
TAG = "ed"

sc = Scratch()
e = Etcd(sc)
e.put(leader_key(TAG), "p")
c = Cluster(sc, TAG, ["p", "s"], None, size=SIZE)
with open(c.conf, "a") as f:
    f.write(etcd_section(e, TAG, ttl="3s"))
for n in c.names:
    c.start(n)


def status_doc(via):
    r = c.ctl("--node", via, "status", "--json")
    check(r.returncode == 0, "status via %s exits 0: %s" % (via, r.stderr))
    return json.loads(r.stdout)


wait_for(lambda: status_doc("s").get("primary") == "p", what="s's primary from etcd")
c.write("p", 0, os.urandom(4 * MB))
resync_ok(c, "resync with etcd up")

# etcd stopped: no resync starts, and status says etcd is unreachable.
print("etcd stop", flush=True)
e.stop()
r = c.ctl("--node", "p", "resync", "--yes")
check(r.returncode != 0 and "etcd is unreachable" in r.stderr and "no resync starts" in r.stderr
      and "nothing was written" in r.stderr,
      "a resync with etcd down is refused with a clear message: %s %s" % (r.stdout, r.stderr))
doc = status_doc("p")
check(doc["etcd"]["reachable"] is False and doc["etcd"].get("error"),
      "status --json shows etcd unreachable: %s" % doc["etcd"])
r = c.ctl("--node", "p", "status")
check("etcd: UNREACHABLE" in r.stdout, "status shows etcd unreachable: %s" % r.stdout)
check(c.same_through_mounts("p", "s"), "nothing was written")

# etcd back; stopped again in the middle of a resync.
e.start(e.names[0])
e.wait_healthy()
wait_for(lambda: status_doc("p")["etcd"]["reachable"], what="etcd reachable again")
c.write("p", 0, os.urandom(24 * MB))
since = len(c.log("s"))
p = subprocess.Popen([RESYNCCTL, "--config", c.conf, "--node", "p", "resync", "--yes", "--json",
                      "--max-rate", "6M"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                     text=True)
wait_for(lambda: e.get(lock_key(TAG)) is not None, what="the resync lock taken")
wait_for(lambda: "rewriting this volume" in c.log("s")[since:] or p.poll() is not None,
         what="s being rewritten")
check(p.poll() is None, "the resync still runs when etcd stops")
print("etcd stop", flush=True)
e.stop()
out, err = p.communicate(timeout=60)
check(p.returncode != 0, "the resync that lost etcd fails (%d): %s %s" % (p.returncode, out, err))
last = json.loads(out.splitlines()[-1])
s = last["nodes"][0]
check(s["result"] != "resynced" and s["state"] == "Inconsistent" and
      "etcd is unreachable" in s.get("error", "") and not last["primary_committed"],
      "s was not committed, the primary did not commit, and why: %s" % last)
check(s["bytes_written"] < 24 * MB, "it stopped before the end: %s" % s)
check("committed: UpToDate" not in c.log("s")[since:],
      "s's log shows no commit of the stopped resync")

# etcd back: once the dead run's lease is gone, the next resync ends identical.
e.start(e.names[0])
e.wait_healthy()
wait_for(lambda: e.get(lock_key(TAG)) is None, timeout=20, what="the stopped run's lock gone")
# A verify on the node whose resync etcd stopped runs (the stop was that
# run's only), and finds s differing.
print("verify", flush=True)
r = c.ctl("--node", "p", "verify", "--json")
v = json.loads(r.stdout) if r.stdout.strip() else {}
check(r.returncode == 1 and v.get("nodes") and v["nodes"][0].get("differing_bytes", 0) > 0,
      "a verify after the stopped resync runs and finds s differing (%d): %s %s" %
      (r.returncode, r.stdout, r.stderr))
print("resync once back", flush=True)
resync_ok(c, "resync once etcd is back")
check(c.same_through_mounts("p", "s"), "p and s are byte-identical")

# A daemon started while etcd is down serves its mount without a primary,
# says why, and follows the leader key once etcd answers.
print("etcd stop", flush=True)
e.stop()
c.stop("s")
c.start("s")
doc = status_doc("s")
check(doc.get("primary") is None and doc["etcd"]["reachable"] is False,
      "s started with etcd down: no primary, etcd unreachable: %s" % doc)
check("etcd unreachable at start" in c.log("s"), "s's log says why it has no primary")
e.start(e.names[0])
e.wait_healthy()
wait_for(lambda: status_doc("s").get("primary") == "p", what="s following the leader key")
for n in list(c.procs):
    t0 = time.monotonic()
    c.stop(n)
    print("%s stopped in %.2f s" % (n, time.monotonic() - t0))
sanitizer_clean(c)
print("ok")
