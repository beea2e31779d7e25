#!/usr/bin/env python3
"""kill -9 of a secondary's daemon in the middle of its resync: the daemon
restarts over its dead FUSE mount, the secondary is Inconsistent with a
checkpoint of the primary's generation, and the next resync resumes from
that checkpoint: it writes no more than what lay past it and sends less
than that plus one checkpoint interval (16 MiB), and the secondary ends
byte-identical to the primary. The kill comes once the secondary's
metadata holds its first checkpoint (resyncctl info reads it beside the
running daemon): the primary's progress runs ahead of what the secondary
has made durable, the more so on a loaded machine."""
import json
import os
import subprocess
import sys
import threading

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cluster_lib import (MB, RESYNCCTL, Cluster, check, checkpoint, fail,  # noqa: E402
                         resync_json, verify, wait_for)
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



def s_checkpoint():
    return checkpoint(c, "s")


# First run, slowed to 16 MiB/s: killed once s has saved its first
# checkpoint, before the end.
run = subprocess.Popen([RESYNCCTL, "--config", c.conf, "resync", "--yes", "--json",
                        "--max-rate", "16M"],
                       stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True)
lines = []
reader = threading.Thread(target=lambda: lines.extend(json.loads(x) for x in run.stdout),
                          daemon=True)
reader.start()
wait_for(lambda: run.poll() is not None or s_checkpoint() >= CHECKPOINT, timeout=60,
         what="s's first checkpoint on its disk")
check(run.poll() is None, "the first run still ran when s had saved its first checkpoint")
c.kill9("s")
rc = run.wait(timeout=60)
reader.join(timeout=30)
check(rc != 0, "the interrupted resync exits non-zero")
done = max([o["bytes_done"] for o in lines
            if o.get("type") == "progress" and o.get("phase") == "transfer"] or [0])
summary = lines[-1]
check(summary.get("type") == "summary", "the first run ends with its summary: %s" % summary)
first = summary["nodes"][0]
check(first["result"] == "failed" and "s" in first.get("error", ""),
      "the first run names the lost secondary: %s" % first)
sent_first = first["bytes_written"]
check(sent_first < DATA, "the first run stopped before the end (%d bytes)" % sent_first)
at = s_checkpoint()
check(at >= CHECKPOINT, "s's checkpoint survived the kill (%d)" % at)
left = DATA - at

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
check(pn.get("resume_offset") == at,
      "the plan shows the checkpoint it resumes from (%d): %s" % (at, pn))
second = summary["nodes"][0]
bound = left + CHECKPOINT
check(second["result"] == "resynced", "the second run completes: %s" % second)
check(second["bytes_written"] <= left and second["bytes_sent"] < bound,
      "the second run writes no more than what lay past the checkpoint and sends less "
      "than that plus one checkpoint interval: written %d, sent %d, left %d, bound %d" %
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
