#!/usr/bin/env python3
"""Moved blocks and shifted data travel as COPY (issue 12, items 1-2).

Each round writes the images while the daemons are stopped (an image
changed offline: the next resync is a full compare), resyncs, and checks
the bytes on the wire (bytes_sent of the job's result, every frame of the
session counted) and that the secondary ends byte-identical (cmp).

- permuted: the secondary holds the primary's data with 10 % of its
  64 KiB blocks permuted to other offsets: under 1 % of the volume travels
  (auto), about 10 % with --delta aligned (today's path, the control);
  a secondary of an older build (COPY and ROLLING masked) in the same
  cluster still resyncs by data.
- kill -9 of the secondary in the middle of a COPY frame (a failpoint:
  after some of its copies were written, sources of others among them),
  then a second resync: identical.
- shifted by 1 byte (inserted), by 4097 bytes (deleted) and by a 1 MiB
  insert: under 1 % of the volume in auto."""
import json
import os
import random
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cluster_lib import MB, Cluster, check, resync_json, wait_for  # noqa: E402
from resyncfs_lib import Scratch  # noqa: E402

COPY, ROLLING = 1 << 14, 1 << 15
BLOCK = 64 * 1024
sc = Scratch()
rng = random.Random(12)


def put_images(c, data):
    """Stop every daemon, write the images (name -> bytes), start again."""
    for n in c.names:
        if n in c.procs:
            c.stop(n)
    for n, b in data.items():
        with open(c.image(n), "r+b") as f:
            f.write(b)
    for n in c.names:
        c.start(n, env=ENV.get(n))


def resync(c, what, *args):
    rc, plan, summary, err = resync_json(c, *args)
    check(rc == 0 and summary, "%s: resync exits 0 (%d): %s %s" % (what, rc, err, summary))
    nodes = {x["name"]: x for x in summary["nodes"]}
    for n, x in nodes.items():
        check(x["result"] == "resynced", "%s: %s resynced: %s" % (what, n, x))
    return nodes


def same(c, a, b):
    return subprocess.call(["cmp", "-s", c.image(a), c.image(b)]) == 0


def check_same(c, what, names):
    """Stop every daemon and cmp the images (put_images() starts them)."""
    for n in list(c.procs):
        c.stop(n)
    for n in names:
        check(same(c, "p", n), "%s: %s byte-identical to the primary (cmp)" % (what, n))


ENV = {}

