#!/usr/bin/env python3
"""A three-node cluster on loopback with real resyncd daemons, TLS-PSK and
FUSE mounts: data written on the primary through its mount; secondaries
made to drift (blank; stopped while the primary writes; stray writes of
their own; restored from an old copy; blank again) and `resyncctl resync
--yes` makes every secondary image byte-identical to the primary's, after
which `resyncctl verify` exits 0. Refusals change nothing and say why: no
terminal without --yes, a one-node cluster, a cluster without a primary."""
import filecmp
import json
import os
import random
import shutil
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cluster_lib import (MB, RESYNCCTL, RESYNCD, Cluster, check,  # noqa: E402
                         resync_ok, verify, wait_for)
from resyncfs_lib import Scratch  # noqa: E402

sc = Scratch()
VOLUME = 512 * MB  # the size; sparse images
c = Cluster(sc, "demo", ["n1", "n2", "n3"], "n1", size=VOLUME)
for n in c.names:
    c.start(n)
for n in c.names:
    check(oct(os.stat(c.control(n)).st_mode & 0o777) == "0o600", "control socket is 0600")

# ---- status ----
r = c.ctl("status", "--json")
check(r.returncode == 0, "status exits 0: " + r.stderr)
st = json.loads(r.stdout)
check(st["cluster"] == "demo" and st["primary"] == "n1", "status: cluster and primary")
check([n["name"] for n in st["nodes"]] == ["n1", "n2", "n3"], "status: every node")
for n in st["nodes"]:
    for k in ("name", "role", "state", "generation", "dirty_bytes", "connected", "last_resync"):
        check(k in n, "status: %s has %s" % (n["name"], k))
    check(n["connected"], "status: %s connected" % n["name"])
check(st["nodes"][0]["role"] == "primary" and st["nodes"][1]["role"] == "secondary", "roles")

