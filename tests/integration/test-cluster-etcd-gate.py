#!/usr/bin/env python3
"""The checks right before a commit (issue 14), and a promotion while
being rewritten, with a real etcd on loopback. The primary's watch is
made to lag behind the whole run (failpoint etcd-deaf), and the
secondary's behind its rewrite (etcd-deaf-writing): the leader key moves
mid-resync, the transfer runs to its end, and the primary's own check
before each COMMIT refuses it: the secondary stays Inconsistent, the
primary commits nothing, the lock is released. With the primary's check
off (etcd-deaf-nogate) and the secondary hearing the key: the secondary,
half-rewritten, refuses to become primary (DRBD's rule: it stays an
Inconsistent secondary, its generation unchanged, status says why), and
the old primary's writes stop at the next frame, not at the COMMIT:
nothing near the whole transfer landed. Restarted with the key still on
it, it refuses again. Then, the key back, a resync ends identical."""
import json
import os
import re
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


def resync_moving_key(fp, s_env, watch=None):
    """p resyncs s (8 MiB at 4 MiB/s), the key moves to s meanwhile:
    p's summary (with s's event stream under "events" when watched), s's
    generation from before and where s's log stood."""
    c.stop("s")
    c.start("s", env=s_env)
    events = watch("events-nogate.jsonl") if watch else None
    c.start("p", env={"RESYNC_FAILPOINT": fp})
    wait_for(lambda: primary_of("p") == "p" and primary_of("s") == "p", what="p primary")
    gen = c.status("s")["s"]["generation"]
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
    check(not last["primary_committed"], "%s: nothing committed: %s" % (fp, last))
    check(e.get(lock_key(TAG)) is None, "%s: the lock is released" % fp)
    if events:
        last["nodes"][0]["events"] = events
    return last["nodes"][0], gen, since


def same_pages(a, b, length):
    """4 KiB pages of the first length bytes that images a and b share."""
    with open(c.image(a), "rb") as fa, open(c.image(b), "rb") as fb:
        x, y = fa.read(length), fb.read(length)
    return sum(x[i:i + 4096] == y[i:i + 4096] for i in range(0, length, 4096))


def refused_status(what):
    st = c.status("s")["s"]
    check(st["state"] == "Inconsistent" and "refused to act as primary" in
          st.get("promotion_refused", ""),
          "%s: s, half-rewritten, refused the primary's role: %s" % (what, st))
    return st


# 1. The primary's own gate (s deaf to the key while it is rewritten).
s, _, _ = resync_moving_key("etcd-deaf", {"RESYNC_FAILPOINT": "etcd-deaf-writing"})
check(s["result"] != "resynced" and s["state"] == "Inconsistent" and
      "names 's', not this node ('p') before the commit" in s.get("error", ""),
      "etcd-deaf: p's check refused the commit: %s\n%s" % (s, c.log("p")[-2000:]))
check(s["bytes_written"] >= 8 * MB, "etcd-deaf: the transfer ran to its end: %s" % s)
e.put(leader_key(TAG), "p")
c.stop("p")
print("phase done", flush=True)


def events_of(path):
    with open(path) as f:
        return [json.loads(x) for x in f if x.strip()]


def refusal_event(path):
    return [x for x in events_of(path) if x.get("event") == "state_changed" and
            "refused to act as primary" in x.get("reason", "") and x.get("expected") is False
            and x.get("state") == "Inconsistent"]


def watch_events(name):
    """resyncctl --node s events --json into a file, once its stream is open."""
    path = sc.path(name)
    out = open(path, "w")
    ev = subprocess.Popen([RESYNCCTL, "--config", c.conf, "--node", "s", "events", "--json"],
                          stdout=out, stderr=subprocess.DEVNULL)
    wait_for(lambda: any(x.get("event") == "subscribed" for x in events_of(path)) or
             ev.poll() is not None, what="s's event stream open")
    check(ev.poll() is None, "resyncctl events runs")
    return ev, path


# 2. No gate on p; s hears the key: it refuses the role, and p's writes
# stop at the next frame.
s, gen, since = resync_moving_key("etcd-deaf-nogate", None, watch_events)
ev, evpath = s.pop("events")
wait_for(lambda: refusal_event(evpath), what="s's event of its refusal")
ev.terminate()
ev.wait(timeout=30)
check(s["result"] != "resynced" and s["state"] == "Inconsistent" and
      "the primary changed during the resync ('s' now)" in s.get("error", ""),
      "etcd-deaf-nogate: s refused p's next frame, Inconsistent: %s\n%s" % (s, c.log("p")[-2000:]))
# p sent it all (bytes_written counts what p sent, 2 s at 4 MiB/s), but s
# wrote only the frames it took before the key moved (the first, whose
# start the test waited for, and any within the watch's latency), each at
# most 4 MiB (RESYNC_WIRE_BLOCKS_MAX): not p's 8 MiB, which all landed
# before (the COMMIT refused alone).
m = re.search(r"after (\d+) BLOCKS and (\d+) EXTENTS frames", s["error"])
frames = int(m.group(1)) + int(m.group(2))
landed = same_pages("p", "s", 8 * MB) * 4096
check(frames >= 1 and landed <= frames * 4 * MB and landed < 8 * MB,
      "etcd-deaf-nogate: the writes stopped at the key's move, not at the COMMIT: s holds "
      "%d bytes of p's 8 MiB after %d frames: %s" % (landed, frames, s))
st = refused_status("etcd-deaf-nogate")
check(st["generation"] == gen, "s's generation unchanged (no fork as primary): %s %s" %
      (gen, st))


def summary_s():
    return json.loads(e.get("/resync/%s/nodes/s" % TAG) or "{}")


wait_for(lambda: "refused to act as primary" in summary_s().get("promotion_refused", ""),
         what="s's summary in etcd says it refused the role")
check(summary_s()["role"] == "secondary" and summary_s()["state"] == "Inconsistent",
      "s's summary: a secondary, Inconsistent: %s" % summary_s())
check("refused to act as primary: its volume is" in c.log("s")[since:] and
      "(this node is secondary: it refused the role)" in c.log("s")[since:],
      "s's log says it refused the role: %s" % c.log("s")[since:][-2000:])
c.stop("p")
# Restarted with the key still on it: refused again, at the start.
c.stop("s")
since = len(c.log("s"))
c.start("s")
refused_status("restart")
r = c.ctl("--node", "s", "status")
check(r.returncode == 0 and "s: NOT ACTING AS PRIMARY: 's' refused to act as primary" in r.stdout,
      "status (text) says s refused the role: %s %s" % (r.stdout, r.stderr))
check("primary of cluster 'eg' from etcd's leader key: s" in c.log("s")[since:] and
      "refused to act as primary" in c.log("s")[since:],
      "s refused at its start: %s" % c.log("s")[since:][-2000:])
# The way out when no node with good data is left (DRBD's primary
# --force): s, named by the key, acts as primary with what it holds.
r = c.ctl("--node", "s", "promote", "--force", "--yes")
check(r.returncode == 0 and "'s' acts as primary by force" in r.stdout,
      "promote --force of s, the key's node: %s %s" % (r.stdout, r.stderr))
wait_for(lambda: summary_s().get("role") == "primary" and
         not summary_s().get("promotion_refused") and summary_s().get("state") == "UpToDate",
         what=lambda: "s's summary in etcd: primary, UpToDate, nothing refused: %s" %
         summary_s())
e.put(leader_key(TAG), "p")
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
