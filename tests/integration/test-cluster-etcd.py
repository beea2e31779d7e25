#!/usr/bin/env python3
"""Coordination through etcd (issue 14), with a real single-member etcd on
loopback: three daemons take their primary from the leader key (no
`primary` in the config); after the key changes, the next resync runs
from the new primary and ends identical. Two resyncs started at once
from two nodes: one runs, the other is refused naming the lock's holder;
the lock is released at the end. The leader key changes mid-resync: the
resync stops before its commit, its secondary is not committed (still
Inconsistent), the lock is released, and the next resync from the new
primary ends identical. status shows etcd reachable, and each node's
summary is published under the prefix."""
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cluster_lib import MB, RESYNCCTL, Cluster, check, resync_ok, wait_for  # noqa: E402
from etcd_lib import Etcd, b64, etcd_section, leader_key, lock_key, sanitizer_clean  # noqa: E402
from resyncfs_lib import Scratch  # noqa: E402

SIZE = 64 * MB
TAG = "ec"

sc = Scratch()
e = Etcd(sc)
e.put(leader_key(TAG), "n1")
c = Cluster(sc, TAG, ["n1", "n2", "n3"], None, size=SIZE)
# undo off: the failover below overwrites the old primary's 24 MiB.
with open(c.conf) as f:
    text = f.read().replace("block_size = 64K\n", "block_size = 64K\nundo = off\n")
with open(c.conf, "w") as f:
    f.write(text + etcd_section(e, TAG))
for n in c.names:
    c.start(n)


def primary_everywhere(want):
    for n in c.names:
        r = c.ctl("--node", n, "status", "--json")
        if r.returncode != 0 or json.loads(r.stdout).get("primary") != want:
            return False
    return True


def status_doc(via):
    r = c.ctl("--node", via, "status", "--json")
    check(r.returncode == 0, "status via %s exits 0: %s" % (via, r.stderr))
    return json.loads(r.stdout)


def identical(a, b):
    check(c.same_through_mounts(a, b), "%s and %s are byte-identical" % (a, b))


# 1. The primary from the leader key, on every node.
wait_for(lambda: primary_everywhere("n1"), what="every node's primary to be n1")
doc = status_doc("n3")
check(doc["etcd"]["reachable"] is True and doc["etcd"]["leader"] == "n1",
      "status shows etcd reachable and the leader: %s" % doc["etcd"])
r = c.ctl("status")
check("etcd: reachable at " in r.stdout, "status (text) says etcd is reachable: %s" % r.stdout)
c.write("n1", 0, os.urandom(4 * MB))
resync_ok(c, "resync from n1")
identical("n1", "n2")
identical("n1", "n3")
check(e.get(lock_key(TAG)) is None, "the lock is released after the resync")
pub = json.loads(e.get("/resync/%s/nodes/n2" % TAG) or "{}")
wait_for(lambda: json.loads(e.get("/resync/%s/nodes/n2" % TAG) or "{}").get("state")
         == "UpToDate", what="n2's summary UpToDate under the prefix")
pub = json.loads(e.get("/resync/%s/nodes/n2" % TAG))
check(pub["role"] == "secondary" and pub["generation"] and pub["last_resync"],
      "n2's summary under the prefix: %s" % pub)

# The key moves to n2: every node follows; the next resync runs from n2.
e.put(leader_key(TAG), "n2")
wait_for(lambda: primary_everywhere("n2"), what="every node's primary to be n2")
c.write("n2", 8 * MB, os.urandom(2 * MB))
r = c.ctl("--node", "n3", "resync", "--yes", "--json")
check(r.returncode == 0, "resync after the key moved exits 0: %s %s" % (r.stdout, r.stderr))
lines = [json.loads(x) for x in r.stdout.splitlines()]
plan, summary = lines[0], lines[-1]
check(plan.get("type") == "plan" and plan.get("primary") == "n2" and
      sorted(x["name"] for x in summary["nodes"]) == ["n1", "n3"],
      "the resync ran from n2 to n1 and n3: %s %s" % (plan, summary))
identical("n2", "n1")
identical("n2", "n3")

