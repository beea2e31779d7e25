#!/usr/bin/env python3
"""The crash matrix (issue 13, item 1): for every named failpoint of a
resync (resync/failpoint.h) and every role it applies to, a three-node
cluster (p primary; s1, s2 secondaries; 4 MiB volumes) runs a resync
with the failpoint set to kill on one daemon: the primary's (role
primary), a secondary's (role secondary), or that one and then the
other side too (role both: p and s1). The killed daemons restart; then:

  - no node is reported UpToDate while its data differs from the
    primary's (status after the restart, read through every mount);
  - the primary's data is what it was before the resync;
  - a second resync completes and every secondary is byte-identical.

Prints 'crash matrix: N/N' per role. RESYNC_CRASHMATRIX=sample runs a
third of the cases (every third, a fixed choice: the suite's run, whole
with RESYNC_LONG=1);
RESYNC_CRASHMATRIX=NAME[,NAME] only those failpoints (errors: only the
error cases). Then a few places
set to the action error (failpoints.ERRORS): the resync fails with the
reason, the daemon lives, and the next resync completes: prints
'error failpoints: N/N'."""
import hashlib
import json
import os
import random
import signal
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cluster_lib import MB, Cluster, check, fail, resync_json  # noqa: E402
from failpoints import ERRORS, PRIMARY, SECONDARY, spec  # noqa: E402
from failpoints import role as role_of  # noqa: E402
from resyncfs_lib import Scratch  # noqa: E402

SIZE = 4 * MB
BLOCK = 64 << 10


def crashmatrix_selection():
    """RESYNC_CRASHMATRIX, but the whole matrix with RESYNC_LONG=1."""
    sel = os.environ.get("RESYNC_CRASHMATRIX", "")
    return "" if sel == "sample" and os.environ.get("RESYNC_LONG") == "1" else sel

def cases():
    out = []
    for fp, mode in PRIMARY:
        out += [("primary", fp, mode), ("both", fp, mode)]
    for fp, mode in SECONDARY:
        out += [("secondary", fp, mode), ("both", fp, mode)]
    sel = crashmatrix_selection()
    if sel == "sample":
        out = out[::3]
    elif sel == "errors":
        out = []
    elif sel:
        names = set(sel.split(","))
        out = [c for c in out if c[1] in names]
    return out


