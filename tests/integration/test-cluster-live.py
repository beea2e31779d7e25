#!/usr/bin/env python3
"""The primary stays in service during a resync (issue 10): a writer on the
primary's mount (4 KiB - 1 MiB pwrites at random offsets, paced) runs
throughout resyncs of two secondaries; every write's latency is recorded.

- short fence (the default): the resync completes in converging passes and
  one short fence; the writer's longest write is under 1 s (p50, p99 and
  max printed, beside the max under --fence whole in the same test);
  after the writer stops, verify differs only inside blocks the primary's
  bitmap marks dirty (resyncctl info), and a quick resync leaves every
  image byte-identical.
- a writer faster than --max-rate reaches max_passes; the fence that
  follows is bounded by fence_max: the secondaries the last pass waited
  on are given up (Inconsistent, named), the primary thaws and keeps its
  bitmap; the writer never waits longer than fence_max + 1 s; a resync
  after the writer stops ends identical.
- a secondary SIGSTOPped when the fence starts (for fence_max + 1 s, and
  until the resync ended): the writer
  waits less than fence_max + 1 s; if the stop caught the last pass, that
  secondary is named Inconsistent; SIGCONT, the next resync is identical.
- pause for 10 s during a resync: the writer never stalls while paused,
  and the events stream shows no fence started (or held) meanwhile; the
  fence after the resume keeps the writer under fence_max + 1 s.
- --max-rate 1K: the passes cannot end; after fence_max + 3 s the resync
  still runs, unfenced (the writer never waits fence_max + 1 s); cancel
  ends it, the primary thawed, both secondaries named Inconsistent; a
  resync at full speed then ends identical.
- kill -9 of a secondary's daemon during pass 2 or later (the rest at full
  speed): the resync fails naming it, the primary keeps its bitmap, no
  node is reported UpToDate with data that verify finds differing; after
  a restart the next resync is identical.
- kill -9 of the primary's daemon during pass 2 or later: after a
  restart, the next resync is identical and no node is UpToDate with
  differing data.
The images are compared (cmp) once more with every daemon stopped.
Latency bounds are about the fence (which the daemon controls); the
machine is shared, so the numbers are printed too. RESYNC_LONG=1: 4 GiB."""
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cluster_lib import MB, RESYNCCTL, Cluster, check, fail, verify, wait_for  # noqa: E402
from resyncfs_lib import Scratch  # noqa: E402

LONG = os.environ.get("RESYNC_LONG") == "1"
VOLUME = (4096 if LONG else 512) * MB
BLOCK = 64 * 1024
FENCE_MAX = 3  # seconds
MAX_PASSES = 3
PAUSE = 10
# b stays stopped longer than the fence could wait for it; the resync
# ends first (the fence gives up on b at fence_max), SIGCONT comes after.
STOP = FENCE_MAX + 1

sc = Scratch()
c = Cluster(sc, "live", ["p", "a", "b"], "p", size=VOLUME)
with open(c.conf) as f:
    text = f.read()
with open(c.conf, "w") as f:
    f.write(text.replace("block_size = 64K\n", "block_size = 64K\nfence_max = %ds\n"
                         "max_passes = %d\n" % (FENCE_MAX, MAX_PASSES)))
# Data for pass 1 to carry: scattered random extents on the primary.
with open(c.image("p"), "r+b") as f:
    rnd = random.Random(1)
    for _ in range(32):
        f.seek(rnd.randrange(0, VOLUME - MB) & ~4095)
        f.write(os.urandom(MB))


