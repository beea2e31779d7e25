#!/usr/bin/env python3
"""resyncfs's durable-write path on a real mount (issue 17):
 - an FSYNC flushes the image once after writes (and the first after the
   mount or a thaw of the fence, for what others wrote into the image), and
   not at all when every write is already flushed (a second FSYNC);
   the data reads back through the mount and from the image;
 - the control socket's "stats" counts requests by kind, and refuses nothing
   it did not before ("status" unchanged);
 - a write to blocks the metadata already holds dirty on disk costs no
   metadata write after a remount, a write elsewhere still does, and a
   kill -9 after both finds every written block dirty;
 - the FUSE worker threads run SCHED_FIFO at the default priority 10, at
   -o rtprio=N at N, and with -o rtprio=0 normally; rtprio=100 is refused
   with exit 2 and nothing mounted."""
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from resyncfs_lib import (RESYNCFS, Mount, Scratch, check, info,  # noqa: E402
                          is_mounted, ranges_to_blocks)

SIZE = 64 << 20
BS = 64 << 10

sc = Scratch()
img = sc.image("img", SIZE)


def stats(m):
    line = m.ctl("stats")
    check(line.startswith("ok "), "stats answers: %r" % line)
    return {k: int(v) for k, v in (f.split("=") for f in line.split()[1:])}


def fifo_threads(m):
    """(policy, priority) of every thread of the resyncfs process."""
    out = []
    for tid in os.listdir("/proc/%d/task" % m.proc.pid):
        t = int(tid)
        out.append((os.sched_getscheduler(t), os.sched_getparam(t).sched_priority))
    return out


# --- FSYNC: one flush after writes, none when nothing new was written ---
m = Mount(sc, img)
fd = os.open(m.file, os.O_RDWR)
s0 = stats(m)
os.fsync(fd)
os.fsync(fd)
s1 = stats(m)
check(s1["fsyncs"] == s0["fsyncs"] + 2, "fsyncs reached resyncfs: %r %r" % (s0, s1))
check(s1["image_flushes"] == s0["image_flushes"] + 1, "the first after the mount flushes")
os.pwrite(fd, b"a" * 4096, 3 * BS)
os.fsync(fd)
s2 = stats(m)
check(s2["writes"] >= s1["writes"] + 1, "the write was counted")
check(s2["image_flushes"] == s1["image_flushes"] + 1, "a write, then fsync: one flush")
os.fsync(fd)
os.fdatasync(fd)
s3 = stats(m)
check(s3["fsyncs"] == s2["fsyncs"] + 2, "both reached resyncfs")
check(s3["image_flushes"] == s2["image_flushes"], "already flushed: no flush")
os.pwrite(fd, b"b" * 4096, 5 * BS)
os.fdatasync(fd)
s4 = stats(m)
check(s4["image_flushes"] == s3["image_flushes"] + 1, "a new write: a new flush")
check(m.ctl("freeze") == "ok" and m.ctl("thaw") == "ok", "freeze, thaw")
os.fsync(fd)
os.fsync(fd)
s5 = stats(m)
check(s5["image_flushes"] == s4["image_flushes"] + 1, "after a thaw: one flush")
check(os.pread(fd, 4096, 3 * BS) == b"a" * 4096, "read back through the mount")
check(m.ctl("status").startswith("ok frozen=0 waiting=0 meta_writes="), "status unchanged")

# --- scheduling of the FUSE workers ---
th = fifo_threads(m)
check((os.SCHED_FIFO, 10) in th, "a FUSE worker runs SCHED_FIFO 10: %r" % th)
check((os.SCHED_OTHER, 0) in th, "the main thread stays normal: %r" % th)
os.close(fd)
m.unmount()
with open(img, "rb") as f:
    f.seek(5 * BS)
    check(f.read(4096) == b"b" * 4096, "the image holds the write")

m = Mount(sc, img, ["rtprio=0"])
with open(m.file, "rb") as f:
    f.read(4096)
th = fifo_threads(m)
check(all(p == os.SCHED_OTHER for p, _ in th), "rtprio=0: all normal: %r" % th)
m.unmount()
m = Mount(sc, img, ["rtprio=3"])
with open(m.file, "rb") as f:
    f.read(4096)
check((os.SCHED_FIFO, 3) in fifo_threads(m), "rtprio=3 is taken")
m.unmount()
mnt = sc.path("bad")
os.makedirs(mnt)
r = subprocess.run([RESYNCFS, img, mnt, "-f", "-o", "rtprio=100"], stderr=subprocess.PIPE)
check(r.returncode == 2, "rtprio=100: exit %d" % r.returncode)
check(b"invalid rtprio '100'" in r.stderr, "rtprio=100 says why: %r" % r.stderr)
check(not is_mounted(mnt), "rtprio=100: nothing mounted")

# --- blocks dirty on disk need no metadata write; others still do ---
m = Mount(sc, img)
fd = os.open(m.file, os.O_RDWR)
w0 = stats(m)["meta_writes"]
os.pwrite(fd, b"c" * 4096, 3 * BS + 4096)   # block 3: dirty on disk
os.pwrite(fd, b"d" * 100, 5 * BS + 9)       # block 5: likewise
os.fsync(fd)
check(stats(m)["meta_writes"] == w0, "rewrites of dirty blocks: no metadata write")
os.pwrite(fd, b"e" * 4096, 40 << 20)         # a block never written
check(stats(m)["meta_writes"] == w0 + 1, "a new block: one metadata write")
os.close(fd)
m.kill9()
dirty = ranges_to_blocks(info(img)["dirty_ranges"], BS)
for b in (3, 5, (40 << 20) // BS):
    check(b in dirty, "block %d dirty after kill -9: %r" % (b, sorted(dirty)))
print("ok")
