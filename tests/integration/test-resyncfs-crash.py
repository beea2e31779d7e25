#!/usr/bin/env python3
"""Dirty tracking survives kill -9: writers (some fsyncing, some not) run
against the mount, resyncfs is killed with SIGKILL while they still write,
and then every block whose bytes in the image differ from a copy taken
before is covered by the metadata (a dirty bit, or an extent of the
activity log), and the clean flag is off. A small activity log (4 extents
of 1 MiB) makes the log fold into the bitmap many times during the run.
Remounting folds the log into the bitmap; coverage must still hold.
Run with and without the kernel writeback cache."""
import os
import random
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from resyncfs_lib import (Mount, Scratch, check, info,  # noqa: E402
                          ranges_to_blocks, wait_for)

SIZE = 128 << 20
BS = 64 << 10

WRITER = r"""
import os, random, sys
path, seed, do_fsync = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1"
rng = random.Random(seed)
fd = os.open(path, os.O_RDWR)
n = 0
while True:
    off = rng.randrange(0, %d - 300000)
    ln = rng.choice([1, 4096, 5000, 65536, 200000])
    try:
        os.pwrite(fd, rng.randbytes(ln), off)
        if do_fsync and n %% 4 == 0:
            os.fsync(fd)
    except OSError:
        break
    n += 1
    if n == 50:
        sys.stdout.write("started\n")
        sys.stdout.flush()
""" % SIZE


def changed_blocks(a_path, b_path):
    out = set()
    with open(a_path, "rb") as a, open(b_path, "rb") as b:
        blk = 0
        while True:
            x = a.read(BS)
            y = b.read(BS)
            if not x and not y:
                break
            if x != y:
                out.add(blk)
            blk += 1
    return out


def run(options, seed):
    sc = Scratch()
    img = sc.path("img")
    rng = random.Random(seed)
    with open(img, "wb") as f:
        f.write(rng.randbytes(SIZE))
    before = sc.path("before")
    subprocess.run(["cp", "--sparse=never", img, before], check=True)

    m = Mount(sc, img, ["al_extents=4", "al_extent_size=1M"] + options)
    writers = []
    for i in range(4):
        p = subprocess.Popen([sys.executable, "-c", WRITER, m.file, str(seed * 10 + i),
                              "1" if i % 2 else "0"], stdout=subprocess.PIPE)
        writers.append(p)
    for p in writers:
        check(p.stdout.readline() == b"started\n", "writer started")
    # Let the log churn: wait until the metadata has been written many times.
    wait_for(lambda: int(m.ctl("status").split("meta_writes=")[1]) > 60,
             what="activity-log transactions")
    m.kill9()
    for p in writers:
        p.wait(timeout=30)

    i = info(img)
    check(i["clean"] is False, "clean flag off after kill -9")
    dirty = ranges_to_blocks(i["dirty_ranges"], BS)
    changed = changed_blocks(img, before)
    check(len(changed) > 20, "the writers changed blocks (%d)" % len(changed))
    missing = changed - dirty
    check(not missing, "changed blocks not covered by the metadata: %r"
          % sorted(missing)[:10])

    # Take it over again: the log folds into the bitmap; a clean stop keeps it.
    m = Mount(sc, img)
    m.unmount()
    i2 = info(img)
    check(i2["clean"] is True, "clean after remount")
    dirty2 = ranges_to_blocks(i2["dirty_ranges"], BS)
    check(not (changed - dirty2), "coverage after remount")
    check(dirty2 == dirty, "the remount folded exactly what info showed")
    print("ok %s: %d blocks changed, %d marked dirty" % (options, len(changed), len(dirty)))
    sc.cleanup()


run([], 1)
run(["writeback"], 2)
