#!/usr/bin/env python3
"""The undo journal and rollback (issue 11).
(a) undo = diverged (the default) journals what a resync overwrites on a
Diverged secondary and not on an Outdated one; the plan says which;
status shows the window held; rollback puts the Diverged node back byte
for byte and drops its journal.
(b) kill -9 of a secondary during a resync --undo, restart, rollback:
restored byte for byte.
(c) kill -9 of a secondary during its rollback (test failpoint), restart:
the start finishes the rollback; restored, not UpToDate."""
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cluster_lib import MB, RESYNCCTL, Cluster, check, resync_json, wait_for  # noqa: E402
from resyncfs_lib import Scratch  # noqa: E402

SIZE = 32 * MB


def content(c, n):
    with open(c.file(n), "rb") as f:
        return f.read()


def journal(c, n):
    return c.image(n) + ".resync-undo"


def rollback(c, n, via=None):
    args = (["--node", via] if via else []) + ["rollback", n, "--yes", "--json"]
    return c.ctl(*args)


sc = Scratch()
c = Cluster(sc, "undo", ["p", "s", "d"], "p", size=SIZE)
with open(c.conf) as f:
    conf = f.read()
with open(c.conf, "w") as f:  # the default 10 % is refused below 3.2 MiB
    f.write(conf.replace("[cluster]\n", "[cluster]\nundo_max_bytes = 100%\n", 1))
for n in c.names:
    c.start(n)
c.write("p", 0, os.urandom(8 * MB))
rc, plan, summary, err = resync_json(c)
check(rc == 0, "first resync: %s" % err)
for n in ("s", "d"):
    check(not os.path.exists(journal(c, n)), "no journal on %s (not Diverged)" % n)

# ---- (a) d Diverged, s Outdated: only d's overwrites are journaled ----
c.write("d", 1 * MB, os.urandom(3 * MB))
c.write("p", 2 * MB, os.urandom(4 * MB))
c.write("p", 20 * MB, os.urandom(MB))
d_before, s_before = content(c, "d"), content(c, "s")
rc, plan, summary, err = resync_json(c)
check(rc == 0, "resync of a Diverged node: %s %s" % (err, summary))
pl = {x["name"]: x for x in plan["nodes"]}
check(pl["d"]["undo"] is True and pl["s"]["undo"] is False,
      "the plan says undo applies to d only: %s" % pl)
check(pl["d"]["undo_bytes"] == pl["d"]["differing_bytes"] and pl["d"]["undo_max_bytes"] == SIZE
      and pl["d"]["undo_may_exceed"] is False and "undo_bytes" not in pl["s"],
      "the plan says what d's journal must hold and its limit: %s" % pl["d"])
check(os.path.exists(journal(c, "d")) and not os.path.exists(journal(c, "s")),
      "a journal for d, none for s")
check(content(c, "d") == content(c, "p"), "d resynced")
st = c.status()
u = st["d"].get("undo")
check(u and u["bytes"] > 256 and u["saved_bytes"] >= 4 * MB and u["until"] and
      u["restores_state"] == "Diverged", "status shows d's undo window: %s" % st["d"])
check(st["s"].get("undo") is None, "no window for s: %s" % st["s"])
txt = c.ctl("status").stdout
check("d: undo window: " in txt and "restores Diverged" in txt and "resyncctl rollback d" in txt
      and "s: undo window" not in txt, "the text status names d's undo window: %s" % txt)
r = c.ctl("rollback", "d")
check(r.returncode != 0 and content(c, "d") == content(c, "p"),
      "rollback without --yes and no terminal refused, nothing changed: %s" % r.stderr)
r = rollback(c, "d")
check(r.returncode == 0, "rollback d: %s %s" % (r.stdout, r.stderr))
check(content(c, "d") == d_before, "d byte for byte as before the resync")
check(not os.path.exists(journal(c, "d")), "d's journal dropped")
st = c.status()
check(st["d"]["state"] == "Diverged" and st["d"].get("undo") is None,
      "d Diverged again, no window: %s" % st["d"])
check(content(c, "s") != s_before, "s (Outdated) was resynced, no journal: unchanged by rollback")

# ---- (b) kill -9 of d during a resync --undo, restart, rollback ----
c.write("p", 0, os.urandom(24 * MB))
d_before = content(c, "d")
p = subprocess.Popen([RESYNCCTL, "--config", c.conf, "resync", "--yes", "--json", "--undo",
                      "--max-rate", "8M"], stdin=subprocess.DEVNULL,
                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
wait_for(lambda: os.path.exists(journal(c, "d")) and
         os.path.getsize(journal(c, "d")) > 2 * MB, timeout=30,
         what="d's journal growing during the resync")
c.kill9("d")
p.communicate(timeout=60)
c.start("d")
check(c.status()["d"]["state"] == "Inconsistent", "d Inconsistent after the kill")
r = rollback(c, "d")
check(r.returncode == 0, "rollback after kill -9: %s %s" % (r.stdout, r.stderr))
check(content(c, "d") == d_before, "d restored byte for byte after kill -9 + restart")
check(c.status()["d"]["state"] == "Diverged", "d Diverged after the rollback")

# ---- (c) kill -9 during the rollback, restart ----
dry = c.ctl("resync", "--dry-run", "--undo")
check(dry.returncode == 0 and "d                undo: journaled" in dry.stdout and
      "s                undo: journaled" in dry.stdout and "WARNING" not in dry.stdout,
      "the text plan says, with --undo, that both are journaled: %s" % dry.stdout)
rc, plan, summary, err = resync_json(c, "--undo")
check(rc == 0, "resync --undo: %s" % err)
check(all(x["undo"] for x in plan["nodes"]), "with --undo the plan says undo everywhere: %s"
      % plan["nodes"])
check(content(c, "d") == content(c, "p"), "d resynced")
c.stop("d")
c.start("d", env={"RESYNC_TEST_ROLLBACK_KILL_AFTER": "3"})
r = rollback(c, "d")
check(r.returncode != 0, "the rollback's daemon died part-way")
c.procs["d"].wait(timeout=30)
check(c.procs["d"].returncode == -9, "d killed by the failpoint")
c.procs.pop("d")
c.start("d")
check("finishing it before serving" in c.log("d"), "the start finished the rollback")
check(content(c, "d") == d_before, "d restored byte for byte after a kill -9 mid-rollback")
st = c.status()
check(st["d"]["state"] == "Diverged" and st["d"].get("undo") is None,
      "d Diverged (not UpToDate), journal gone: %s" % st["d"])
print(json.dumps({"ok": True}))
c.kill_and_unmount()
sc.cleanup()