# ---- permuted blocks: a cluster of 64 MiB, s current, o an older build ----
SIZE = 64 * MB
c = Cluster(sc, "moved", ["p", "s", "o"], "p", size=SIZE)
ENV = {"o": {"RESYNC_FEATURES_OFF": str(COPY | ROLLING)}}
base = b"".join(rng.randbytes(16 * MB) for _ in range(SIZE // (16 * MB)))
nblocks = SIZE // BLOCK
moved = rng.sample(range(nblocks), nblocks // 10)
perm = moved[:]
while any(a == b for a, b in zip(moved, perm)):
    rng.shuffle(perm)
permuted = bytearray(base)
for a, b in zip(moved, perm):
    permuted[b * BLOCK:(b + 1) * BLOCK] = base[a * BLOCK:(a + 1) * BLOCK]
permuted = bytes(permuted)

put_images(c, {"p": permuted, "s": base, "o": base})
nodes = resync(c, "permuted")
s, o = nodes["s"], nodes["o"]
print("permuted, auto: s sent %d bytes (%.3f %%), copied %d; older o sent %d (%.3f %%)" %
      (s["bytes_sent"], 100.0 * s["bytes_sent"] / SIZE, s["bytes_copied"],
       o["bytes_sent"], 100.0 * o["bytes_sent"] / SIZE))
check(s["delta"] == "auto", "permuted: auto is the default: %s" % s)
check(s["bytes_sent"] < SIZE // 100, "permuted: s sent under 1 %% of the volume: %s" % s)
check(s["bytes_copied"] >= len(moved) * BLOCK * 9 // 10,
      "permuted: the moved blocks were copied: %s" % s)
check(o["bytes_copied"] == 0 and o["bytes_written"] >= len(moved) * BLOCK * 9 // 10,
      "permuted: the older o got data, no copies: %s" % o)
check_same(c, "permuted", ["s", "o"])

# The control: today's aligned path sends the moved blocks again.
put_images(c, {"s": base})
nodes = resync(c, "permuted, aligned", "--node", "s", "--delta", "aligned")
s = nodes["s"]
print("permuted, aligned: s sent %d bytes (%.3f %%)" % (s["bytes_sent"], 100.0 * s["bytes_sent"] / SIZE))
check(s["delta"] == "aligned" and s["bytes_copied"] == 0,
      "aligned: no copies: %s" % s)
check(s["bytes_sent"] > SIZE // 20, "aligned: the moved blocks travel as data: %s" % s)
# A bad --delta is refused, by resyncctl and by the daemon.
r = c.ctl("resync", "--yes", "--delta", "fast")
check(r.returncode == 2 and "--delta" in r.stderr, "--delta fast is a usage error: %s" % r.stderr)
r = subprocess.run(["socat", "-", "UNIX-CONNECT:" + c.control("p")], capture_output=True,
                   text=True, timeout=30,
                   input='{"cmd": "resync", "confirm": "moved", "delta": "fast"}\n')
res = json.loads(r.stdout.splitlines()[-1]) if r.stdout.strip() else {}
check(res.get("ok") is False and '"delta" must be' in res.get("error", ""),
      "the daemon refuses a bad delta: %s %s" % (r.stdout, r.stderr))

check_same(c, "permuted, aligned", ["s"])

# ---- copies are journaled like data: a rollback puts the old image back ----
put_images(c, {"s": base})
nodes = resync(c, "permuted, undo", "--node", "s", "--undo")
check(nodes["s"]["bytes_copied"] > 0, "undo: the run copied: %s" % nodes["s"])
r = c.ctl("rollback", "s", "--yes")
check(r.returncode == 0, "rollback of s exits 0: %s %s" % (r.stdout, r.stderr))
for n in list(c.procs):
    c.stop(n)
with open(c.image("s"), "rb") as f:
    check(f.read() == base, "undo: the rollback put back the image from before the copies")

# ---- kill -9 of the secondary in the middle of its COPY frame ----
ENV["s"] = {"RESYNC_TEST_COPY_KILL_AFTER": str(len(moved) // 2)}
put_images(c, {"s": base})
rc, plan, summary, err = resync_json(c, "--node", "s")
check(rc != 0, "killed mid-copy: the resync fails (%d)" % rc)
proc = c.procs.pop("s")
wait_for(lambda: proc.poll() is not None, what="s killed by its failpoint")
check(proc.returncode == -9, "s died of SIGKILL (%s)" % proc.returncode)
check(not same(c, "p", "s") and not same(c, "s", "o"),
      "s is half rewritten: neither the old nor the new image")
del ENV["s"]
for n in list(c.procs):
    c.stop(n)
for n in c.names:
    c.start(n, env=ENV.get(n))
st = c.status("s")
check(st["s"]["state"] == "Inconsistent", "s is Inconsistent after kill -9: %s" % st["s"])
nodes = resync(c, "after kill -9", "--node", "s")
s = nodes["s"]
print("after kill -9 mid-copy: sent %d bytes, copied %d, refused %d" %
      (s["bytes_sent"], s["bytes_copied"], s["copies_refused"]))
# The copies written before the kill destroyed sources that the secondary
# held nowhere else (the permutation's cycles): those blocks go as data,
# the rest still as copies.
check(s["bytes_copied"] > 0 and s["bytes_sent"] < len(moved) * BLOCK * 2 // 3,
      "after kill -9: what still is somewhere goes as copies: %s" % s)
check_same(c, "after kill -9", ["s"])
for n in c.names:
    os.unlink(c.image(n))

# ---- shifted data: a cluster of 128 MiB ----
SIZE = 128 * MB
c = Cluster(sc, "shift", ["p", "s"], "p", size=SIZE)
ENV = {}
base = b"".join(rng.randbytes(16 * MB) for _ in range(SIZE // (16 * MB)))
cases = [
    ("shifted by 1 byte", rng.randbytes(1) + base[:-1]),
    ("shifted by 4097 bytes", base[4097:] + rng.randbytes(4097)),
]
at = 37 * MB + 12345  # the insert's bytes are random: 0.8 % of the volume
cases.append(("a 1 MiB insert", base[:at] + rng.randbytes(MB) + base[at:SIZE - MB]))
# The same shift found by --delta rolling (every leaf a candidate).
cases.append(("shifted by 4097 bytes, rolling", cases[1][1], "--delta", "rolling"))
for what, new, *args in cases:
    put_images(c, {"p": new, "s": base})
    s = resync(c, what, *args)["s"]
    check(s["delta"] == ("rolling" if args else "auto"), "%s: the delta asked for: %s" % (what, s))
    print("%s: sent %d bytes (%.3f %%), copied %d, %.2f s" %
          (what, s["bytes_sent"], 100.0 * s["bytes_sent"] / SIZE, s["bytes_copied"], s["seconds"]))
    check(s["bytes_sent"] < SIZE // 100, "%s: sent under 1 %% of the volume: %s" % (what, s))
    check_same(c, what, ["s"])

# A region of 8 MiB that the secondary holds nowhere: the search gives up
# (4 MiB without a match) and the region goes as data, identical.
noise = rng.randbytes(8 * MB)
put_images(c, {"p": base[:64 * MB] + noise + base[72 * MB:], "s": base})
s = resync(c, "8 MiB new")["s"]
print("8 MiB of new data: sent %d bytes, copied %d" % (s["bytes_sent"], s["bytes_copied"]))
check(s["bytes_copied"] == 0 and s["bytes_written"] == 8 * MB,
      "8 MiB new: sent as data: %s" % s)
check_same(c, "8 MiB new", ["s"])
print("ok")
