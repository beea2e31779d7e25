#!/usr/bin/env python3
"""Corrupted streams are rejected before anything is written wrongly. A
relay between the primary and secondary s corrupts one stream per resync:
a bit flip at a random offset of either direction, or a truncation (a
close or a reset) part-way; with TLS (the default) the record layer
refuses any flip. A share runs on an insecure = true cluster (plaintext):
there the flips are aimed at the header of a chosen frame of each type
(magic, version, type, length, flags), so that the frame decoders are
what refuses them. After each: the resync exits non-zero and fails s,
and s is Inconsistent or unchanged, never UpToDate with data differing
from the primary's; changed and Outdated only when s committed the whole
resync while the primary failed it (its commit's answer lost or late: a
loaded machine and session_timeout = 3s), then holding exactly the
primary's data. Prints corrupted streams rejected: N/N.

Plaintext payload flips (the bytes of a BLOCKS or EXTENTS run, a hash in
a reply) have no check but TLS's: insecure = true is for tests and
benchmarks only, and those flips are not aimed at here. A flip that hits
a connection the resync did not need (a status query's) counts as
rejected when a daemon drops that connection. RESYNC_LONG=1: 3x as many."""
import os
import random
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cluster_lib import MB, Cluster, check, fail, resync_json  # noqa: E402
from relay_lib import DOWN, UP, Fault, Relay  # noqa: E402
from resyncfs_lib import Scratch, wait_for  # noqa: E402

LONG = os.environ.get("RESYNC_LONG") == "1"
T0 = time.monotonic()
SIZE = 16 * MB
rng = random.Random(int(os.environ.get("RESYNC_SEED", "13")))
sc = Scratch()

# Frame types by direction (daemon/wire.h) and the header bytes to flip.
WIRE = {"HELLO": 1, "HELLO_ACK": 2, "HASH_REQ": 4, "HASH_REPLY": 5, "BLOCKS": 6,
        "ACK": 7, "CHECKPOINT": 8, "COMMIT": 9, "STATUS_REQ": 11, "STATUS": 12,
        "PAGE_REQ": 15, "PAGE_REPLY": 16, "EXTENTS": 17, "PROOF_COMMIT": 27}
HEADER = [("magic", 0, 0x01), ("magic", 3, 0x80), ("version", 4, 0x02), ("type", 7, 0x40),
          ("length", 11, 0x80), ("flags", 12, 0x10), ("flags", 15, 0x80)]


def setup(tag, insecure):
    c = Cluster(sc, tag, ["p", "s"], "p", size=SIZE)
    with open(c.conf) as f:
        conf = f.read()
    extra = "session_timeout = 3s\n" + ("insecure = true\n" if insecure else "")
    conf = conf.replace("block_size = 64K\n", "block_size = 64K\n" + extra)
    with open(c.conf, "w") as f:
        f.write(conf)
    s_addr = next(x.split("=")[1].strip() for x in conf.split("[node s]")[1].splitlines()
                  if x.startswith("address"))
    host, port = s_addr.rsplit(":", 1)
    relay = Relay((host, int(port)))
    own = c.conf
    c.conf = sc.path(tag + "-via.conf")
    with open(c.conf, "w") as f:
        f.write(conf.replace("address = " + s_addr, "address = " + relay.address))
    c.start("p")
    c.conf = own
    c.start("s")
    c.conf = sc.path(tag + "-via.conf")
    return c, relay


# The images are read into buffers kept for the whole run (three reads of
# 16 MiB each resync: fresh bytes objects cost more than the resync).
BUF = {k: bytearray(SIZE) for k in ("before", "s", "p")}


def image(c, n, into):
    """n's image read into BUF[into]; returns that buffer."""
    buf = BUF[into]
    with open(c.image(n), "rb", buffering=0) as f:
        got = f.readinto(buf)
        check(got == SIZE and f.read(1) == b"", "%s's image is %d bytes (%d)" % (n, SIZE, got))
    return buf


def state_of_s(c, label, fault):
    """s's state as the primary reports it. Unknown (the status query of s
    timed out: session_timeout is 3 s here, and a loaded machine can miss
    it) claims nothing either way: asked again until s answers."""
    last = {}

    def known():
        last.update(c.status()["s"])
        return last["state"] != "Unknown"
    wait_for(known, timeout=60, what=lambda: "%s: s's state known (%s): %s" % (label, fault, last))
    return last["state"]


