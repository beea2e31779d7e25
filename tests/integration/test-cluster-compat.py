#!/usr/bin/env python3
"""Peers of older builds: a secondary whose daemon lacks features (made
with RESYNC_FEATURES_OFF, a mask of the protocol's feature bits) still
resyncs to a byte-identical image, over the older frames.

- Mixed cluster: n2 speaks neither PAGE_REQ, EXTENTS, hash trees over
  page leaves nor a HELLO again, n3 speaks everything. The primary
  compares both over block leaves (what n2 can name); n2 receives whole
  differing blocks as BLOCKS frames, n3 only the differing pages as
  EXTENTS frames; the resync takes the plan's connection to n3, and
  connects to n2 again.
- n2 without EXTENTS and page leaves but with PAGE_REQ: the differing
  pages of the differing blocks, as BLOCKS frames.
- Every node up to date: the compare runs over page leaves and finds the
  differing pages themselves (differing_bytes is their exact sum)."""
import json
import os
import random
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cluster_lib import MB, Cluster, check, resync_json, resync_ok, verify  # noqa: E402
from resyncfs_lib import Scratch  # noqa: E402

PAGES, EXTENTS, FINE, CONTROL, REHELLO = 1 << 2, 1 << 3, 1 << 4, 1 << 6, 1 << 16
HASH_IF = 1 << 17
BLOCK, PAGE = 64 * 1024, 4096
VOLUME = 64 * MB
sc = Scratch()
c = Cluster(sc, "compat", ["n1", "n2", "n3"], "n1", size=VOLUME)
rng = random.Random(7)


def start_all(n2_off):
    c.start("n1")
    c.start("n2", env={"RESYNC_FEATURES_OFF": str(n2_off)} if n2_off else None)
    c.start("n3")


