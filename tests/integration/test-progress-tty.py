#!/usr/bin/env python3
"""`resyncctl resync` on a terminal: run in a pseudo-terminal (script(1)),
its live progress block is redrawn in place (cursor up, line cleared) rather
than scrolled, and the run ends with the summary after the last redraw.
Without a terminal the same progress comes as plain lines."""
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cluster_lib import MB, RESYNCCTL, Cluster, check, verify  # noqa: E402
from resyncfs_lib import Scratch  # noqa: E402

sc = Scratch()
c = Cluster(sc, "tty", ["p", "s1", "s2"], "p", size=32 * MB)
for n in c.names:
    c.start(n)
for i in range(6):
    c.write("p", i * 4 * MB, os.urandom(4 * MB))

# 24 MiB per secondary at 8 MiB/s: three seconds of progress, a report a second.
cmd = "%s --config %s resync --yes --max-rate 8M" % (RESYNCCTL, c.conf)
r = subprocess.run(["script", "-qefc", cmd, "/dev/null"], stdin=subprocess.DEVNULL,
                   capture_output=True, timeout=120)
out = r.stdout.decode(errors="replace")
check(r.returncode == 0, "resync in a pty exits 0 (%d): %r" % (r.returncode, out[-500:]))

redraws = out.count("\x1b[2K")
ups = out.count("\x1b[2A")
check(redraws >= 4, "the progress lines are redrawn in place (%d clears): %r" % (redraws, out[-800:]))
check(ups >= 1, "the cursor moves back up over the two-line block (%d times)" % ups)
last_redraw = out.rfind("\x1b[2K")
summary = out.find("s1: resynced (UpToDate)")
check(summary > last_redraw, "the summary comes after the last redraw")
check(out.find("s2: resynced (UpToDate)") > last_redraw, "both secondaries in the summary")
check(verify(c)[0] == 0, "verify exits 0 after the resync")

# No terminal: plain lines, no escape sequences.
for i in range(2):
    c.write("p", i * 4 * MB, os.urandom(4 * MB))
r = subprocess.run([RESYNCCTL, "--config", c.conf, "resync", "--yes", "--max-rate", "3M"],
                   stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120)
check(r.returncode == 0, "resync without a terminal exits 0: %s" % r.stderr)
check("\x1b[" not in r.stderr + r.stdout, "no escape sequences without a terminal")
check(r.stderr.count("transfer") >= 1, "plain progress lines: %r" % r.stderr[-300:])
print("ok")