class Run:
    def __init__(self):
        self.fired = self.rejected = 0
        self.by_kind = {}
        self.unfired = 0
        self.failed = 0
        self.committed_unheard = 0
        self.state = None  # s's state after the last resync (None: ask)

    def one(self, c, relay, fault, label):
        """One resync of s with fault armed: (fired, rejected)."""
        # s's state as the last resync left it (nothing touches s since).
        if (self.state or state_of_s(c, label, "before the fault")) == "UpToDate":
            # Something to send: 4 MiB of new data at a random place.
            off = rng.randrange(0, SIZE // MB - 4) * MB
            c.write("p", off, os.urandom(4 * MB))
        before = image(c, "s", "before")
        relay.arm(fault)
        rc, plan, summary, err = resync_json(c, "--node", "s")
        relay.disarm()
        st = self.state = state_of_s(c, label, fault)
        if st == "UpToDate":
            check(image(c, "s", "s") == image(c, "p", "p"),
                  "%s: s UpToDate with data differing from the primary's (%s)" % (label, fault))
        elif st not in ("Inconsistent",) and image(c, "s", "s") != before:
            # Changed, yet not Inconsistent: only a whole resync that s
            # committed while the primary failed it (the answer to its
            # commit lost, or later than session_timeout: the primary
            # keeps its generation, so s's new one is unknown to it and it
            # says Outdated). Then s holds the primary's data, all of it.
            same = image(c, "p", "p") == BUF["s"]
            check(same, "%s: s %s but changed, and not into the primary's data (%s): exit %d, "
                  "%s %s" % (label, st, fault, rc, summary, err))
            self.committed_unheard += 1
            print("%s: s committed a resync that the primary failed (%s): s %s, exit %d, %s"
                  % (label, fault, st, rc, err.strip()[-300:]), flush=True)
        if not fault.fired:
            self.unfired += 1
            return
        self.fired += 1
        res = {x["name"]: x for x in summary["nodes"]} if summary else {}
        failed = rc != 0 and res.get("s", {}).get("result") == "failed"
        if fault.kind in ("flip", "flip_frame"):
            # Rejected: a daemon dropped the connection that carried it
            # (the resync may have used another one, or reconnected).
            wait_for(lambda: fault.closed is not None, timeout=5,
                     what="the connection of %s %s to end" % (label, fault))
            ok = fault.closed is not None
        else:
            ok = True  # closed by the relay; the state checks above decide
        self.failed += failed
        if ok:
            self.rejected += 1
        else:
            print("NOT REJECTED %s: rc %d, state %s, %s" % (label, rc, st, fault))
        k = self.by_kind.setdefault(label, [0, 0])
        k[0] += ok
        k[1] += 1


run = Run()

# ---- TLS: flips at random offsets of either direction, truncations ----
c, relay = setup("tls", insecure=False)
try:
    c.write("p", 0, os.urandom(8 * MB))
    n_up, n_down, n_cut = (300, 60, 60) if LONG else (120, 30, 30)
    for i in range(n_up):
        run.one(c, relay, Fault("flip", UP, at=rng.randrange(0, 3 * MB),
                                mask=1 << rng.randrange(8)), "tls flip p->s")
    for i in range(n_down):
        run.one(c, relay, Fault("flip", DOWN, at=rng.randrange(0, 2048),
                                mask=1 << rng.randrange(8)), "tls flip s->p")
    for i in range(n_cut):
        kind = "cut" if i % 2 else "reset"
        run.one(c, relay, Fault(kind, rng.choice([UP, DOWN]) if i % 3 else UP,
                                at=rng.randrange(1, MB)), "tls " + kind)
    st = c.status()["s"]["state"]
    relay.disarm()
    rc, plan, summary, err = resync_json(c, "--node", "s")
    check(rc == 0 and image(c, "s", "s") == image(c, "p", "p"),
          "after the corruptions a clean resync makes s identical (%d): %s %s" %
          (rc, err, summary))
finally:
    c.kill_and_unmount()
    relay.stop()

# ---- plaintext: flips in the header of chosen frames ----
c, relay = setup("plain", insecure=True)
run.state = None  # another cluster
try:
    c.write("p", 0, os.urandom(8 * MB))
    # (The commit of this build's peers is PROOF_COMMIT; COMMIT's flips
    # never fired.)
    targets = [(UP, "HASH_REQ"), (UP, "EXTENTS"), (UP, "PROOF_COMMIT"), (UP, "STATUS_REQ"),
               (DOWN, "HASH_REPLY"), (DOWN, "STATUS"), (DOWN, "ACK")]
    reps = 3 if LONG else 1
    for d, t in targets:
        for name, pos, mask in HEADER:
            for r in range(reps):
                run.one(c, relay, Fault("flip_frame", d, ftype=WIRE[t], nth=1, pos=pos,
                                        mask=mask), "plain %s %s" % (t, name))
    # Payload fields the decoders check: EXTENTS' count, lengths and
    # encoding; the hash reply's count.
    for pos, what in ((16, "n_extents"), (23, "raw_len"), (27, "enc_len"), (28, "encoding")):
        run.one(c, relay, Fault("flip_frame", UP, ftype=WIRE["EXTENTS"], nth=1, pos=pos,
                                mask=0x80 if pos != 28 else 0x04), "plain EXTENTS " + what)
    relay.disarm()
    rc, plan, summary, err = resync_json(c, "--node", "s")
    check(rc == 0 and image(c, "s", "s") == image(c, "p", "p"),
          "after the plaintext corruptions a clean resync makes s identical (%d): %s %s" %
          (rc, err, summary))
finally:
    c.kill_and_unmount()
    relay.stop()

# ---- the one change that is not Inconsistent: a commit the primary did not hear ----
# s commits, then fails before its ACK (what a lost or late answer does):
# the primary fails s and keeps its own generation; status says Outdated
# (s's generation is none it knows), and s holds the primary's data.
c = Cluster(sc, "unheard", ["p", "s"], "p", size=SIZE)
try:
    c.start("p")
    c.start("s", env={"RESYNC_FAILPOINT": "secondary-commit-before-ack:error:1"})
    c.write("p", 0, os.urandom(4 * MB))
    before = bytes(image(c, "s", "before"))
    rc, plan, summary, err = resync_json(c, "--node", "s")
    check(rc != 0 and not summary["primary_committed"],
          "unheard commit: the primary failed s and kept its generation (%d): %s" % (rc, summary))
    st = state_of_s(c, "unheard commit", "secondary-commit-before-ack")
    check(st == "Outdated" and image(c, "s", "s") != before and
          image(c, "s", "s") == image(c, "p", "p"),
          "unheard commit: s Outdated (%s), holding the primary's data" % st)
    # The primary's summary says what s says: it asked again (or s said so
    # itself), never the Inconsistent that bytes sent would suggest.
    said = {x["name"]: x for x in summary["nodes"]}["s"]
    check(said.get("state") == "Outdated",
          "unheard commit: the summary says s is Outdated, as s does: %s" % said)
    # s dies after its commit, before its ACK: the primary cannot ask it
    # again, and says Unknown (committed or not), with why.
    c.write("p", 8 * MB, os.urandom(MB))
    c.stop("s")
    c.start("s", env={"RESYNC_FAILPOINT": "secondary-commit-before-ack:kill:1"})
    rc, plan, summary, err = resync_json(c, "--node", "s")
    said = {x["name"]: x for x in summary["nodes"]}["s"]
    check(rc != 0 and said.get("state") == "Unknown" and
          "could not be asked again" in said.get("error", ""),
          "unheard commit, s killed: the summary says Unknown and why (%d): %s" % (rc, said))
    p = c.procs.pop("s")
    p.wait(timeout=30)
    c.start("s")
    st = state_of_s(c, "unheard commit, s killed", "secondary-commit-before-ack:kill")
    check(st == "Outdated" and image(c, "s", "s") == image(c, "p", "p"),
          "unheard commit, s killed: s Outdated (%s) after its restart, holding the "
          "primary's data" % st)
finally:
    c.kill_and_unmount()

for k, (ok, n) in sorted(run.by_kind.items()):
    print("  %-32s %d/%d" % (k, ok, n))
print("corrupted streams rejected: %d/%d (%d failed the resync in progress, the others "
      "a connection it did not need; %d armed faults fell past the end of their stream and "
      "are not counted; %d resyncs committed on s that the primary failed) in %.1f s" %
      (run.rejected, run.fired, run.failed, run.unfired, run.committed_unheard,
       time.monotonic() - T0))
if run.rejected != run.fired:
    fail("%d corrupted streams were not rejected" % (run.fired - run.rejected))
check(run.fired >= 200, "at least 200 corrupted streams (%d)" % run.fired)
