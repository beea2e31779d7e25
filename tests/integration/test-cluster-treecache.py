#!/usr/bin/env python3
"""The hash tree kept across a clean restart (IMAGE.resync-hashes): the
primary takes its tree back only when its image is exactly as it was
hashed, and a compare with a taken-back tree still finds every difference.
An image changed while the daemon was stopped, even with its mtime set
back, is hashed again (its ctime moved)."""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cluster_lib import MB, Cluster, check, resync_ok, verify  # noqa: E402
from resyncfs_lib import Scratch, wait_for  # noqa: E402

TOOK = "took back the hash tree"
sc = Scratch()
c = Cluster(sc, "tcache", ["n1", "n2"], "n1", size=64 * MB)
hashes = c.image("n1") + ".resync-hashes"
for n in c.names:
    c.start(n)
for i in range(6):
    c.write("n1", i * 9 * MB + 4096, os.urandom(MB))
resync_ok(c, "first resync")


def still():
    """Images untouched for half a second: a compare's tree is kept."""
    wait_for(lambda: all(time.time() - os.stat(c.image(n)).st_mtime > 0.5 for n in c.names),
             what="images unchanged for half a second")


def restart_n1():
    c.stop("n1")
    c.start("n1")
    return c.log("n1").count(TOOK)


def ranges():
    rc, out, err = verify(c)
    check(rc in (0, 1), "verify runs: %s" % err)
    return rc, out["nodes"][0]["ranges"]


still()
check(ranges()[0] == 0, "in sync")
c.stop("n1")
check(os.path.exists(hashes), "a clean stop keeps the tree beside the image")
c.start("n1")
took = c.log("n1").count(TOOK)
check(took == 1 and not os.path.exists(hashes), "the start took it back and removed the file")

# A compare with the taken-back tree finds a page written on the secondary.
c.write("n2", 20 * MB + 8192, os.urandom(4096))
rc, r = ranges()
check(rc == 1 and r == [[20 * MB + 8192, 4096]],
      "the taken-back tree finds exactly the page written on n2: %s" % r)
resync_ok(c, "after the stray page")
still()
check(ranges()[0] == 0, "in sync again (the tree is cached once more)")

# The primary's image changed while it was stopped, its mtime set back:
# the tree is not taken back, and the change is found.
c.stop("n1")
check(os.path.exists(hashes), "kept at the clean stop")
st = os.stat(c.image("n1"))
with open(c.image("n1"), "r+b") as f:
    f.seek(33 * MB)
    f.write(os.urandom(4096))
os.utime(c.image("n1"), ns=(st.st_atime_ns, st.st_mtime_ns))
check(os.stat(c.image("n1")).st_mtime_ns == st.st_mtime_ns, "mtime set back")
c.start("n1")
check(c.log("n1").count(TOOK) == took, "a changed image's tree is not taken back")
check(not os.path.exists(hashes), "and the stale file is gone")
rc, r = ranges()
check(rc == 1 and r == [[33 * MB, 4096]], "the offline change is found: %s" % r)

# A kill leaves no tree behind, and the next start hashes.
still()
check(ranges()[0] == 1, "still differs (no resync yet)")
c.kill9("n1")
check(not os.path.exists(hashes), "a killed daemon keeps no tree")
c.start("n1")
check(c.log("n1").count(TOOK) == took, "nothing to take back after a kill")
resync_ok(c, "last")
check(verify(c)[0] == 0, "verify exits 0")
for n in c.names:
    c.stop(n)
print("ok: the tree is kept across a clean restart only while the image is unchanged")
