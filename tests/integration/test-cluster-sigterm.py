#!/usr/bin/env python3
"""SIGTERM in the middle of a resync, at 10 random points (RESYNC_SIGTERM_ROUNDS:
the sanitizer build's suite takes 5), to the primary
or a secondary chosen at random (the seed is printed; RESYNC_SEED sets
it): the daemon exits cleanly within 5 s (every thread woken and joined,
nothing freed under one), its log has no sanitizer report, it restarts,
and the next resync ends with every secondary byte-identical."""
import os
import random
import re
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cluster_lib import (MB, RESYNCCTL, Cluster, check, fail,  # noqa: E402
                         resync_ok)
from resyncfs_lib import Scratch, wait_for  # noqa: E402

ROUNDS = int(os.environ.get("RESYNC_SIGTERM_ROUNDS") or 10)
SIZE = 64 * MB
DATA = 24 * MB       # new data on the primary each round
RATE = "8M"          # so that the interrupted resync lasts a while (about 3 s)
STOP_BOUND = 5.0
SANITIZER = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:",
             "ERROR: ThreadSanitizer")

seed = int(os.environ.get("RESYNC_SEED") or random.randrange(1 << 32))
print("seed %d (RESYNC_SEED=%d repeats this run)" % (seed, seed), flush=True)
rnd = random.Random(seed)

sc = Scratch()
c = Cluster(sc, "term", ["p", "s1", "s2"], "p", size=SIZE)
for n in c.names:
    c.start(n)


def threads_where(pid):
    """Each thread of a process that did not stop: its name, state, the
    kernel function it sleeps in and its kernel stack (root reads it), so
    that a hang seen once says where it was."""
    out = []
    try:
        tids = sorted(os.listdir("/proc/%d/task" % pid), key=int)
    except OSError as e:
        return "  (cannot list the threads: %s)" % e
    for tid in tids:
        base = "/proc/%d/task/%s/" % (pid, tid)
        info = []
        for f in ("comm", "wchan", "stack"):
            try:
                with open(base + f) as fh:
                    info.append(fh.read().strip())
            except OSError as e:
                info.append("(%s: %s)" % (f, e.strerror))
        try:
            with open(base + "stat") as fh:
                state = fh.read().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            state = "?"
        out.append("  %s %s %s in %s\n    %s" % (tid, info[0], state, info[1],
                                               info[2].replace("\n", "\n    ")))
    return "\n".join(out)