# ---- data on the primary; the secondaries are blank ----
for i in range(12):
    c.write("n1", (i * 5 + 1) * MB + i * 4096, os.urandom(MB // 2 + i * 777))
rc, out, err = verify(c)
check(rc == 1, "verify exits 1 while secondaries differ (%d): %s" % (rc, err))
check(all(n["differing_bytes"] > 0 and n["ranges"] for n in out["nodes"]), "verify ranges")

# ---- refusal: no terminal and no --yes changes nothing ----
before = open(c.image("n2"), "rb").read()
r = c.ctl("resync")
check(r.returncode != 0 and "--yes" in r.stderr, "no terminal without --yes refused: " + r.stderr)
check(open(c.image("n2"), "rb").read() == before, "the refused resync changed nothing")
r = c.ctl("resync", "--dry-run")
check(r.returncode == 0 and "n2" in r.stdout and "n3" in r.stdout, "dry run shows the plan")
check(verify(c)[0] == 1, "the dry run changed nothing")

# ---- a secondary forwards cluster-wide requests to the primary ----
r = c.ctl("--node", "n2", "verify", "--json")
check(r.returncode == 1 and len(json.loads(r.stdout)["nodes"]) == 2,
      "verify through a secondary: %d %s %s" % (r.returncode, r.stdout, r.stderr))
check("'n2' forwarded a 'verify' request" in c.log("n1"),
      "the secondary forwarded it over the peer protocol")

# ---- a config error names file, line and key; the daemon does not start ----
bad = sc.path("broken.conf")
with open(c.conf) as f, open(bad, "w") as g:
    g.write(f.read().replace("block_size = 64K", "block_size = 3K"))
p = subprocess.run([RESYNCD, "--config", bad, "--node", "n1"], capture_output=True, text=True,
                   timeout=30)
check(p.returncode != 0 and "broken.conf:4" in p.stderr and "block_size" in p.stderr,
      "config error names file:line:key: " + p.stderr)

# ---- blank secondaries ----
stats = resync_ok(c, "blank secondaries")
rc, out, err = verify(c)
check(rc == 0, "verify exits 0 after the resync (%d): %s %s" % (rc, out, err))
check(c.same_through_mounts("n1", "n2") and c.same_through_mounts("n1", "n3"),
      "identical through the mounts")

# ---- n2 stopped while the primary writes; n3 with stray writes ----
c.stop("n2")
shutil.copyfile(c.image("n2"), sc.path("n2-old.img"))
for i in range(5):
    c.write("n1", (i * 11 + 3) * MB + 512, os.urandom(300000))
c.write("n3", 7 * MB, os.urandom(2 * MB))
c.write("n3", 60 * MB + 4096, b"stray" * 1000)
c.start("n2")
rc, out, err = verify(c)
check(rc == 1, "verify sees both drifts")
stats = resync_ok(c, "stopped and stray")
sent = sum(n["bytes_written"] for n in stats.values())
check(sent < 8 * MB, "only differing blocks travel (%d bytes written)" % sent)


def pages(off, length):
    """Bytes of the 4 KiB pages that [off, off + length) touches."""
    return ((off + length - 1) // 4096 - off // 4096 + 1) * 4096


# Inside differing 64 KiB blocks only the differing 4 KiB pages travel.
primary_pages = sum(pages((i * 11 + 3) * MB + 512, 300000) for i in range(5))
want = {"n2": primary_pages, "n3": primary_pages + 2 * MB + pages(60 * MB + 4096, 5000)}
for n, w in want.items():
    x = stats[n]
    check(x["bytes_written"] == w, "%s: only the changed pages are written (%d, want %d)" %
          (n, x["bytes_written"], w))
    # Hash-tree and page-hash requests add a little; 512 MiB has 8192 blocks.
    check(x["bytes_sent"] <= w + 128 * 1024, "%s: bytes sent close to the changed bytes "
          "(%d sent, %d changed)" % (n, x["bytes_sent"], w))
check(stats["n3"]["bytes_written"] - stats["n2"]["bytes_written"] == 2 * MB + 8192,
      "n3's stray 5000 bytes cost two pages, not a 64 KiB block: %s" % stats)
check(verify(c)[0] == 0, "verify exits 0 after the second resync")

# ---- compressible data: fewer bytes on the wire than differ ----
# However much of it zadapt sends raw (a share below level 1, when zstd
# leaves the link idle or the link outruns it), some is always compressed.
WORDS = b"resync keeps the data volumes of a cluster identical block hash".split()
rng = random.Random(18)
TEXT = 40
t_text = time.monotonic()
pat = b"".join(b" ".join(rng.choice(WORDS) for _ in range(rng.randrange(4, 16))) + b"\n"
              for _ in range(MB // 32))
for i in range(TEXT):  # the pattern shifted: no page repeats
    c.write("n1", (i * 12 + 5) * MB, pat[i * 7:i * 7 + MB])
stats = resync_ok(c, "text-like data")
for n in ("n2", "n3"):
    x = stats[n]
    check(x["bytes_written"] == TEXT * MB and x["bytes_sent"] < x["bytes_written"],
          "%s: compressible data takes fewer bytes on the wire than differ: %s" % (n, x))
check(verify(c)[0] == 0, "verify exits 0 after the text-like data")
print("text-like: %s of %d bytes differing on the wire, %.1f s" %
      (", ".join("%s %d" % (n, stats[n]["bytes_sent"]) for n in ("n2", "n3")), TEXT * MB,
       time.monotonic() - t_text))

# ---- n2 restored from an old copy; n3 blank ----
c.write("n1", 33 * MB, os.urandom(3 * MB))
resync_ok(c, "catch up")
c.stop("n2")
shutil.copyfile(sc.path("n2-old.img"), c.image("n2"))
c.stop("n3")
os.unlink(c.image("n3"))
os.unlink(c.image("n3") + ".resync-meta")
with open(c.image("n3"), "wb") as f:
    f.truncate(VOLUME)
c.start("n2")
c.start("n3")
check(verify(c)[0] == 1, "verify sees the restored and the blank node")
resync_ok(c, "restored and blank")
check(verify(c)[0] == 0, "verify exits 0 after the third resync")
r = c.ctl("status", "--json")
st = json.loads(r.stdout)
check(all(n["state"] == "UpToDate" for n in st["nodes"]), "every node UpToDate: %s" % st)

# ---- cancel at a checkpoint: the secondary stays Inconsistent, a later resync completes ----
c.write("n1", 40 * MB, os.urandom(8 * MB))
run = subprocess.Popen([RESYNCCTL, "--config", c.conf, "resync", "--yes", "--json",
                        "--node", "n2", "--max-rate", "2M"],
                       stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True)
seen = False
for line in run.stdout:
    o = json.loads(line)
    if o.get("type") == "progress" and o.get("phase") == "transfer":
        seen = True
        break
check(seen, "progress lines while the transfer runs")
r = c.ctl("cancel", "--json")
check(r.returncode == 0 and json.loads(r.stdout)["cancelled"], "cancel: " + r.stdout + r.stderr)
rest = run.stdout.read()
check(run.wait(timeout=30) != 0, "a cancelled resync exits non-zero")
summary = json.loads(rest.splitlines()[-1])
check(summary["nodes"][0]["result"] == "cancelled", "summary says cancelled: %s" % summary)
st = {n["name"]: n for n in json.loads(c.ctl("--node", "n2", "status", "--json").stdout)["nodes"]}
check(st["n2"]["state"] == "Inconsistent", "n2 Inconsistent after cancel: %s" % st["n2"])
resync_ok(c, "after cancel")
check(verify(c)[0] == 0, "verify exits 0 after the resync that followed the cancel")

# ---- wrong key on one secondary: named, untouched; the other completes ----
c.stop("n3")
badkey = sc.path("bad.key")
with open(badkey, "wb") as f:
    f.write(os.urandom(32))
os.chmod(badkey, 0o600)
badconf = sc.path("bad.conf")
with open(c.conf) as f, open(badconf, "w") as g:
    g.write("".join(("secret_file = %s\n" % badkey) if x.startswith("secret_file") else x
                    for x in f))
conf = c.conf
c.conf = badconf
c.start("n3")
c.conf = conf
c.write("n1", 20 * MB, os.urandom(MB))
n3_before = open(c.image("n3"), "rb").read()
r = c.ctl("resync", "--yes", "--json")
check(r.returncode != 0, "a resync with a failed node exits non-zero")
summary = json.loads(r.stdout.splitlines()[-1])
res = {n["name"]: n for n in summary["nodes"]}
check(res["n2"]["result"] == "resynced", "n2 completes beside the bad node")
check(res["n3"]["result"] == "failed" and "n3" in res["n3"].get("error", "") and
      "authentication" in res["n3"]["error"].lower(),
      "the bad node is named with the authentication failure: %s" % res["n3"])
check(open(c.image("n3"), "rb").read() == n3_before, "the bad node's image is untouched")
check("key" in c.log("n3").lower(), "the bad node logs the failure too")
c.stop("n3")
c.start("n3")
resync_ok(c, "after the key is fixed")

# ---- a compare's hash trees serve the next resync only while the images are
# unchanged: writes after a verify (on a secondary and on the primary) are
# still found and sent ----
wait_for(lambda: all(time.time() - os.stat(c.image(n)).st_mtime > 0.5 for n in c.names),
         what="images unchanged for half a second (trees cacheable)")
check(verify(c)[0] == 0, "in sync before the writes that follow a verify")
c.write("n2", 50 * MB + 8192, os.urandom(4096))
c.write("n1", 51 * MB, os.urandom(4096))
stats = resync_ok(c, "writes after a verify")
check(stats["n2"]["bytes_written"] == 8192 and stats["n3"]["bytes_written"] == 4096,
      "the writes made after the verify travel: %s" % stats)
check(verify(c)[0] == 0, "verify exits 0 after the writes that followed a verify")

for n in ["n1", "n2", "n3"]:
    c.stop(n)
check(filecmp.cmp(c.image("n1"), c.image("n2"), shallow=False), "n2 image == n1 image")
check(filecmp.cmp(c.image("n1"), c.image("n3"), shallow=False), "n3 image == n1 image")

# ---- refusals: one node, no primary ----
one = Cluster(sc, "solo", ["s1"], "s1", size=4 * MB)
one.start("s1")
r = one.ctl("resync", "--yes")
check(r.returncode != 0 and "one node" in r.stderr, "one-node cluster refused: " + r.stderr)
one.stop("s1")

np = Cluster(sc, "noprim", ["a", "b"], None, size=4 * MB)
np.start("a")
np.start("b")
np.write("a", 0, b"x" * 4096)
before = open(np.image("b"), "rb").read()
r = np.ctl("--node", "a", "resync", "--yes")
check(r.returncode != 0 and "no primary" in r.stderr, "no primary refused: " + r.stderr)
check(open(np.image("b"), "rb").read() == before, "the refusal changed nothing")
np.stop("a")
np.stop("b")

# ---- refusal: a secondary of the wrong size; both sizes named, nothing changed ----
ws = Cluster(sc, "wsize", ["p", "s"], "p", size=4 * MB)
with open(ws.image("s"), "wb") as f:
    f.truncate(8 * MB)
ws.start("p")
ws.start("s")
ws.write("p", 0, os.urandom(MB))
before = open(ws.image("s"), "rb").read()
r = ws.ctl("resync", "--yes", "--json")
check(r.returncode != 0, "a resync with a wrong-size secondary exits non-zero")
summary = json.loads(r.stdout.splitlines()[-1])
err = summary["nodes"][0].get("error", "")
check(summary["nodes"][0]["result"] == "failed" and str(4 * MB) in err and str(8 * MB) in err,
      "the wrong-size secondary is refused with both sizes: %s" % summary)
check(open(ws.image("s"), "rb").read() == before, "the wrong-size secondary is untouched")
check(str(4 * MB) in ws.log("s") and str(8 * MB) in ws.log("s"),
      "the secondary logs both sizes too")
ws.stop("p")
ws.stop("s")

# ---- a smaller secondary that is a file: the resync grows it ----
gs = Cluster(sc, "grow", ["p", "s"], "p", size=8 * MB)
with open(gs.image("s"), "wb") as f:
    f.write(os.urandom(MB))
    f.truncate(4 * MB)
gs.start("p")
gs.start("s")
gs.write("p", 0, os.urandom(MB))
gs.write("p", 6 * MB + 4096, os.urandom(MB))  # beyond the secondary's end
for args in (("verify", "--json"), ("resync", "--dry-run")):
    r = gs.ctl(*args)
    check(os.path.getsize(gs.image("s")) == 4 * MB, "%s leaves the smaller secondary as it is" %
          args[0])
check("a resync grows it" in r.stdout, "the plan says a resync grows it: %s" % r.stdout)
stats = resync_ok(gs, "grown secondary")
check(os.path.getsize(gs.image("s")) == 8 * MB, "the secondary's image was grown to 8 MiB")
check(os.stat(gs.file("s")).st_size == 8 * MB, "its mount shows the new size at once")
check(open(gs.image("p"), "rb").read() == open(gs.image("s"), "rb").read(),
      "the grown secondary is byte-identical to the primary")
check(gs.same_through_mounts("p", "s"), "identical through the mounts, past the old end too")
check("grew '%s' from %d to %d bytes" % (gs.image("s"), 4 * MB, 8 * MB) in gs.log("s"),
      "the secondary logs the growth with both sizes")
check(verify(gs)[0] == 0, "verify exits 0 after the grow")
gs.stop("s")
gs.start("s")
check(gs.status()["s"]["state"] == "UpToDate", "the grown secondary is UpToDate after a restart")
gs.stop("p")
gs.stop("s")
print("ok")
