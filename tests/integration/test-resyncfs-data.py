#!/usr/bin/env python3
"""resyncfs data path and dirty tracking on a real mount:
 - random unaligned writes, crossing block edges and at the volume's end,
   read back identically through the mount and from the image after
   unmount; a write past the end fails with ENOSPC, one across it is short;
 - truncation to another size fails with EPERM, to its own size works;
 - the dirty ranges are exactly the written blocks, and survive unmount,
   remount (with a fresh write) and SIGTERM; a fresh image has none;
 - fallocate punch-hole reads back zeros and is marked dirty."""
import errno
import os
import random
import signal
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from resyncfs_lib import (Mount, Scratch, blocks_of, check, info,  # noqa: E402
                          ranges_to_blocks)

SIZE = (64 << 20) + 12345
BS = 64 << 10

sc = Scratch()
img = sc.image("img", SIZE)
rng = random.Random(1234)
model = bytearray(SIZE)
writes = []

m = Mount(sc, img)
i0 = info(img)
check(i0["size"] == SIZE and i0["block_size"] == BS, "info geometry: %r" % i0)
check(i0["dirty_bytes"] == 0, "fresh metadata has no dirty bits")
check(i0["clean"] is False, "clean flag is off while mounted")
check(i0["bitmap_trusted"] is True, "fresh bitmap trusted")

fd = os.open(m.file, os.O_RDWR)
check(os.fstat(fd).st_size == SIZE, "volume file size")
# Random unaligned writes in a few regions, so the dirty set is sparse.
regions = [rng.randrange(0, SIZE - (4 << 20)) for _ in range(6)]
for n in range(200):
    base = regions[n % len(regions)]
    off = base + rng.randrange(0, 3 << 20)
    ln = rng.choice([1, 7, 511, 4095, 4097, BS - 1, BS + 3, 200000, 1 << 20])
    data = rng.randbytes(ln)
    check(os.pwrite(fd, data, off) == ln, "pwrite")
    model[off:off + ln] = data
    writes.append((off, ln))
# Crossing a block edge exactly, and the volume's end.
for off, ln in [(5 * BS - 3, 6), (SIZE - 100, 100), (SIZE - BS - 1, BS + 1)]:
    data = rng.randbytes(ln)
    check(os.pwrite(fd, data, off) == ln, "edge pwrite")
    model[off:off + ln] = data
    writes.append((off, ln))
# Across the end: short; past the end: ENOSPC.
check(os.pwrite(fd, b"x" * 10, SIZE - 4) == 4, "write across the end is short")
model[SIZE - 4:SIZE] = b"xxxx"
writes.append((SIZE - 4, 4))
try:
    os.pwrite(fd, b"y", SIZE)
    check(False, "write past the end succeeded")
except OSError as e:
    check(e.errno == errno.ENOSPC, "write past the end: %s" % e)
# Truncation.
for bad in (0, SIZE - 1, SIZE + 1):
    try:
        os.ftruncate(fd, bad)
        check(False, "truncate to %d succeeded" % bad)
    except OSError as e:
        check(e.errno == errno.EPERM, "truncate to %d: %s" % (bad, e))
os.ftruncate(fd, SIZE)
# Punch a hole: reads back as zeros, is dirty.
hole = (regions[0] + 8192, 3 * BS)
import ctypes  # noqa: E402
libc = ctypes.CDLL(None, use_errno=True)
FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE = 1, 2
r = libc.fallocate(fd, FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE,
                   ctypes.c_long(hole[0]), ctypes.c_long(hole[1]))
check(r == 0, "punch hole: errno %d" % ctypes.get_errno())
model[hole[0]:hole[0] + hole[1]] = bytes(hole[1])
writes.append(hole)
os.fsync(fd)

# Read back through the mount, in odd-sized pieces.
pos = 0
while pos < SIZE:
    ln = min(rng.choice([4096, 100000, 1 << 20, 3 << 20]), SIZE - pos)
    got = os.pread(fd, ln, pos)
    check(got == bytes(model[pos:pos + ln]), "read back through the mount at %d" % pos)
    pos += ln
os.close(fd)

want = blocks_of(writes, BS, SIZE)
m.unmount()
with open(img, "rb") as f:
    check(f.read() == bytes(model), "image after unmount equals the model")
i1 = info(img)
check(i1["clean"] is True, "clean after unmount")
got = ranges_to_blocks(i1["dirty_ranges"], BS)
check(got == want, "dirty blocks exactly the written ones (%d vs %d, extra %r, missing %r)"
      % (len(got), len(want), sorted(got - want)[:5], sorted(want - got)[:5]))
check(i1["dirty_ranges"][-1][0] + i1["dirty_ranges"][-1][1] == SIZE,
      "last range clipped to the volume's end")
check(i1["dirty_bytes"] == sum(n for _, n in i1["dirty_ranges"]), "dirty_bytes is the sum")

# Remount, write one more block, stop with SIGTERM: the old bits survive.
m = Mount(sc, img)
with open(m.file, "r+b", buffering=0) as f:
    f.seek(SIZE // 2)
    f.write(b"z" * 10)
model[SIZE // 2:SIZE // 2 + 10] = b"z" * 10
writes.append((SIZE // 2, 10))
m.terminate(signal.SIGTERM)
i2 = info(img)
check(i2["clean"] is True, "clean after SIGTERM")
check(ranges_to_blocks(i2["dirty_ranges"], BS) == blocks_of(writes, BS, SIZE),
      "dirty blocks after remount and SIGTERM")
check(i2["generation"] == i1["generation"], "generation kept across mounts")
with open(img, "rb") as f:
    check(f.read() == bytes(model), "image after SIGTERM equals the model")
print("ok: %d writes, %d dirty blocks" % (len(writes), len(want)))