def drift():
    """DATA bytes of new data on the primary, in 1 MiB pieces scattered
    over the volume."""
    slots = rnd.sample(range(SIZE // MB), DATA // MB)
    fd = os.open(c.file("p"), os.O_WRONLY)
    try:
        for s in slots:
            check(os.pwrite(fd, os.urandom(MB), s * MB) == MB, "write through p's mount")
        os.fsync(fd)
    finally:
        os.close(fd)


def sanitizer_free_of(cl, n, since):
    text = cl.log(n)[since:]
    for s in SANITIZER:
        if s in text:
            fail("%s's log has a sanitizer report (%s):\n%s" % (n, s, text))


def sanitizer_free(n, since):
    sanitizer_free_of(c, n, since)


def sigterm(cl, victim, what):
    """SIGTERM to cl's resyncd victim: (exit code, seconds to exit); fails
    with where its threads waited when it is not gone within STOP_BOUND
    (what: the failure's words after the node's name)."""
    p = cl.procs.pop(victim)
    t0 = time.monotonic()
    p.send_signal(signal.SIGTERM)
    try:
        rc = p.wait(timeout=STOP_BOUND)
    except subprocess.TimeoutExpired:
        where = threads_where(p.pid)
        p.kill()
        p.wait()
        fail("resyncd %s did not exit within %.0f s of SIGTERM %s\nwhere its threads "
             "waited:\n%s" % (victim, STOP_BOUND, what, where))
    return rc, time.monotonic() - t0


def log_size_of(cl, n):
    try:
        return len(cl.log(n))
    except FileNotFoundError:
        return 0


def log_size(n):
    return log_size_of(c, n)


drift()
resync_ok(c, "the first resync")
start = time.monotonic()
stops = []
for rnd_i in range(ROUNDS):
    drift()
    victim = rnd.choice(c.names)
    delay = rnd.uniform(0.0, 2.5)
    since = log_size(victim)
    run = subprocess.Popen([RESYNCCTL, "--config", c.conf, "resync", "--yes", "--json",
                            "--max-rate", RATE],
                           stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
    # A random point of the resync: a random delay after its start (the
    # plan, the hashing, the transfer or the commit).
    time.sleep(delay)
    running = run.poll() is None
    rc, took = sigterm(c, victim, "(round %d, %.2f s into the resync):\n%s" %
                       (rnd_i, delay, c.log(victim)[since:]))
    stops.append(took)
    print("round %d: SIGTERM to %s %.2f s into the resync (%s): exit %d in %.3f s" %
          (rnd_i, victim, delay, "running" if running else "already ended", rc, took),
          flush=True)
    check(rc == 0, "round %d: resyncd %s stopped cleanly (exit %d):\n%s" %
          (rnd_i, victim, rc, c.log(victim)[since:]))
    sanitizer_free(victim, since)
    if victim != "p" and run.poll() is None:
        # The rest of the interrupted resync (the other secondary's) at
        # full speed: what follows the stop is not what this test times.
        # (It may have ended meanwhile: then rate has nothing to change.)
        c.ctl("rate", "0", "--json")
    try:
        run.wait(timeout=60)
    except subprocess.TimeoutExpired:
        run.kill()
        fail("round %d: the interrupted resync did not end; the primary's log:\n%s\n"
             "its threads:\n%s" % (rnd_i, c.log("p")[-4000:],
                                    threads_where(c.procs["p"].pid) if "p" in c.procs else "-"))
    c.start(victim)
    resync_ok(c, "round %d: the resync after %s restarted" % (rnd_i, victim))
    for s in ("s1", "s2"):
        check(c.same_through_mounts("p", s), "round %d: %s identical to p" % (rnd_i, s))

for n in c.names:
    c.stop(n)
    sanitizer_free(n, 0)
for s in ("s1", "s2"):
    with open(c.image("p"), "rb") as a, open(c.image(s), "rb") as b:
        if a.read() != b.read():
            fail("the images of p and %s differ at the end" % s)

# ---- SIGTERM while a large volume is hashed ----
# 16 GiB of holes take 10-26 s to hash here (the page cache fills with
# zeros): a node that stops cuts its hash short at the next 8 MiB unit,
# the secondary's for the primary's HASH_REQ and the primary's own, rather
# than holding its stop (and its exit) until the hash ends.
big = Cluster(sc, "big", ["p", "s"], "p", size=16 << 30)
trace = {"RESYNC_TRACE_PHASES": "1"}
try:
    for victim, mark, whole in (
            ("s", "secondary tree: hashing", "secondary tree: hashed (0)"),
            ("p", "primary run: secondaries opened", "primary run: this volume's tree ready")):
        for n in big.names:
            big.start(n, env=trace)
        since = log_size_of(big, victim)
        run = subprocess.Popen([RESYNCCTL, "--config", big.conf, "resync", "--yes", "--json"],
                               stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
        wait_for(lambda: mark in big.log(victim)[since:], timeout=60,
                 what="%s at '%s'" % (victim, mark))
        rc, took = sigterm(big, victim, "while 16 GiB hash:\n%s" % big.log(victim)[since:][-3000:])
        print("16 GiB: SIGTERM to %s while hashing: exit %d in %.3f s" % (victim, rc, took),
              flush=True)
        check(rc == 0, "16 GiB: resyncd %s stopped cleanly (exit %d)" % (victim, rc))
        check(whole not in big.log(victim)[since:],
              "16 GiB: %s's hash was cut short, not finished: %s" %
              (victim, big.log(victim)[since:][-2000:]))
        sanitizer_free_of(big, victim, since)
        # The other node, still hashing its own volume, stops as quickly.
        for n in list(big.procs):
            big.stop(n)
        run.wait(timeout=60)

    # ---- every secondary gone while the primary hashes ----
    # The primary's own hash stops at the next unit once every secondary
    # it hashes for has ended its connection (here: SIGKILLed), rather
    # than hash the rest of 16 GiB for no one: the run fails at once, and
    # says why.
    for n in big.names:
        big.start(n, env=trace)
    since = log_size_of(big, "p")
    run = subprocess.Popen([RESYNCCTL, "--config", big.conf, "resync", "--yes", "--json"],
                           stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True)
    wait_for(lambda: "primary run: secondaries opened" in big.log("p")[since:], timeout=60,
             what="p hashing its volume")
    big.kill9("s")
    t0 = time.monotonic()
    try:
        out, err = run.communicate(timeout=STOP_BOUND)
    except subprocess.TimeoutExpired:
        run.kill()
        run.wait()
        fail("16 GiB: resyncctl did not end within %.0f s of the only secondary's SIGKILL "
             "while p hashed its volume:\n%s" % (STOP_BOUND, big.log("p")[since:][-3000:]))
    took = time.monotonic() - t0
    plog = big.log("p")[since:]
    m = re.search(r"every secondary ended its connection: this volume's hash stopped at "
                  r"(\d+) of (\d+) bytes", plog)
    print("16 GiB: the only secondary SIGKILLed while p hashed: resyncctl ended in %.3f s "
          "(exit %d)%s" % (took, run.returncode,
                           ", p's hash stopped at %s of %s bytes" % m.groups() if m else ""),
          flush=True)
    check(m and int(m.group(1)) < int(m.group(2)),
          "16 GiB: p's hash stopped short once its secondary was gone:\n%s" % plog[-3000:])
    check(run.returncode != 0, "16 GiB: the resync without its secondary fails (exit %d)" %
          run.returncode)
    check("its connection ended while this node hashed its volume" in out,
          "16 GiB: the plan says the secondary's connection ended while p hashed:\n%s\n%s" %
          (out, err))
    sanitizer_free_of(big, "p", since)
    big.stop("p")
finally:
    big.kill_and_unmount()

print("ok: %d rounds and the 16 GiB stops in %.1f s; slowest stop of a round %.3f s" %
      (ROUNDS, time.monotonic() - start, max(stops)))
