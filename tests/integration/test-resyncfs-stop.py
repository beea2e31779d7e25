#!/usr/bin/env python3
"""The stop of a busy mount, and a second mount on a mount point in use.

Busy: a process holds the volume open with its working directory on the
mount; SIGTERM to resyncfs. It waits (saying on stderr why, naming the
holder) for at most the library's limit (10 s), then detaches the mount and
exits; the holder's next write fails, the image holds exactly what was
written before, and the metadata is left unclean, so that the next owner
counts the written extents as dirty rather than trusting a clean stop.

Second mount: resyncfs on a mount point where a volume is already mounted
is refused with a clear message and a non-zero exit, touches nothing of its
own image, and the first mount keeps serving. A mount point freed by
kill -9 and a lazy unmount (what resyncd's start does with a stale mount)
can be mounted again."""
import os
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from resyncfs_lib import (RESYNCFS, Mount, Scratch, check, info,  # noqa: E402
                          is_mounted, ranges_to_blocks)

SIZE = 16 << 20
BS = 64 << 10
LIMIT = 10.0  # FUSEFS_STOP_WAIT_MS_DEFAULT
WRITES = [(0, 4096), (3 * BS + 100, 70000), (200 * BS, BS)]

HOLDER = r"""
import os, sys
fd = os.open("volume", os.O_RDWR)
for off, n in %r:
    os.pwrite(fd, bytes([(off // 4096 + 1) %% 256]) * n, off)
os.fsync(fd)
print("ready", flush=True)
sys.stdin.readline()          # the test's go: write again, after the stop
try:
    os.pwrite(fd, b"late" * 1024, 0)
    print("wrote", flush=True)
except OSError as e:
    print("refused", e.errno, flush=True)
sys.stdin.readline()
""" % (WRITES,)


def expected_image():
    img = bytearray(SIZE)
    for off, n in WRITES:
        img[off:off + n] = bytes([(off // 4096 + 1) % 256]) * n
    return bytes(img)


def written_blocks():
    s = set()
    for off, n in WRITES:
        s.update(range(off // BS, (off + n - 1) // BS + 1))
    return s


def mounts_at(path):
    path = os.path.realpath(path)
    with open("/proc/self/mountinfo") as f:
        return sum(1 for line in f if line.split()[4] == path)


def busy_stop():
    sc = Scratch()
    img = sc.image("img", SIZE)
    m = Mount(sc, img, ["block_size=64K"])
    holder = subprocess.Popen([sys.executable, "-c", HOLDER], cwd=m.mnt,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    check(holder.stdout.readline() == b"ready\n", "the holder wrote its blocks")

    t0 = time.monotonic()
    m.proc.send_signal(signal.SIGTERM)
    try:
        rc = m.proc.wait(timeout=LIMIT + 20)
    except subprocess.TimeoutExpired:
        holder.kill()
        check(False, "resyncfs did not exit within %.0f s of SIGTERM" % (LIMIT + 20))
    elapsed = time.monotonic() - t0
    err = m.proc.stderr.read().decode()
    sc.mounts.remove(m)
    print("stopped in %.1f s, rc %d:\n%s" % (elapsed, rc, err))
    check(elapsed < LIMIT + 5, "stop took %.1f s, the bound is %.0f s" % (elapsed, LIMIT))
    check(elapsed >= LIMIT * 0.9, "stop gave up after %.1f s, before the bound" % elapsed)
    check("busy" in err and m.mnt in err, "stderr says the mount is busy: " + err)
    check("pid %d" % holder.pid in err, "stderr names the holder: " + err)
    check("detach" in err, "stderr says the mount was detached: " + err)
    check("unclean" in err, "stderr says the metadata is left unclean: " + err)
    check(rc != 0, "an unclean stop is not a success")
    check(not is_mounted(m.mnt), "still mounted after the stop")

    # Nothing reaches the image any more.
    holder.stdin.write(b"go\n")
    holder.stdin.flush()
    reply = holder.stdout.readline().decode()
    check(reply.startswith("refused"), "the holder's late write failed: " + reply)
    holder.stdin.close()
    holder.wait(timeout=20)

    with open(img, "rb") as f:
        check(f.read() == expected_image(), "the image holds exactly what was written")
    i = info(img)
    check(not i["clean"], "metadata left unclean after a detached stop: %r" % i)
    dirty = ranges_to_blocks(i["dirty_ranges"], BS)
    check(written_blocks() <= dirty, "the written blocks count as dirty: %r" % i)

    # The next owner takes the unclean stop as one: the log folds into the
    # bitmap, and a clean stop now keeps those blocks dirty.
    m = Mount(sc, img, control=False)
    m.terminate()
    i = info(img)
    check(i["clean"], "clean after a stop that was not busy: %r" % i)
    dirty = ranges_to_blocks(i["dirty_ranges"], BS)
    check(written_blocks() <= dirty, "still dirty after the next start: %r" % i)
    with open(img, "rb") as f:
        check(f.read() == expected_image(), "the image is unchanged by the next start")
    sc.cleanup()


def second_mount():
    sc = Scratch()
    img1 = sc.image("img1", SIZE)
    img2 = sc.image("img2", SIZE)
    m = Mount(sc, img1)
    p = subprocess.run([RESYNCFS, img2, m.mnt, "-f"], stderr=subprocess.PIPE, timeout=30)
    err = p.stderr.decode()
    print("second resyncfs: rc %d: %s" % (p.returncode, err))
    check(p.returncode != 0, "a second mount on a mount point in use is refused")
    check("already a mount point" in err and "mnt" in err, "a clear message: " + err)
    check("in use by another writer" not in err, "not blamed on the image: " + err)
    check(mounts_at(m.mnt) == 1, "nothing stacked on the first mount")
    check(not os.path.exists(img2 + ".resync-meta"), "the refused image was not touched")

    # The first keeps serving.
    data = b"still here" * 100
    fd = os.open(m.file, os.O_RDWR)
    try:
        os.pwrite(fd, data, 12345)
        os.fsync(fd)
        check(os.pread(fd, len(data), 12345) == data, "the first mount serves")
    finally:
        os.close(fd)
    check(m.ctl("status").startswith("ok"), "the first mount's control socket answers")

    # Killed, then lazily unmounted (what resyncd does with a stale mount):
    # the mount point is a plain directory again and may be mounted.
    m.kill9()
    m = Mount(sc, img1)
    m.terminate()
    sc.cleanup()


busy_stop()
second_mount()
print("ok")