# 2. Two resyncs at once from two nodes: one runs, the other is refused
# with the holder's name.
c.write("n2", 0, os.urandom(16 * MB))
args = ["resync", "--yes", "--json", "--max-rate", "8M"]
p1 = subprocess.Popen([RESYNCCTL, "--config", c.conf, "--node", "n1"] + args,
                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
p3 = subprocess.Popen([RESYNCCTL, "--config", c.conf, "--node", "n3"] + args,
                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
o1, e1 = p1.communicate(timeout=120)
o3, e3 = p3.communicate(timeout=120)
rcs = sorted([p1.returncode, p3.returncode])
refused = e1 if p1.returncode else e3
check(rcs[0] == 0 and rcs[1] != 0, "one resync ran, the other failed: %d %d\n%s\n%s" %
      (p1.returncode, p3.returncode, e1, e3))
check("already running" in refused and "'n2'" in refused,
      "the refused one names the holder: %s" % refused)
check(e.get(lock_key(TAG)) is None, "the lock is released after the resync")
identical("n2", "n1")
identical("n2", "n3")

# The lock held elsewhere (a node that believes itself primary on a
# stale view, here written by hand under a lease): refused, naming it.
lease = e.call("/v3/lease/grant", {"TTL": 30})["ID"]
e.call("/v3/kv/put", {"key": b64(lock_key(TAG)), "lease": lease, "value": b64(json.dumps(
    {"holder": "n1", "started": 1, "started_text": "1970-01-01T00:00:01Z",
     "secondaries": ["n2", "n3"]}))})
r = c.ctl("--node", "n3", "resync", "--yes")
check(r.returncode != 0 and "held by node 'n1' since 1970-01-01T00:00:01Z (secondaries: n2, n3)"
      in r.stderr, "a resync while another node holds the lock is refused naming it: %s %s" %
      (r.stdout, r.stderr))
e.call("/v3/lease/revoke", {"ID": lease})

# 3. The leader key changes mid-resync (n2 -> n3, which the resync does
# not touch): the resync stops before its commit, n1 is not committed.
c.write("n2", 0, os.urandom(24 * MB))
p = subprocess.Popen([RESYNCCTL, "--config", c.conf, "--node", "n2", "resync", "--yes",
                      "--json", "--max-rate", "6M", "--node", "n1"],
                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
wait_for(lambda: e.get(lock_key(TAG)) is not None, what="the resync lock taken")
held = json.loads(e.get(lock_key(TAG)))
check(held["holder"] == "n2" and held["secondaries"] == ["n1"] and held["started"] > 0,
      "the lock says holder, start time and secondaries: %s" % held)
check(int(e.get_kv(lock_key(TAG)).get("lease", "0")) != 0, "the lock has a lease")
wait_for(lambda: status_doc("n1")["nodes"][0]["state"] == "Inconsistent" or p.poll() is not None,
         what="n1 being rewritten")
check(p.poll() is None, "the resync still runs when the key moves")
e.put(leader_key(TAG), "n3")
out, err = p.communicate(timeout=60)
check(p.returncode != 0, "the resync stopped by the key's move fails (%d): %s" % (p.returncode, out))
last = json.loads(out.splitlines()[-1])
n1 = [x for x in last["nodes"] if x["name"] == "n1"][0]
check(n1["result"] != "resynced" and n1["state"] == "Inconsistent" and
      "leader key changed to 'n3'" in n1.get("error", "") and not last["primary_committed"],
      "n1 was not committed, and the result says why: %s" % last)
check(e.get(lock_key(TAG)) is None, "the lock is released after the stop")
wait_for(lambda: primary_everywhere("n3"), what="every node's primary to be n3")
st = {x["name"]: x for x in status_doc("n1")["nodes"]}
check(st["n1"]["state"] == "Inconsistent", "n1 stays Inconsistent (no commit): %s" % st["n1"])
r = c.ctl("--node", "n1", "resync", "--yes", "--json", "--force", "n2")
check(r.returncode == 0, "the next resync from n3 exits 0 (%d): %s %s\n%s" % (r.returncode, r.stdout, r.stderr, c.log("n3")[-3000:]))
check(json.loads(r.stdout.splitlines()[0]).get("primary") == "n3", "it ran from n3: %s" % r.stdout)
identical("n3", "n1")
identical("n3", "n2")

# A leader key that names no node of the cluster: no primary, no resync.
e.put(leader_key(TAG), "ghost")
wait_for(lambda: primary_everywhere(None), what="no primary anywhere")
r = c.ctl("--node", "n1", "resync", "--yes")
check(r.returncode != 0 and "has no primary: etcd's leader key '/service/ec/leader' names no "
      "node of it" in r.stderr, "a resync without a primary is refused: %s" % r.stderr)
for n in list(c.procs):
    t0 = time.monotonic()
    c.stop(n)
    print("%s stopped in %.2f s" % (n, time.monotonic() - t0))
sanitizer_clean(c)
print("ok")
