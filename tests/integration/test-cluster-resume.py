#!/usr/bin/env python3
"""kill -9 of a secondary's daemon in the middle of its resync: the daemon
restarts over its dead FUSE mount, the secondary is Inconsistent with a
checkpoint of the primary's generation, and the next resync resumes: it
sends less than what was left plus one checkpoint interval (16 MiB), and
the secondary ends byte-identical to the primary."""
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cluster_lib import (MB, RESYNCCTL, Cluster, check, fail,  # noqa: E402
                         resync_json, verify)
from resyncfs_lib import Scratch  # noqa: E402

CHECKPOINT = 16 * MB
DATA = 48 * MB

sc = Scratch()
c = Cluster(sc, "resume", ["p", "s"], "p", size=64 * MB)
for n in c.names:
    c.start(n)
# The primary holds 48 MiB of random data; the secondary is blank.
for i in range(DATA // (4 * MB)):
    c.write("p", i * 4 * MB, os.urandom(4 * MB))

# First run, slowed to 16 MiB/s: killed once past the first checkpoint.
run = subprocess.Popen([RESYNCCTL, "--config", c.conf, "resync", "--yes", "--json",
                        "--max-rate", "16M"],
                       stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True)
done = 0
for line in run.stdout:
    o = json.loads(line)
    if o.get("type") == "progress" and o.get("phase") == "transfer":
        done = o["bytes_done"]
        if done >= CHECKPOINT + 4 * MB:
            break
check(done >= CHECKPOINT + 4 * MB, "the first run reached 20 MiB (at %d)" % done)
c.kill9("s")
rest = run.stdout.read()
rc = run.wait(timeout=60)
check(rc != 0, "the interrupted resync exits non-zero")
summary = json.loads(rest.splitlines()[-1])
first = summary["nodes"][0]
check(first["result"] == "failed" and "s" in first.get("error", ""),
      "the first run names the lost secondary: %s" % first)
sent_first = first["bytes_written"]
check(sent_first < DATA, "the first run stopped before the end (%d bytes)" % sent_first)
left = DATA - done

# Restart over the dead mount.
c.start("s")
check("stale mount" in c.log("s"), "resyncd says it detached the stale mount")
st = c.status("s")
check(st["s"]["state"] == "Inconsistent", "s is Inconsistent after kill -9: %s" % st["s"])

# Second run: the plan shows where it resumes; it sends only what is left.
rc, plan, summary, err = resync_json(c)
check(rc == 0, "the second resync exits 0 (%d): %s" % (rc, err))
pn = plan["nodes"][0]
check(pn["state"] == "Inconsistent", "the plan shows s Inconsistent: %s" % pn)
check(pn.get("resume_offset") is not None and pn["resume_offset"] >= CHECKPOINT,
      "the plan shows the checkpoint it resumes from: %s" % pn)
second = summary["nodes"][0]
bound = left + CHECKPOINT
check(second["result"] == "resynced", "the second run completes: %s" % second)
check(second["bytes_written"] < bound and second["bytes_sent"] < bound,
      "the second run sends less than what was left plus one checkpoint interval: "
      "written %d, sent %d, left %d, bound %d" %
      (second["bytes_written"], second["bytes_sent"], left, bound))
check(second["bytes_written"] + done >= DATA - CHECKPOINT,
      "what the two runs sent covers the data: %d + %d" % (second["bytes_written"], done))
rc, out, err = verify(c)
check(rc == 0, "verify exits 0 after the resumed resync (%d): %s %s" % (rc, out, err))
st = c.status()
check(st["s"]["state"] == "UpToDate", "s UpToDate: %s" % st["s"])
for n in ["p", "s"]:
    c.stop(n)
with open(c.image("p"), "rb") as a, open(c.image("s"), "rb") as b:
    if a.read() != b.read():
        fail("the images differ after the resumed resync")
print("ok: first run %d bytes, left %d, second run wrote %d, sent %d (bound %d)" %
      (done, left, second["bytes_written"], second["bytes_sent"], bound))
