#!/usr/bin/env python3
"""Write fence, cache invalidation and the image lock on a real mount:
 - freeze (wait): a writer blocks at the fence while reads go on, and
   completes after thaw with every byte in place; freeze (fail): a write
   fails with EROFS, and succeeds after thaw;
 - invalidation: a reader keeps the file open and has the range cached;
   bytes changed in the image underneath stay invisible to it until the
   range is invalidated, then read back new; `rewrite` does both at once;
 - a second resyncfs of the same image, and resync-diff sync into it, are
   refused with a clear error while it is mounted; both work after."""
import errno
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from resyncfs_lib import (RESYNC_DIFF, RESYNCFS, Mount, Scratch, check,  # noqa: E402
                          info, wait_for)

SIZE = 64 << 20
MB = 1 << 20

sc = Scratch()
img = sc.image("img", SIZE)
m = Mount(sc, img)

# ---- fence, wait mode ----
check(m.ctl("freeze") == "ok", "freeze")
check("frozen=1" in m.ctl("status"), "status says frozen")
payload = os.urandom(3 * MB + 123)
writer = subprocess.Popen([sys.executable, "-c",
                           "import os,sys\n"
                           "fd=os.open(sys.argv[1],os.O_WRONLY)\n"
                           "d=sys.stdin.buffer.read()\n"
                           "assert os.pwrite(fd,d,5*2**20+7)==len(d)\n"
                           "os.fsync(fd)\n", m.file], stdin=subprocess.PIPE)
writer.stdin.write(payload)
writer.stdin.close()
wait_for(lambda: "waiting=1" in m.ctl("status"), what="the writer at the fence")
# Reads go on while frozen.
with open(m.file, "rb") as f:
    f.seek(40 * MB)
    check(f.read(MB) == bytes(MB), "read during freeze")
check(writer.poll() is None, "writer still held by the fence")
check(m.ctl("thaw") == "ok", "thaw")
check(writer.wait(timeout=30) == 0, "writer completed after thaw")
with open(m.file, "rb") as f:
    f.seek(5 * MB + 7)
    check(f.read(len(payload)) == payload, "every byte there after thaw")

# ---- fence, fail mode ----
check(m.ctl("freeze fail") == "ok", "freeze fail")
fd = os.open(m.file, os.O_RDWR)
try:
    os.pwrite(fd, b"q" * 4096, 0)
    check(False, "write succeeded while frozen in fail mode")
except OSError as e:
    check(e.errno == errno.EROFS, "fail mode gives EROFS: %s" % e)
check(os.pread(fd, 4096, 0) == bytes(4096), "refused write left nothing")
check(m.ctl("thaw") == "ok", "thaw after fail")
check(os.pwrite(fd, b"q" * 4096, 0) == 4096, "write after thaw")
check(os.pread(fd, 4096, 0) == b"q" * 4096, "read after thaw")
os.close(fd)
check(m.ctl("freeze bogus").startswith("error:"), "bad freeze mode refused")
check(m.ctl("jump").startswith("error:"), "unknown command refused")

# ---- invalidation, reader keeps the file open ----
R = 20 * MB
reader = os.open(m.file, os.O_RDONLY)
check(os.pread(reader, MB, R) == bytes(MB), "reader caches the range")
new = os.urandom(MB)
# Bytes changed underneath, bypassing resyncfs: the cached pages are stale.
with open(img, "r+b") as f:
    f.seek(R)
    f.write(new)
check(os.pread(reader, MB, R) == bytes(MB),
      "the kernel serves the cached (stale) pages before invalidation")
check(m.ctl("invalidate %d %d" % (R, MB)) == "ok", "invalidate")
check(os.pread(reader, MB, R) == new, "new bytes after invalidation")
# rewrite: written through the engine, marked, invalidated.
new2 = os.urandom(2 * MB)
src = sc.path("src")
with open(src, "wb") as f:
    f.write(new2)
check(os.pread(reader, 2 * MB, 30 * MB) == bytes(2 * MB), "cache the rewrite range")
check(m.ctl("rewrite %d %d %s" % (30 * MB, 2 * MB, src)) == "ok", "rewrite")
check(os.pread(reader, 2 * MB, 30 * MB) == new2, "rewritten range reads back new")
check(m.ctl("rewrite %d %d %s" % (SIZE - 10, 2 * MB, src)).startswith("error:"),
      "rewrite past the end refused")
os.close(reader)

# ---- the lock ----
other = sc.path("mnt2")
os.makedirs(other)
p = subprocess.run([RESYNCFS, img, other, "-f"], stderr=subprocess.PIPE, timeout=30)
check(p.returncode == 1 and b"in use" in p.stderr,
      "second mount refused: %d %s" % (p.returncode, p.stderr))
donor = sc.image("donor", SIZE)
p = subprocess.run([RESYNC_DIFF, "sync", donor, img], stderr=subprocess.PIPE, timeout=30)
check(p.returncode == 2 and b"in use" in p.stderr,
      "resync-diff sync into a mounted image refused: %d %s" % (p.returncode, p.stderr))
m.unmount()
i = info(img)
check([30 * MB, 2 * MB] in i["dirty_ranges"], "rewrite is marked dirty: %r" % i["dirty_ranges"])

# Unowned now: the sync works, and the metadata notices the image changed.
check(info(img)["bitmap_trusted"] is True, "trusted after a clean stop")
p = subprocess.run([RESYNC_DIFF, "sync", donor, img], stdout=subprocess.DEVNULL, timeout=60)
check(p.returncode == 0, "sync after unmount")
check(info(img)["bitmap_trusted"] is False, "image changed while unowned: bitmap untrusted")
m = Mount(sc, img)
m.unmount()
check(info(img)["bitmap_trusted"] is False, "still untrusted after a remount")
print("ok")