class Writer:
    """pwrites of 4 KiB - max_kib KiB at random 4 KiB-aligned offsets through
    the primary's mount at about rate bytes/s; each one's latency kept."""

    def __init__(self, rate, max_kib=1024):
        self.rate, self.max_kib = rate, max_kib
        self.lat, self.stop_flag, self.errors, self.bytes = [], False, 0, 0
        self.t = threading.Thread(target=self.run, daemon=True)
        self.t.start()

    def run(self):
        fd = os.open(c.file("p"), os.O_WRONLY)
        rnd = random.Random()
        buf = os.urandom(self.max_kib * 1024)
        t0 = time.monotonic()
        try:
            while not self.stop_flag:
                n = rnd.randrange(1, self.max_kib // 4 + 1) * 4096
                off = rnd.randrange(0, (VOLUME - n) // 4096) * 4096
                w0 = time.monotonic()
                try:
                    os.pwrite(fd, buf[:n], off)
                except OSError:
                    self.errors += 1
                    return
                self.lat.append(time.monotonic() - w0)
                self.bytes += n
                ahead = t0 + self.bytes / self.rate - time.monotonic()
                if ahead > 0:
                    time.sleep(ahead)  # the writer's own pace
        finally:
            try:
                os.close(fd)
            except OSError:
                pass  # the mount died under it (kill -9 of the primary)

    def stop(self):
        self.stop_flag = True
        self.t.join(timeout=60)
        check(not self.t.is_alive(), "the writer stopped")
        return self.stats()

    def stats(self):
        s = sorted(self.lat) or [0.0]
        return {"writes": len(self.lat), "p50": s[len(s) // 2], "p99": s[int(len(s) * 0.99)],
                "max": s[-1], "mib": self.bytes / MB}


def show(what, st):
    print("%s: %d writes (%.0f MiB): p50 %.1f ms, p99 %.1f ms, max %.1f ms" %
          (what, st["writes"], st["mib"], st["p50"] * 1e3, st["p99"] * 1e3, st["max"] * 1e3),
          flush=True)


class Resync:
    """resyncctl resync --yes --json ARGS in the background, lines kept."""

    def __init__(self, *args):
        self.lines = []
        self.p = subprocess.Popen([RESYNCCTL, "--config", c.conf, "resync", "--yes", "--json"] +
                                  list(args), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True)
        self.reader = threading.Thread(target=self.read, daemon=True)
        self.reader.start()

    def read(self):
        for line in self.p.stdout:
            self.lines.append(json.loads(line))

    def transferring(self):
        return any(x.get("type") == "progress" and x.get("phase") == "transfer"
                   for x in self.lines) or self.p.poll() is not None

    def finish(self, timeout=120):
        rc = self.p.wait(timeout=timeout)
        self.reader.join(timeout=10)
        s = self.lines[-1] if self.lines else {}
        check(s.get("type") == "summary", "the resync's last line is its summary: %s %s" %
              (self.lines[-3:], self.p.stderr.read()))
        return rc, s


def nodes(s):
    return {x["name"]: x for x in s["nodes"]}


def dirty_blocks():
    r = subprocess.run([RESYNCCTL, "info", "--volume", c.image("p"), "--json"],
                       capture_output=True, text=True, timeout=60)
    check(r.returncode == 0, "info of the primary's volume: %s" % r.stderr)
    blocks = set()
    for x in json.loads(r.stdout)["dirty_ranges"]:
        off, ln = (x[0], x[1]) if isinstance(x, list) else (x["offset"], x["length"])
        blocks.update(range(off // BLOCK, (off + ln - 1) // BLOCK + 1))
    return blocks


def images_identical(what):
    for n in ("a", "b"):
        r = subprocess.run(["cmp", c.image("p"), c.image(n)], capture_output=True, text=True)
        check(r.returncode == 0, "%s: %s byte-identical to p: %s" % (what, n, r.stdout))


def quiet_resync(what):
    r = c.ctl("resync", "--yes", "--json")
    lines = [json.loads(x) for x in r.stdout.splitlines()]
    check(r.returncode == 0, "%s: resync exits 0 (%d): %s %s" %
          (what, r.returncode, lines[-1:], r.stderr))
    images_identical(what)
    return lines[-1]


class Events:
    """resyncctl events --json in the background: the fence's events, each
    with the monotonic time it was read."""

    def __init__(self):
        self.fences = []  # (time, "fence_started" | "fence_ended", event)
        self.kinds = set()  # every kind of event heard
        self.p = subprocess.Popen([RESYNCCTL, "--config", c.conf, "events", "--json"],
                                  stdout=subprocess.PIPE, text=True)
        threading.Thread(target=self.read, daemon=True).start()

    def read(self):
        for line in self.p.stdout:
            e = json.loads(line)
            self.kinds.add(e.get("event"))
            if e.get("event") in ("fence_started", "fence_ended"):
                self.fences.append((time.monotonic(), e["event"], e))

    def count(self, what):
        return sum(1 for x in self.fences if x[1] == what)

    def close(self):
        self.p.kill()
        self.p.wait()


def log_mark(n):
    """Where n's log ends now: a marker is looked for after it."""
    return len(c.log(n))


def no_uptodate_differs(what):
    """No node that status reports UpToDate differs from the primary
    (verify, through the hash trees); returns (status, verify)."""
    st = c.status()
    rcv, out, err = verify(c)
    check(out is not None, "%s: verify answers: %s" % (what, err))
    for x in out["nodes"]:
        if x["name"] in st and st[x["name"]]["state"] == "UpToDate" and "error" not in x:
            check(x["differing_bytes"] == 0, "%s: %s reported UpToDate, yet %d bytes differ: %s"
                  % (what, x["name"], x["differing_bytes"], st[x["name"]]))
    print("%s: status %s, verify differing bytes %s" %
          (what, {k: v["state"] for k, v in st.items()},
           {x["name"]: x.get("error") or x.get("differing_bytes") for x in out["nodes"]}),
          flush=True)
    return st, out


for n in c.names:
    c.start(n)
t_all = time.monotonic()


def lap(what, t=[time.monotonic()]):
    now = time.monotonic()
    print("(%s: %.1f s)" % (what, now - t[0]), flush=True)
    t[0] = now

# ---- 1. short fence with a writer at 20 MiB/s ----
w = Writer(20 * MB)
wait_for(lambda: len(w.lat) >= 10, timeout=30, what="the writer's first writes")
rs = Resync()
rc, s = rs.finish()
short = w.stop()
show("short fence", short)
print("short fence: passes %d, bytes_per_pass %s, stopped: %s, primary fence %.3f s" %
      (s["passes"], s["bytes_per_pass"], s["passes_stopped"], s["primary_fence_seconds"]),
      flush=True)
check(rc == 0 and all(x["result"] == "resynced" and x["state"] == "UpToDate"
                      for x in s["nodes"]), "short fence: resynced (%d): %s" % (rc, s))
check(s["fence"] == "short" and s["passes"] >= 2 and len(s["bytes_per_pass"]) == s["passes"],
      "short fence: passes reported: %s" % s)
check(s["primary_committed"], "short fence: the primary committed: %s" % s)
check(s["primary_fence_seconds"] < FENCE_MAX, "short fence: the fence within fence_max: %s" % s)
check(w.errors == 0, "short fence: no write failed")
check(short["max"] < 1.0, "short fence: the writer's longest write %.3f s < 1 s" % short["max"])

# After the writer: what differs is inside the primary's dirty blocks.
dirty = dirty_blocks()
rcv, out, err = verify(c)
for x in out["nodes"]:
    for off, ln in x["ranges"]:
        for blk in range(off // BLOCK, (off + ln - 1) // BLOCK + 1):
            check(blk in dirty, "verify: %s differs at block %d, which the primary's bitmap does "
                  "not mark (%d dirty blocks)" % (x["name"], blk, len(dirty)))
print("verify after the writer: %s differing bytes, all within %d dirty blocks" %
      ([x["differing_bytes"] for x in out["nodes"]], len(dirty)), flush=True)
s2 = quiet_resync("quick after the short fence")
check(all(x.get("mode", "quick") for x in s2["nodes"]), "a quick resync")

lap('before 2')
# ---- 2. the same writer under --fence whole (data to carry as in 1) ----
c.write("p", 64 * MB, os.urandom(64 * MB))
w = Writer(20 * MB)
wait_for(lambda: len(w.lat) >= 10, timeout=30, what="the writer's first writes")
wait_for(lambda: w.bytes >= 32 * MB, timeout=60, what="32 MiB written")
rs = Resync("--fence", "whole")
rc, s = rs.finish()
whole = w.stop()
show("whole fence", whole)
print("whole fence: primary fence %.3f s" % s["primary_fence_seconds"], flush=True)
check(rc == 0 and s["fence"] == "whole" and s["passes"] == 1, "whole fence: resynced: %s" % s)
quiet_resync("after the whole fence")
print("writer's longest write: short fence %.1f ms, whole fence %.1f ms" %
      (short["max"] * 1e3, whole["max"] * 1e3), flush=True)

lap('before 3')
# ---- 3. a writer faster than --max-rate: max_passes, then a bounded fence ----
w = Writer(16 * MB)
wait_for(lambda: w.bytes >= 8 * MB, timeout=60, what="8 MiB written")
rs = Resync("--max-rate", "8M")
rc, s = rs.finish(timeout=180)
fast = w.stop()
show("writer faster than --max-rate", fast)
print("faster writer: passes %d, bytes_per_pass %s, stopped: %s, primary fence %.3f s, %s" %
      (s["passes"], s["bytes_per_pass"], s["passes_stopped"], s["primary_fence_seconds"],
       [(x["name"], x["state"], x.get("error")) for x in s["nodes"]]), flush=True)
check(s["passes_stopped"] == "max_passes" and s["passes"] == MAX_PASSES + 1,
      "faster writer: the pass limit was reached: %s" % s)
check(s["primary_fence_seconds"] < FENCE_MAX + 1, "faster writer: the fence bounded: %s" % s)
check(fast["max"] < FENCE_MAX + 1, "faster writer: longest write %.3f s < fence_max + 1 s" %
      fast["max"])
for x in s["nodes"]:
    if x["result"] != "resynced":
        check(x["state"] == "Inconsistent" and "fence_max" in x.get("error", ""),
              "faster writer: %s given up at the fence, named Inconsistent: %s" % (x["name"], x))
check(s["primary_committed"] == all(x["result"] == "resynced" for x in s["nodes"]),
      "faster writer: the primary commits only when every secondary did: %s" % s)
quiet_resync("after the faster writer")

lap('before 4')
# ---- 4. a secondary stopped when the fence starts ----
ev = subprocess.Popen([RESYNCCTL, "--config", c.conf, "events", "--json"],
                      stdout=subprocess.PIPE, text=True)
stopped_at = []


def stop_at_fence():
    for line in ev.stdout:
        if json.loads(line).get("event") == "fence_started":
            c.procs["b"].send_signal(signal.SIGSTOP)
            stopped_at.append(time.monotonic())
            return


threading.Thread(target=stop_at_fence, daemon=True).start()
w = Writer(1 * MB, max_kib=64)
wait_for(lambda: w.bytes >= 2 * MB, timeout=60, what="2 MiB written")
# A slow last pass (the rate bounds it), so that the stop lands in it.
rs = Resync("--max-rate", "1M")
rc, s = rs.finish(timeout=180)
wait_for(lambda: stopped_at, timeout=30, what="b stopped at the fence")
stopped = w.stop()
ev.kill()
show("secondary stopped at the fence", stopped)
nb = nodes(s)
print("stopped secondary: passes %d, fence %.3f s, b: %s %s" %
      (s["passes"], s["primary_fence_seconds"], nb["b"]["state"], nb["b"].get("error")), flush=True)
check(stopped["max"] < FENCE_MAX + 1, "stopped secondary: longest write %.3f s < fence_max + 1 s"
      % stopped["max"])
check(s["primary_fence_seconds"] < FENCE_MAX + 1, "stopped secondary: the fence bounded: %s" % s)
check(nb["a"]["result"] == "resynced", "stopped secondary: a committed: %s" % nb["a"])
if nb["b"]["result"] != "resynced":
    check(nb["b"]["state"] == "Inconsistent", "stopped secondary: b named Inconsistent: %s" % nb["b"])
    check(not s["primary_committed"], "stopped secondary: the primary kept its bitmap: %s" % s)
wait_for(lambda: time.monotonic() >= stopped_at[0] + STOP, timeout=STOP + 30,
         what="b stopped for %d s" % STOP)
c.procs["b"].send_signal(signal.SIGCONT)
quiet_resync("after SIGCONT")

lap('before 5')
# ---- 5. pause for PAUSE s: no fence held ----
c.write("p", 0, os.urandom(8 * MB))
ev = Events()
w = Writer(MB // 2, max_kib=64)  # slower than the rate: the passes converge
rs = Resync("--max-rate", "2M")
wait_for(rs.transferring, timeout=60, what="the transfer to start")
r = c.ctl("pause", "--json")
check(r.returncode == 0, "pause: %s" % r.stderr)
t0 = time.monotonic()
fences_at_pause = list(ev.fences)
wait_for(lambda: time.monotonic() >= t0 + PAUSE, timeout=PAUSE + 10, what="%d s of pause" % PAUSE)
frozen_during = [x for x in w.lat if x > 1.0]
fences_paused = [x for x in ev.fences if x[0] >= t0]
r = c.ctl("resume", "--json")
check(r.returncode == 0, "resume: %s" % r.stderr)
rc, s = rs.finish(timeout=180)
paused = w.stop()
show("pause of %d s" % PAUSE, paused)
print("pause: passes %d, stopped: %s, primary fence %.3f s" % (s["passes"], s["passes_stopped"], s["primary_fence_seconds"]), flush=True)
# While paused the writer never waits; the last pass's fence after the
# resume is paced by --max-rate, and bounded by fence_max.
check(not frozen_during, "pause: the writer never stalled while paused: %s" % frozen_during)
check(paused["max"] < FENCE_MAX + 1, "pause: longest write %.3f s < fence_max + 1 s" %
      paused["max"])
check(rc == 0, "pause: the resync completed: %s" % s)
# No fence while paused: none started, none held from before the pause.
check(not fences_paused, "pause: no fence started while paused: %s" % fences_paused)
check(sum(1 for x in fences_at_pause if x[1] == "fence_started") ==
      sum(1 for x in fences_at_pause if x[1] == "fence_ended"),
      "pause: no fence held when the pause came: %s" % fences_at_pause)
# The stream was heard: the fence of the last pass, after the resume.
wait_for(lambda: ev.count("fence_ended") >= 1, timeout=10, what="the fence's events")
check(ev.count("fence_started") == 1 and s["primary_fence_seconds"] < FENCE_MAX,
      "pause: one short fence, after the resume: %s" % ev.fences)
ev.close()
quiet_resync("after the pause")

lap('before 6')
# ---- 6. --max-rate 1K: the passes cannot end; no fence, until cancel ----
c.write("p", 0, os.urandom(1 * MB))  # pass 1 has data to carry
ev = Events()
w = Writer(2 * MB, max_kib=256)
wait_for(lambda: w.bytes >= 1 * MB, timeout=60, what="1 MiB written")
rs = Resync("--max-rate", "1K")
wait_for(lambda: sum(1 for x in rs.lines if x.get("type") == "progress" and
             x.get("phase") in ("compared", "dirty")) >= 2 or rs.p.poll() is not None,
         timeout=60, what="both secondaries compared")
t0 = time.monotonic()
wait_for(lambda: time.monotonic() >= t0 + FENCE_MAX + 3, timeout=FENCE_MAX + 13,
         what="%d s at 1 KiB/s" % (FENCE_MAX + 3))
running = rs.p.poll() is None
n_before = len(w.lat)
wait_for(lambda: len(w.lat) > n_before, timeout=5,
         what="1K: the writer still writes (the primary is not frozen)")
r = c.ctl("cancel", "--json")
check(r.returncode == 0, "cancel: %s" % r.stderr)
t_cancel = time.monotonic()
rc, s = rs.finish(timeout=60)
ended = time.monotonic() - t_cancel
# Written after the command ended: the primary is thawed.
n_after = len(w.lat)
wait_for(lambda: len(w.lat) >= n_after + 5, timeout=10, what="writes after the command ended")
slow = w.stop()
show("--max-rate 1K", slow)
print("1K: running after %d s: %s; ended %.1f s after cancel, exit %d, passes %d, stopped: %s, "
      "primary fence %.3f s, fence events %s, %s" %
      (FENCE_MAX + 3, running, ended, rc, s["passes"], s["passes_stopped"],
       s["primary_fence_seconds"], [x[1] for x in ev.fences],
       [(x["name"], x["result"], x["state"], x.get("error")) for x in s["nodes"]]), flush=True)
wait_for(lambda: "resync_cancelled" in ev.kinds, timeout=10, what="the events of the cancel")
ev.close()
check(running, "1K: the resync was still running, unfenced, after %d s: %s" % (FENCE_MAX + 3, s))
check(slow["max"] < FENCE_MAX + 1, "1K: longest write %.3f s < fence_max + 1 s" % slow["max"])
check(w.errors == 0, "1K: no write failed")
check(ev.count("fence_started") == 0 and s["primary_fence_seconds"] == 0,
      "1K: no fence (pass 1 cannot end, a cancel fences nothing): %s" % ev.fences)
check(rc != 0 and not s["primary_committed"], "1K: cancelled, exit non-zero (%d): %s" % (rc, s))
check(s["passes_stopped"] == "cancelled" and s["passes"] == 1 and len(s["bytes_per_pass"]) == 1,
      "1K: cancelled in pass 1, no other pass counted: %s" % s)
for x in s["nodes"]:
    check(x["result"] != "resynced" and x["state"] == "Inconsistent" and x.get("error"),
          "1K: %s could not finish, named Inconsistent: %s" % (x["name"], x))
st = c.status()
check(all(st[n]["state"] == "Inconsistent" for n in ("a", "b")),
      "1K: the secondaries are Inconsistent: %s" % st)
quiet_resync("at full speed after --max-rate 1K")

lap('before 7')
# ---- 7. kill -9 of a secondary during pass 2 or later ----
w = Writer(16 * MB)
wait_for(lambda: w.bytes >= 8 * MB, timeout=60, what="8 MiB written")
mark = log_mark("p")
rs = Resync("--max-rate", "8M")
wait_for(lambda: "pass 2," in c.log("p")[mark:] or rs.p.poll() is not None, timeout=120,
         what="pass 2 on the primary")
check(rs.p.poll() is None, "kill -9 of b: the resync still ran at pass 2")
t_kill = time.monotonic()
c.kill9("b")
# The rest at full speed: a finishes, so the primary may fence and commit a.
r = c.ctl("rate", "0", "--json")
check(r.returncode == 0, "rate 0: %s" % r.stderr)
rc, s = rs.finish(timeout=120)
ended = time.monotonic() - t_kill
killed = w.stop()
show("kill -9 of a secondary", killed)
nb = nodes(s)
print("kill -9 of b: ended %.1f s after, exit %d, passes %d, stopped: %s, primary fence %.3f s, "
      "committed %s, %s" % (ended, rc, s["passes"], s["passes_stopped"], s["primary_fence_seconds"],
                            s["primary_committed"],
                            [(x["name"], x["result"], x["state"], x.get("error")) for x in s["nodes"]]),
      flush=True)
check(rc != 0, "kill -9 of b: the resync exits non-zero (%d): %s" % (rc, s))
check(nb["b"]["result"] == "failed" and "'b'" in nb["b"].get("error", "") and
      nb["b"]["state"] == "Inconsistent", "kill -9 of b: b named, Inconsistent: %s" % nb["b"])
check(not s["primary_committed"], "kill -9 of b: the primary kept its bitmap: %s" % s)
check(s["primary_fence_seconds"] < FENCE_MAX + 1 and killed["max"] < FENCE_MAX + 1,
      "kill -9 of b: the fence bounded (%.3f s), longest write %.3f s" %
      (s["primary_fence_seconds"], killed["max"]))
no_uptodate_differs("b down")
c.start("b")
st, _ = no_uptodate_differs("b restarted")
check(st["b"]["state"] == "Inconsistent", "b Inconsistent after kill -9: %s" % st["b"])
quiet_resync("after kill -9 of b")
st, out = no_uptodate_differs("resynced after kill -9 of b")
check(all(x["state"] == "UpToDate" for x in st.values()) and
      all(x["differing_bytes"] == 0 for x in out["nodes"]), "after kill -9 of b: all UpToDate, "
      "identical: %s %s" % (st, out["nodes"]))

lap('before 8')
# ---- 8. kill -9 of the primary during pass 2 or later ----
w = Writer(16 * MB)
wait_for(lambda: w.bytes >= 8 * MB, timeout=60, what="8 MiB written")
mark = log_mark("p")
rs = Resync("--max-rate", "8M")
wait_for(lambda: "pass 2," in c.log("p")[mark:] or rs.p.poll() is not None, timeout=120,
         what="pass 2 on the primary")
check(rs.p.poll() is None, "kill -9: the resync still ran at pass 2")
c.kill9("p")
w.stop()
rs.p.wait(timeout=60)
c.start("p")
no_uptodate_differs("p restarted")
quiet_resync("after kill -9 of the primary")
st, out = no_uptodate_differs("resynced after kill -9 of p")
check(all(x["state"] == "UpToDate" for x in st.values()), "after kill -9: all UpToDate: %s" % st)

for n in c.names:
    c.stop(n)
images_identical("with every daemon stopped")
print("ok: the primary stayed in service (%.0f s in all)" % (time.monotonic() - t_all))
