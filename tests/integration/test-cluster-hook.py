#!/usr/bin/env python3
"""before_resync_command (issue 11): run on the primary for each
secondary before its job writes, with the RESYNC_* environment; a
secondary whose command fails (or runs past before_resync_timeout) is
left untouched and reported, the other secondary completes. The command
that runs past its timeout is killed, not waited out: its process is
gone when the resync returns, long before it would have ended."""
import hashlib
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cluster_lib import MB, Cluster, check, wait_for  # noqa: E402
from cluster_lib import resync_json  # noqa: E402
from resyncfs_lib import Scratch  # noqa: E402

SIZE = 32 * MB
sc = Scratch()
c = Cluster(sc, "hook", ["p", "s1", "s2"], "p", size=SIZE)
log = sc.path("hook.log")
mode = sc.path("hook.mode")
with open(c.conf) as f:
    text = f.read()
pidfile = sc.path("hook.pid")
SLEEP = 60  # what the command of the timeout case would take, unkilled
# s1's command fails (exit 3) or, with the mode file saying so, sleeps
# past the timeout (its pid in pidfile: the sleep itself, by exec); every
# run is logged with its environment.
cmd = ('echo "$RESYNC_EVENT $RESYNC_CLUSTER $RESYNC_PRIMARY $RESYNC_NODE $RESYNC_MODE" >> %s; '
       'if [ "$RESYNC_NODE" = s1 ]; then if [ -e %s ]; then echo $$ > %s; exec sleep %d; fi; '
       'exit 3; fi' % (log, mode, pidfile, SLEEP))
script = sc.path("hook.sh")
with open(script, "w") as f:
    f.write(cmd + "\n")
text = text.replace("[cluster]\n", "[cluster]\nbefore_resync_command = /bin/sh %s\n"
                    "before_resync_timeout = 1s\n" % script, 1)
with open(c.conf, "w") as f:
    f.write(text)


def gone(pid):
    """Whether process pid has ended (absent, or a zombie not yet reaped by
    whoever inherited it)."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except FileNotFoundError:
        return True


def digest(n):
    h = hashlib.sha256()
    with open(c.file(n), "rb") as f:
        while True:
            b = f.read(4 * MB)
            if not b:
                return h.hexdigest()
            h.update(b)


try:
    t0 = time.monotonic()
    for n in c.names:
        c.start(n)
    c.write("p", 0, os.urandom(2 * MB))
    c.write("s1", 5 * MB, b"s1's own" * 100)
    before = digest("s1")
    for what in ("exit 3", "timeout"):
        if what == "timeout":
            open(mode, "w").close()
            c.write("p", 9 * MB, os.urandom(MB))
        t1 = time.monotonic()
        rc, plan, summary, err = resync_json(c)
        took = time.monotonic() - t1
        check(rc != 0 and summary, "%s: the resync reports a failure: %s" % (what, err))
        by = {x["name"]: x for x in summary["nodes"]}
        check(by["s1"]["result"] == "failed" and "before_resync_command" in by["s1"]["error"]
              and "not resynced" in by["s1"]["error"] and by["s1"]["bytes_written"] == 0,
              "%s: s1 reported: %s" % (what, by["s1"]))
        check(("exited with 3" if what == "exit 3" else "ran longer than 1.0 s")
              in by["s1"]["error"], "%s: the reason is said: %s" % (what, by["s1"]["error"]))
        check(by["s2"]["result"] == "resynced" and by["s2"]["state"] == "UpToDate",
              "%s: s2 completes: %s" % (what, by["s2"]))
        check(digest("s1") == before, "%s: s1's volume is untouched" % what)
        check(c.same_through_mounts("p", "s2"), "%s: s2 equals p" % what)
        if what == "timeout":
            # Killed, not waited out: the resync returned well before the
            # command's own end, and its process is gone (the kill reaches
            # it at once; a zombie left to init counts as gone).
            check(took < SLEEP / 2, "timeout: the resync did not wait out the %d s command "
                  "(%.1f s)" % (SLEEP, took))
            with open(pidfile) as f:
                pid = int(f.read())
            wait_for(lambda: gone(pid), timeout=10,
                     what="the timed-out command's process %d to be killed" % pid)
    with open(log) as f:
        lines = f.read().splitlines()
    check("before_resync hook p s2 full" in lines and "before_resync hook p s1 full" in lines,
          "the command ran per secondary with its environment: %s" % lines)
    st = c.status()
    check(st["s1"]["state"] == "Diverged", "s1 still Diverged: %s" % st["s1"])
    print("ok: before_resync_command (%.1f s)" % (time.monotonic() - t0))
finally:
    c.kill_and_unmount()
