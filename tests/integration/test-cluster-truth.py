#!/usr/bin/env python3
"""What the daemons report is true (issue 9).
(d) status from the primary's view, asked now: a secondary stopped while
the primary wrote is Unknown while down, then Outdated with lacks_bytes =
the blocks the primary wrote meanwhile; one with stray writes Diverged;
status asked on a secondary is forwarded and says the same; with the
primary down a secondary says so, the primary Unknown.
(g) the summary's state of a secondary whose resync was cancelled, or
whose daemon was killed, part-way: Inconsistent (JSON, text, events).
(f) a secondary's image truncated under its running daemon: the resync
fails naming the node and the image, exits non-zero, commits nothing;
after a restart of that daemon a resync makes it byte-identical."""
import json
import os
import queue
import shutil
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cluster_lib import (MB, RESYNCCTL, Cluster, check, resync_ok,  # noqa: E402
                         verify, wait_for)
from resyncfs_lib import Scratch  # noqa: E402

SIZE = 64 * MB
BLOCK = 64 * 1024


def blocks_of(writes):
    """The bytes of the blocks the (offset, length) writes touch: what a
    dirty bitmap counts."""
    b = set()
    for off, ln in writes:
        b.update(range(off // BLOCK, (off + ln - 1) // BLOCK + 1))
    return len(b) * BLOCK


class Lines:
    """A running resyncctl --json: its lines, read on a thread, taken
    with a deadline."""

    def __init__(self, *args):
        self.p = subprocess.Popen([RESYNCCTL, "--config", c.conf] + list(args),
                                  stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True)
        self.q = queue.Queue()
        self.all = []
        threading.Thread(target=self.read, daemon=True).start()

    def read(self):
        for line in self.p.stdout:
            self.q.put(line)
        self.q.put(None)

    def until(self, cond, timeout=30, what="a line"):
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            check(left > 0, "timed out waiting for %s: %s" % (what, self.all[-3:]))
            try:
                line = self.q.get(timeout=left)
            except queue.Empty:
                continue
            check(line is not None, "resyncctl ended before %s: %s" % (what, self.all[-3:]))
            try:
                o = json.loads(line)
            except ValueError:
                o = {"text": line}
            self.all.append(o)
            if cond(o):
                return o

    def finish(self, timeout=60):
        rc = self.p.wait(timeout=timeout)
        while True:
            line = self.q.get(timeout=timeout)
            if line is None:
                break
            self.all.append(json.loads(line))
        return rc, self.all, self.p.stderr.read()


def events():
    with open(sc.path("events.jsonl")) as f:
        return [json.loads(x) for x in f.read().splitlines() if x.endswith("}")]


sc = Scratch()
c = Cluster(sc, "truth", ["p", "s", "d"], "p", size=SIZE)
for n in c.names:
    c.start(n)
c.write("p", 0, os.urandom(4 * MB))
resync_ok(c, "first resync")
st = c.status()
check(all(st[n]["state"] == "UpToDate" for n in c.names), "all UpToDate after a resync: %s" % st)
check(st["s"]["lacks_bytes"] == 0 and st["d"]["lacks_bytes"] == 0,
      "the secondaries lack nothing: %s" % st)

# ---- (d) s stopped while the primary writes; d with stray writes ----
c.stop("s")
writes = [(3 * MB + 1000, MB), (10 * MB, 100), (30 * MB + BLOCK - 10, 20)]
for off, ln in writes:
    c.write("p", off, os.urandom(ln))
lacks = blocks_of(writes)
st = c.status()
check(st["s"]["state"] == "Unknown" and not st["s"]["connected"] and st["s"].get("error"),
      "a stopped secondary is Unknown, not a remembered state: %s" % st["s"])
check(c.status("d")["s"]["state"] == "Unknown", "also asked on a secondary")
c.start("s")
c.write("d", 20 * MB, b"y" * 100)

for via in (None, "s", "d"):
    r = c.ctl(*((["--node", via] if via else []) + ["status", "--json"]))
    check(r.returncode == 0, "status via %s exits 0: %s" % (via, r.stderr))
    res = json.loads(r.stdout)
    for k in ("cluster", "primary", "node", "nodes"):
        check(k in res, "status has %s: %s" % (k, res))
    check(res["node"] == (via or "p") and res.get("view") == "p",
          "status via %s is the primary's view: %s" % (via, res))
    st = {x["name"]: x for x in res["nodes"]}
    for x in st.values():
        for k in ("name", "role", "state", "generation", "dirty_bytes", "connected",
                  "last_resync"):
            check(k in x, "status via %s: %s has %s" % (via, x["name"], k))
    check(st["p"]["state"] == "UpToDate", "the primary: %s" % st["p"])
    check(st["s"]["state"] == "Outdated" and st["s"]["lacks_bytes"] == lacks,
          "via %s: s Outdated, lacking the %d bytes written while it was down: %s" %
          (via, lacks, st["s"]))
    check(st["d"]["state"] == "Diverged" and st["d"]["dirty_bytes"] == BLOCK and
          st["d"]["lacks_bytes"] == lacks,
          "via %s: d Diverged with its stray block, lacking the primary's: %s" % (via, st["d"]))
r = c.ctl("status")
check(r.returncode == 0 and "LACKS" in r.stdout and "Outdated" in r.stdout and
      "Diverged" in r.stdout, "status text shows the states and lacks: %s" % r.stdout)

# The primary down: a secondary says so, and what it knows itself.
c.stop("p")
r = c.ctl("--node", "s", "status", "--json")
check(r.returncode == 0, "status on s without its primary exits 0: %s" % r.stderr)
res = json.loads(r.stdout)
st = {x["name"]: x for x in res["nodes"]}
check("p" in res.get("primary_error", "") and res["view"] == "s",
      "says the primary is unreachable: %s" % res)
check(st["p"]["state"] == "Unknown" and not st["p"]["connected"], "p Unknown: %s" % st["p"])
check(st["d"]["state"] == "Diverged", "d's own disk says Diverged: %s" % st["d"])
check(st["s"]["connected"] and st["s"]["state"] in ("UpToDate", "Outdated"),
      "s as it knows itself: %s" % st["s"])
r = c.ctl("--node", "s", "status")
check(r.returncode == 0 and "the primary's view is missing" in r.stdout,
      "status text without the primary: %s %s" % (r.stdout, r.stderr))
c.start("p")

resync_ok(c, "after the drift")
st = c.status()
check(all(st[n]["state"] == "UpToDate" for n in c.names) and st["s"]["lacks_bytes"] == 0,
      "all UpToDate after the resync: %s" % st)

# ---- (g) cancelled and killed part-way: Inconsistent ----
ev_out = open(sc.path("events.jsonl"), "w")
ev = subprocess.Popen([RESYNCCTL, "--config", c.conf, "events", "--json"], stdout=ev_out,
                      stderr=subprocess.DEVNULL)
try:
    def stream_open():
        check(ev.poll() is None, "resyncctl events is running")
        verify(c)
        return any(e.get("event") == "peer" for e in events())
    wait_for(stream_open, what="the event stream")

    for i in range(6):
        c.write("p", 8 * MB + i * 4 * MB, os.urandom(4 * MB))
    run = Lines("resync", "--yes", "--json", "--node", "s", "--max-rate", "2M")
    run.until(lambda o: o.get("type") == "progress" and o.get("phase") == "transfer" and
              o.get("bytes_done", 0) >= 2 * MB, what="the transfer under way")
    r = c.ctl("cancel", "--json")
    check(r.returncode == 0 and json.loads(r.stdout)["cancelled"], "cancel: %s" % r.stdout)
    rc, lines, err = run.finish()
    check(rc != 0, "a cancelled resync exits non-zero")
    x = lines[-1]["nodes"][0]
    check(x["result"] == "cancelled" and x["state"] == "Inconsistent" and x["bytes_written"] > 0,
          "the summary says cancelled (Inconsistent): %s" % x)
    check(c.status()["s"]["state"] == "Inconsistent", "and so does status")
    wait_for(lambda: any(e.get("event") == "resync_cancelled" and e.get("node") == "s"
                         for e in events()), what="the cancelled event")
    e = [e for e in events() if e.get("event") == "resync_cancelled" and e.get("node") == "s"][-1]
    check(e["state"] == "Inconsistent", "the cancelled event's state: %s" % e)
finally:
    ev.kill()
    ev.wait()

# kill -9 of s's daemon while it is written; the summary in text.
resync_ok(c, "after the cancel")
for i in range(6):
    c.write("p", 8 * MB + i * 4 * MB, os.urandom(4 * MB))
run = subprocess.Popen([RESYNCCTL, "--config", c.conf, "resync", "--yes", "--node", "s",
                        "--max-rate", "2M"], stdin=subprocess.DEVNULL,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
wait_for(lambda: c.status()["s"]["state"] == "Inconsistent", timeout=30,
         what="s written (Inconsistent)")
c.kill9("s")
out, err = run.communicate(timeout=60)
check(run.returncode != 0, "the resync of a killed secondary exits non-zero")
check("s: failed (Inconsistent)" in out, "the text summary says failed (Inconsistent): %s %s" %
      (out, err))
c.start("s")
check(c.status()["s"]["state"] == "Inconsistent", "s Inconsistent after its restart")
resync_ok(c, "after the kill")

# ---- (f) s's image truncated under its running daemon ----
for i in range(4):
    c.write("p", 40 * MB + i * MB, os.urandom(MB))
cut = SIZE - 22 * MB
os.truncate(c.image("s"), cut)
r = c.ctl("status", "--json")
st = {x["name"]: x for x in json.loads(r.stdout)["nodes"]}
check(st["s"]["state"] == "Unknown" and c.image("s") in st["s"].get("error", ""),
      "status names the changed image: %s" % st["s"])
r = c.ctl("resync", "--yes", "--json")
said = r.stdout + r.stderr
check(r.returncode != 0, "the resync over a truncated image exits non-zero: %s" % said)
lines = [json.loads(x) for x in r.stdout.splitlines()]
summary = lines[-1] if lines and lines[-1].get("type") == "summary" else None
x = {n["name"]: n for n in summary["nodes"]}["s"] if summary else None
check(x and x["result"] == "failed", "s's result is failed: %s" % said)
for what in ("'s'", c.image("s"), str(SIZE), str(cut)):
    check(what in x.get("error", ""), "the error names %s: %s" % (what, x))
r = c.ctl("resync", "--yes")
check(r.returncode != 0 and "s: failed" in r.stdout and c.image("s") in r.stdout + r.stderr,
      "the text says s failed and names its image: %s %s" % (r.stdout, r.stderr))
check(os.path.getsize(c.image("s")) == cut, "nothing was written to the cut image")
st = c.status()
# d was resynced, s failed: the primary keeps its marks and generation, so
# d (at the primary's current generation) lacks at most what they count.
check(st["p"]["dirty_bytes"] >= 4 * MB and st["d"]["lacks_bytes"] == st["p"]["dirty_bytes"],
      "nothing committed on the primary: its marks stay: %s" % st)
c.stop("s")
c.start("s")
resync_ok(c, "after the restart of s")
check(verify(c)[0] == 0, "verify exits 0")

# The primary's image replaced at its path (a copy, renamed over it):
# the primary names itself before it reads anything.
shutil.copyfile(c.image("p"), c.image("p") + ".new")
os.rename(c.image("p") + ".new", c.image("p"))
r = c.ctl("resync", "--yes", "--json")
check(r.returncode != 0 and "'p'" in r.stderr and c.image("p") in r.stderr and
      "replaced" in r.stderr, "a replaced primary image is named: %s %s" % (r.stdout, r.stderr))
st = c.status()
check(st["p"]["state"] == "Unknown" and "replaced" in st["p"].get("error", ""),
      "status says the primary's image changed: %s" % st["p"])
for n in c.names:
    c.stop(n)
for n in ("s", "d"):
    with open(c.image("p"), "rb") as a, open(c.image(n), "rb") as b:
        check(a.read() == b.read(), "%s byte-identical to the primary" % n)
print("ok: status Outdated (lacks %d), Diverged, Unknown; cancelled and killed Inconsistent; "
      "a truncated image named and refused" % lacks)
