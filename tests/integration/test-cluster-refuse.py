#!/usr/bin/env python3
"""A node named primary by the static configuration (no etcd) whose volume
is Inconsistent refuses the role (DRBD's rule: half-rewritten data is not
promoted as good), and says so everywhere; the etcd tests cover the same
refusal when etcd's leader key names it.

Two nodes, a primary. b is killed right after it marked itself
Inconsistent at the first data of a resync (failpoint
secondary-inconsistent). The configuration then names b the primary and
both restart: b logs its refusal; status through b shows b Inconsistent
with its promotion_refused, and through a, b's line says the refusal; a
resync asked through either node fails and names it; b's image is not
touched meanwhile. Then the operator's way out (resyncctl promote
--force, DRBD's primary --force): refused without a terminal or --yes,
and on a node that refuses nothing; with --yes b acts as primary with
the data it holds, unchanged, UpToDate; its next resync compares a in
full and leaves it byte-identical to b."""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cluster_lib import MB, Cluster, check, resync_json, resync_ok  # noqa: E402
from resyncfs_lib import Scratch, is_mounted, wait_for  # noqa: E402
import subprocess  # noqa: E402

SIZE = 16 * MB
REFUSED = "'b' refused to act as primary: its volume is Inconsistent"


def set_primary(c, name):
    with open(c.conf) as f:
        lines = f.read().splitlines()
    with open(c.conf, "w") as f:
        f.write("\n".join("primary = " + name if x.startswith("primary = ") else x
                          for x in lines) + "\n")


def image(c, n):
    with open(c.image(n), "rb") as f:
        return f.read()


sc = Scratch()
c = Cluster(sc, "refuse", ["a", "b"], "a", size=SIZE)
try:
    c.start("a")
    c.start("b", env={"RESYNC_FAILPOINT": "secondary-inconsistent"})
    # Under undo_max_bytes (10 % of the volume): when b, forced, resyncs a,
    # what a held is journaled, a diverged node's default.
    c.write("a", 0, os.urandom(1 * MB))
    rc, _, summary, err = resync_json(c)
    check(rc != 0, "the resync that kills b at its first data fails (%d): %s" % (rc, err))
    c.procs.pop("b").wait(timeout=30)  # killed by its failpoint
    if is_mounted(c.mount("b")):
        subprocess.call(["fusermount3", "-u", "-z", c.mount("b")])
    c.stop("a")

    set_primary(c, "b")
    since = {n: len(c.log(n)) for n in c.names}
    c.start("b")
    c.start("a")
    before = image(c, "b")
    wait_for(lambda: REFUSED in c.log("b")[since["b"]:], what="b's refusal in its log")
    st = c.status("b")
    check(st["b"].get("state") == "Inconsistent" and
          REFUSED in st["b"].get("promotion_refused", ""),
          "status through b: b Inconsistent, its refusal said: %s" % st)
    # a, a secondary by the configuration, has no primary to ask: its own
    # view, b's line saying why.
    st = c.status("a")
    check(REFUSED in st["b"].get("error", ""),
          "status through a: b's line says b refused the role: %s" % st)
    for via in ("b", "a"):
        r = c.ctl("--node", via, "resync", "--yes", "--json")
        check(r.returncode != 0 and REFUSED in r.stdout + r.stderr,
              "a resync asked through %s fails and names b's refusal: %s %s" %
              (via, r.stdout, r.stderr))
    check(image(c, "b") == before, "b's image untouched while it refuses the role")

    # The operator's way out when no node with good data is left
    # (DRBD's primary --force): b acts as primary with what it holds.
    r = c.ctl("--node", "b", "promote", "--force")
    check(r.returncode != 0 and "no terminal to confirm on" in r.stderr,
          "promote --force without a terminal or --yes changes nothing: %s %s" %
          (r.stdout, r.stderr))
    r = c.ctl("--node", "a", "promote", "--force", "--yes")
    check(r.returncode != 0 and "is not a primary that refused its role" in r.stderr,
          "promote --force of a, a secondary that refused nothing, is refused: %s %s" %
          (r.stdout, r.stderr))
    check(REFUSED in c.status("b")["b"].get("promotion_refused", ""), "b still refuses")
    r = c.ctl("--node", "b", "promote", "--force", "--yes", "--json")
    check(r.returncode == 0 and json.loads(r.stdout).get("promoted") is True,
          "promote --force --yes of b: %s %s" % (r.stdout, r.stderr))
    check("acts as primary by force with the data it holds (it was Inconsistent)" in
          c.log("b")[since["b"]:], "b's log says it was forced: %s" % c.log("b")[-2000:])
    check(image(c, "b") == before, "b's data as it was: the promotion wrote none of it")
    st = c.status("b")
    check(st["b"].get("role") == "primary" and st["b"].get("state") == "UpToDate" and
          not st["b"].get("promotion_refused"),
          "b primary and UpToDate, nothing refused: %s" % st["b"])
    # Its bitmap untrusted (the half-done resync's writes are in none):
    # the next resync compares a in full, and a ends with b's data.
    x = resync_ok(c, "b's resync of a after the forced promotion")["a"]
    check(x.get("mode") == "full" and x.get("bytes_written", 0) > 0,
          "a compared in full and rewritten with b's data: %s" % x)
    check(c.same_through_mounts("b", "a"), "a byte-identical to b")
    check(c.status("b")["a"].get("state") == "UpToDate", "a UpToDate")
    for n in ("b", "a"):
        c.stop(n)
finally:
    c.kill_and_unmount()
print("ok: b, Inconsistent and named primary by the configuration, refused the role; "
      "promote --force made it primary, and it resynced a")