def digest(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(1 << 20)
            if not b:
                return h.hexdigest()
            h.update(b)


class Matrix:
    def __init__(self):
        self.sc = Scratch()
        self.c = Cluster(self.sc, "cm", ["p", "s1", "s2"], "p", size=SIZE)
        with open(self.c.conf) as f:
            conf = f.read()
        with open(self.c.conf, "w") as f:
            # A journal of a whole volume: every resync here may keep one.
            f.write(conf.replace("[cluster]\n", "[cluster]\nundo_max_bytes = 8M\nproof = true\n", 1))
        self.rng = random.Random(13)
        for n in self.c.names:
            self.c.start(n)
        for i in range(0, SIZE, MB):
            self.c.write("p", i, self.rng.randbytes(MB))
        self.resync_clean("setup")
        # The primary's image changed offline: its bitmap untrusted, one
        # full resync, after which the secondaries are UpToDate (status)
        # and the next resync is quick again.
        self.c.stop("p")
        self.offline_edit("p", 3)
        self.c.start("p")
        self.resync_clean("after an offline edit of the primary")
        self.scatter("p", 2)
        rc, plan, summary, err = resync_json(self.c)
        check(rc == 0 and all(n["mode"] == "quick" for n in summary["nodes"]),
              "the resync after that is quick: %s %s" % (summary, err))
        self.identical("quick after the offline edit", summary)

    def resync_clean(self, what, *args):
        rc, plan, summary, err = resync_json(self.c, *args)
        check(rc == 0, "%s: the resync exits 0 (%d): %s %s" % (what, rc, summary, err))
        self.identical(what, summary)

    def identical(self, what, summary=None):
        want = digest(self.c.file("p"))
        for s in ("s1", "s2"):
            check(digest(self.c.file(s)) == want, "%s: %s byte-identical to p" % (what, s))
        st = self.c.status()
        for s in ("s1", "s2"):
            check(st[s]["state"] == "UpToDate", "%s: %s UpToDate: %s (after %s)" % (what, s, st[s], summary))

    def scatter(self, n, count):
        """count random blocks of n written through its mount."""
        for _ in range(count):
            off = self.rng.randrange(SIZE // BLOCK) * BLOCK + self.rng.randrange(BLOCK - 4096)
            self.c.write(n, off, self.rng.randbytes(4096))

    def offline_edit(self, n, count):
        """count random blocks of n's image changed while n is stopped."""
        with open(self.c.image(n), "r+b") as f:
            for _ in range(count):
                f.seek(self.rng.randrange(SIZE // BLOCK) * BLOCK)
                f.write(self.rng.randbytes(BLOCK))

    def diverge(self, target, env, mode):
        """Restart target with env; make the secondaries differ. A full
        compare comes from an image edited while its daemon was stopped
        (s1 for the secondary's failpoints, s2 for the primary's): its
        bitmap is not trusted. The primary's own image is never edited
        offline (its bitmap would stay untrusted: see the report)."""
        c = self.c
        edited = "s1" if target == "s1" else "s2"
        c.stop(target)
        if mode == "full":
            if edited != target:
                c.stop(edited)
            self.offline_edit(edited, 24)
            if edited != target:
                c.start(edited)
        c.start(target, env=env)
        # After a full compare's offline edit, the primary is written
        # only half the time: with its bitmap clean, nothing but the
        # secondary's own state tells that it lacks data.
        if mode == "quick" or self.rng.random() < 0.5:
            self.scatter("p", 4)
        # Half the time a secondary holds writes of its own (Diverged),
        # half the time only lacks the primary's (Outdated).
        for s in ("s1", "s2"):
            if self.rng.random() < 0.5:
                self.scatter(s, 3)
        if mode == "quick":
            # More than one transfer batch for every secondary.
            for i in range(0, SIZE, 2 * BLOCK):
                if self.rng.random() < 0.25:
                    c.write("p", i, self.rng.randbytes(BLOCK))

    def wait_dead(self, n, what):
        p = self.c.procs[n]
        try:
            p.wait(timeout=30)
        except Exception:
            fail("%s: the failpoint never killed %s: %s" % (what, n, self.c.log(n)[-2000:]))
        check(p.returncode == -signal.SIGKILL,
              "%s: %s died of SIGKILL (%s)" % (what, n, p.returncode))
        self.c.procs.pop(n)

    def run(self, role, fp, mode):
        c = self.c
        what = "%s@%s" % (fp, role)
        target = "p" if role_of(fp) == "p" else "s1"
        other = "s1" if target == "p" else "p"
        env = {"RESYNC_FAILPOINT": spec(fp)}
        if mode == "rollback":
            self.scatter("s1", 3)
            c.stop(target)
            c.start(target, env=env)
            self.resync_clean(what + " (resync --undo)", "--undo")
            before = digest(c.file("p"))
            r = c.ctl("rollback", "s1", "--yes")
            check(r.returncode != 0, "%s: the rollback reports the kill: %s" % (what, r.stdout))
        else:
            self.diverge(target, env, mode)
            before = digest(c.file("p"))
            rc, plan, summary, err = resync_json(c, "--undo")
            if rc == 0 and summary:
                # A kill after the commit (acked, or reported): the
                # resync may have completed; it must say the truth.
                pass
        self.wait_dead(target, what)
        killed = [target]
        if role == "both":
            c.kill9(other)
            killed.append(other)
        for n in killed:
            c.start(n)
        check(digest(c.file("p")) == before, "%s: the primary's data unchanged" % what)
        st = c.status()
        if os.environ.get("CM_DEBUG"):
            print(what, {s: (st[s]["state"], digest(c.file(s)) == before) for s in ("s1", "s2")})
        for s in ("s1", "s2"):
            if st[s]["state"] == "UpToDate":
                check(digest(c.file(s)) == before,
                      "%s: %s reported UpToDate with data that differs" % (what, s))
        self.resync_clean(what + " (second resync)")
        check(digest(c.file("p")) == before, "%s: the primary's data unchanged" % what)


def run_error(m, fp, mode):
    """fp set to error on its daemon: the resync fails with the reason,
    the daemon lives, nothing claims more than its data; without it the
    next resync completes."""
    c = m.c
    what = "%s:error" % fp
    target = "p" if role_of(fp) == "p" else "s1"
    m.diverge(target, {"RESYNC_FAILPOINT": spec(fp, "error")}, mode)
    before = digest(c.file("p"))
    rc, plan, summary, err = resync_json(c, "--undo")
    check(rc != 0, "%s: the resync fails (%d): %s" % (what, rc, summary))
    check("Input/output error" in json.dumps(summary) + err,
          "%s: the failure says why: %s %s" % (what, summary, err))
    check(c.procs[target].poll() is None, "%s: %s still runs" % (what, target))
    check("failpoint %s: error" % fp in c.log(target), "%s: the failpoint struck" % what)
    check(digest(c.file("p")) == before, "%s: the primary's data unchanged" % what)
    st = c.status()
    for s in ("s1", "s2"):
        if st[s]["state"] == "UpToDate":
            check(digest(c.file(s)) == before, "%s: %s UpToDate with data that differs" % (what, s))
    c.stop(target)
    c.start(target)
    m.resync_clean(what + " (second resync)")


def main():
    t0 = time.monotonic()
    m = Matrix()
    passed, total = {}, {}
    for role, fp, mode in cases():
        total[role] = total.get(role, 0) + 1
        t = time.monotonic()
        m.run(role, fp, mode)
        passed[role] = passed.get(role, 0) + 1
        print("ok %-48s %-9s %-8s %.1f s" % (fp, role, mode, time.monotonic() - t), flush=True)
    errors = 0
    sel = crashmatrix_selection()
    todo = ERRORS[::3] if sel == "sample" else ERRORS if sel in ("", "errors") else []
    for fp, mode in todo:
        t = time.monotonic()
        run_error(m, fp, mode)
        errors += 1
        print("ok %-48s %-9s %-8s %.1f s" % (fp, "error", mode, time.monotonic() - t), flush=True)
    for role in ("primary", "secondary", "both"):
        if role in total:
            print("crash matrix: %d/%d (%s)" % (passed[role], total[role], role))
    if todo:
        print("error failpoints: %d/%d" % (errors, len(todo)))
    print("%.1f s" % (time.monotonic() - t0))
    m.c.kill_and_unmount()


main()