def diverge(n, count):
    """Scattered single pages of n's image changed while its daemon is
    stopped (as an image restored from elsewhere): the set of pages."""
    pages = set(rng.randrange(VOLUME // PAGE) for _ in range(count))
    with open(c.image(n), "r+b") as f:
        for p in pages:
            f.seek(p * PAGE)
            f.write(os.urandom(PAGE))
    return pages


def frames(n):
    """(BLOCKS, EXTENTS) frames of n's last committed resync, from its log."""
    m = re.findall(r"committed: UpToDate \((\d+) BLOCKS and (\d+) EXTENTS", c.log(n))
    check(m, "%s logged its commit" % n)
    return int(m[-1][0]), int(m[-1][1])


def round_(n2_off, what):
    for n in c.names:
        c.stop(n)
    changed = {n: diverge(n, 40) for n in ("n2", "n3")}
    start_all(n2_off)
    rc, plan, summary, err = resync_json(c)
    check(rc == 0 and summary, "%s: resync exits 0 (%d): %s" % (what, rc, err))
    nodes = {x["name"]: x for x in summary["nodes"]}
    check(plan, "%s: the plan came first" % what)
    for x in plan["nodes"]:
        if x["name"] in nodes:
            for k in ("differing_bytes", "differing_blocks"):
                nodes[x["name"]][k] = x[k]
    for n in ("n2", "n3"):
        check(nodes[n]["result"] == "resynced", "%s: %s resynced: %s" % (what, n, nodes[n]))
    check(verify(c)[0] == 0, "%s: verify exits 0" % what)
    for n in ("n2", "n3"):
        with open(c.image("n1"), "rb") as a, open(c.image(n), "rb") as b:
            check(a.read() == b.read(), "%s: %s byte-identical to the primary" % (what, n))
    blocks = {n: len(set(p * PAGE // BLOCK for p in changed[n])) for n in changed}
    return nodes, changed, blocks


# Data on the primary, then a first resync of the blank secondaries.
start_all(0)
for i in range(8):
    c.write("n1", rng.randrange(VOLUME - MB), os.urandom(MB // 2))
resync_ok(c, "blank secondaries")

# ---- n2 of an older build: no PAGE_REQ, no EXTENTS, no page leaves ----
nodes, changed, blocks = round_(PAGES | EXTENTS | FINE | REHELLO, "mixed")
check(nodes["n2"].get("plan_connection") is False and nodes["n3"].get("plan_connection") is True,
      "mixed: the plan's connection kept for n3 only: %s" % nodes)
for n in ("n2", "n3"):
    check(nodes[n]["differing_bytes"] == blocks[n] * BLOCK,
          "mixed: %s compared over block leaves (%d bytes differ, %d blocks)" %
          (n, nodes[n]["differing_bytes"], blocks[n]))
check(nodes["n2"]["bytes_written"] == blocks["n2"] * BLOCK,
      "mixed: n2 without PAGE_REQ gets whole blocks: %s" % nodes["n2"])
check(nodes["n3"]["bytes_written"] == len(changed["n3"]) * PAGE,
      "mixed: n3 gets only the differing pages: %s" % nodes["n3"])
b2, e2 = frames("n2")
b3, e3 = frames("n3")
check(b2 > 0 and e2 == 0, "mixed: n2 got BLOCKS frames only (%d, %d)" % (b2, e2))
check(e3 > 0 and b3 == 0, "mixed: n3 got EXTENTS frames only (%d, %d)" % (b3, e3))

# ---- n2 with PAGE_REQ but neither EXTENTS nor page leaves ----
nodes, changed, blocks = round_(EXTENTS | FINE, "pages over BLOCKS")
check(nodes["n2"]["bytes_written"] == len(changed["n2"]) * PAGE,
      "n2 gets the differing pages: %s" % nodes["n2"])
b2, e2 = frames("n2")
check(b2 > 0 and e2 == 0, "n2 got BLOCKS frames only (%d, %d)" % (b2, e2))

# ---- every node current: page leaves ----
nodes, changed, blocks = round_(0, "page leaves")
for n in ("n2", "n3"):
    check(nodes[n]["differing_bytes"] == len(changed[n]) * PAGE,
          "page leaves: %s's compare finds the pages themselves (%d bytes, %d pages)" %
          (n, nodes[n]["differing_bytes"], len(changed[n])))
    check(nodes[n]["differing_blocks"] == blocks[n],
          "page leaves: differing_blocks still counts %d KiB blocks (%d, want %d)" %
          (BLOCK // 1024, nodes[n]["differing_blocks"], blocks[n]))
    check(nodes[n]["bytes_written"] == len(changed[n]) * PAGE, "page leaves: %s wrote its pages" % n)
    b, e = frames(n)
    check(e > 0 and b == 0, "page leaves: %s got EXTENTS frames (%d, %d)" % (n, b, e))

# ---- n2 without the early hash request, which the primary remembers ----
def early_refusals():
    return (c.log("n1").count("'n2' no longer offers what it did"),
            c.log("n2").count("unexpected HASH_REQ_IF"))


before = early_refusals()
nodes, changed, blocks = round_(HASH_IF, "no HASH_REQ_IF")
after = early_refusals()
check(after[0] == before[0] + 1 and after[1] == before[1] + 1,
      "n2 refused the early request once and the primary connected again: %s -> %s" %
      (before, after))
check("unexpected HASH_REQ_IF" not in c.log("n3"), "n3 reads it")
nodes, changed, blocks = round_(HASH_IF, "no HASH_REQ_IF, remembered")
check(early_refusals() == after, "the primary remembers n2's features: none sent again")

# ---- forwarded requests travel over the peer protocol ----
# n2's daemon reads a config in which the primary's control socket is a
# path that does not exist here, as for a primary on another machine.
far = sc.path("far.conf")
with open(c.conf) as f:
    text = f.read()
with open(far, "w") as f:
    f.write(text.replace(c.control("n1"), "/nonexistent/n1.sock"))
c.stop("n2")
c.conf, near = far, c.conf
c.start("n2")
c.conf = near
c.write("n1", 5 * MB, os.urandom(MB))
r = c.ctl("--node", "n2", "verify", "--json")
check(r.returncode == 1, "verify through n2 sees the drift (%d): %s %s" %
      (r.returncode, r.stdout, r.stderr))
r = c.ctl("--node", "n2", "resync", "--yes", "--json")
lines = [json.loads(x) for x in r.stdout.splitlines()]
check(r.returncode == 0 and lines and lines[-1].get("type") == "summary",
      "resync through n2 runs on the primary (%d): %s %s" % (r.returncode, r.stdout, r.stderr))
check(any(x.get("type") == "progress" for x in lines),
      "the forwarded resync relays the primary's lines: %s" % lines)
check(all(x.get("plan_connection") is True for x in lines[-1]["nodes"]),
      "the forwarded resync took its forwarded plan's connections: %s" % lines[-1])
check("'n2' forwarded a 'resync' request" in c.log("n1"), "the primary ran it for n2")
r = c.ctl("--node", "n2", "verify", "--json")
check(r.returncode == 0, "verify through n2 exits 0 after: %s %s" % (r.stdout, r.stderr))
# A primary of an older build does not take forwarded requests: said plainly.
c.stop("n1")
c.start("n1", env={"RESYNC_FEATURES_OFF": str(CONTROL)})
r = c.ctl("--node", "n2", "verify", "--json")
check(r.returncode == 2 and "does not take forwarded requests" in r.stderr,
      "an older primary: a clear error (%d): %s" % (r.returncode, r.stderr))

for n in c.names:
    c.stop(n)
print("ok: older peers resync over the older frames; page leaves find the pages")
