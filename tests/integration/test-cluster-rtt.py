#!/usr/bin/env python3
"""Round trips paid in sequence (issue 18): the primary reaches both
secondaries through the project's relay, 25 ms each way (50 ms round
trip), with the proof on. A full resync of scattered pages (metadata
removed: a full compare over the hash tree) must cost each secondary's
job at most MAX_ROUND_TRIPS waits for an answer, as the daemon counts
them (round_trips in the summary), whatever the volume's size: a later
change that adds one per block, per tree level or per checkpoint shows
here. n3 is an older peer without PROOF_COMMIT and HASH_MORE
(RESYNC_FEATURES_OFF): it still resyncs byte-identical, over PROOF_REQ
and COMMIT, one round trip more than n2, and its plans in the hellos'
flight start a level higher (one request), a round trip more than n2's. Then a resync with nothing to do (both up to date, quick).
The plan that `resyncctl resync` runs first is bounded too
(MAX_PLAN_ROUND_TRIPS): its walk starts at the level the 50 ms round trip
makes worth fetching whole, and once the primary knows the peers'
features it asks for that level in the flight of its hello
(MAX_PLAN_EARLY_ROUND_TRIPS, the plans driven on the control socket).

`resyncctl resync` runs its plan first: the primary keeps the plan's
connections and walks for the resync that presents the plan's token
(plan-keep.c), so the resync pays no connect, no TLS handshake and no
walk below the first level (plan_connection, plan_walk in the summary).
Then, driven on the control socket: a plan, a write through n2's mount,
the resync with the plan's token: n2's changed tree is walked again
(plan_walk false) and its write is caught (byte-identical at the end),
n3's is taken from the plan. The write lands on pages the plan found
equal, while the plan's differing pages went behind the hellos
(bytes_early, job-early.c) before the resync knew of the write. Then a
secondary that refuses its HELLO again (a failpoint) and cannot be
reached anew (the relay drops new connections): not resynced, and not a
byte of its image changed although the primary's pages followed the
hello; and one cut off entirely at the resync (its connection reset,
new ones dropped): the same. Then a resync whose token is not the kept
plan's: the plan is let go, the connections are made again, and the
round trips are more than with the plan kept. Last, a slow link to n2
(16 MiB/s, a relay that holds 256 KiB): the plan's pages behind its
hellos stop when the answers come, the rest goes in pass 1."""
import os
import random
import re
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cluster_lib import MB, Cluster, check, resync_json, resync_ok, verify  # noqa: E402
from relay_lib import UP, Relay, Shape  # noqa: E402
from resyncfs_lib import Scratch  # noqa: E402

T0 = time.monotonic()
ONE_WAY = 0.025
# 272 MiB of page leaves: 69,632 leaves, more than one request's 65,536
# hashes, so the first level (the leaves whole, sized by the 50 ms round
# trip) takes two requests, both in the hellos' flight (HASH_REQ_IF and
# HASH_REQ_MORE: job-walk.c). Random bytes in two spans of 24 MiB, one
# across the two requests' boundary (256 MiB), zeros elsewhere (sparse:
# the images cost what 48 MiB did); the pages changed lie in the spans.
VOLUME = 272 * MB
SPANS = [(0, 24 * MB), (248 * MB, 24 * MB)]
PAGE = 4096
SPAN_PAGES = [p for o, ln in SPANS for p in range(o // PAGE, (o + ln) // PAGE)]
PROOF_COMMIT = 1 << 10
# With the plan's connection and walk (resyncctl's plan, then its
# resync): the hellos and status again, with the tree's first level (the
# prefetch, equal to the plan's) and the plan's differing pages behind
# them in the same flight (1: job-early.c), the proof and the commit (1):
# 2 measured, and room for 1 wait the timing may add. The CHECKPOINT that
# ends those pages is not waited for at the end of the first pass: the
# first level's reply, asked for in the hellos' flight, bounds the link's
# rate from below (job_settle_wait(); before, with no rate known, its ACK
# was a round trip of its own). n3, without PROOF_COMMIT, pays its COMMIT
# apart: one more.
# Without them (a stale token, below): the TCP and TLS handshakes (2), the
# first level's own wait (1) and the leaves' level below it (1) more.
MAX_ROUND_TRIPS = 3
# The plan's own: the first contact of a started primary pays TCP, TLS,
# the hellos with the status, and the tree's level sized by the round
# trip (at 272 MiB and 50 ms: the leaves whole, in two requests, no
# level above them): 4 measured, and 1 for the timing. Once the primary
# knows each peer's features (a run before, remembered in its state
# file), the level is asked for in the hellos' flight (HASH_REQ_IF, then
# HASH_REQ_MORE): 3 measured, and no room: a first level that went back
# to one request (level 1 at this size, and level 0 below it) is 4, as
# it is for n3, which lacks HASH_MORE (one more allowed for it).
MAX_PLAN_ROUND_TRIPS = 5
MAX_PLAN_EARLY_ROUND_TRIPS = 3
CHANGED = 300  # pages changed on each secondary
# The slow link's step: pages changed on n2 alone, and its link's rate.
SLOW_PAGES = 4096
SLOW_RATE = 16 << 20
QUICK_MAX_ROUND_TRIPS = 7
rng = random.Random(18)
sc = Scratch()
c = Cluster(sc, "rtt", ["n1", "n2", "n3"], "n1", size=VOLUME)
with open(c.conf) as f:
    conf = f.read()
with open(c.conf, "w") as f:
    f.write(conf.replace("[cluster]\n", "[cluster]\nproof = true\n", 1))
with open(c.conf) as f:
    conf = f.read()
addr = {n: next(x.split("=")[1].strip() for x in conf.split("[node %s]" % n)[1].splitlines()
                if x.startswith("address")) for n in ("n2", "n3")}
relays = {n: Relay(("127.0.0.1", int(addr[n].rsplit(":", 1)[1])), up=Shape(ONE_WAY),
                   down=Shape(ONE_WAY)) for n in ("n2", "n3")}
via = sc.path("rtt-via.conf")
with open(via, "w") as f:
    text = conf
    for n, r in relays.items():
        text = text.replace("address = " + addr[n], "address = " + r.address)
    f.write(text)
own = c.conf
HASH_MORE = 1 << 19
OLD = {"RESYNC_FEATURES_OFF": str(PROOF_COMMIT | HASH_MORE)}


def start_all():
    c.conf = via
    c.start("n1")
    c.conf = own
    c.start("n2")
    c.start("n3", env=OLD)
    c.conf = via


def stop_all():
    for n in c.names:
        c.stop(n)


def ask(line, timeout=120, lines=None):
    """One request on n1's control socket: its result (JSON)."""
    return c.ask("n1", line, timeout, lines)


def diverge():
    """Scattered pages changed on each secondary, its daemon stopped (a
    full compare at the next resync): the pages changed on either."""
    changed = set()
    for n in ("n2", "n3"):
        with open(c.image(n), "r+b") as f:
            for p in rng.sample(SPAN_PAGES, CHANGED):
                f.seek(p * PAGE)
                f.write(os.urandom(PAGE))
                changed.add(p)
    return changed


def image_bytes(n):
    with open(c.image(n), "rb") as f:
        return f.read()


def cut_off(n, refuse):
    """After the plan: n's HELLO again refused (refuse: its daemon runs
    the failpoint) or its kept connection reset; new connections to it
    dropped either way. The resync must fail for n and leave its image
    as it was, n3 resynced."""
    before = image_bytes(n)
    log0 = len(c.log("n1"))
    lines = []
    plan = ask({"cmd": "verify", "plan": True, "no_ranges": True}, lines=lines)
    check(plan.get("ok") is True and plan.get("plan_token"), "the plan: %s" % plan)
    check(not any(x.get("type") == "plan_kept" for x in lines),
          "no plan_kept line unless asked (token_first): %s" % lines)
    relays[n].partitioned = True  # new connections dropped; the kept one lives
    if not refuse:
        relays[n].reset_all()
    res = ask({"cmd": "resync", "confirm": "rtt", "plan_token": plan["plan_token"]})
    nodes = {x["name"]: x for x in res["nodes"]}
    check(nodes[n]["result"] != "resynced", "%s not resynced: %s" % (n, nodes[n]))
    check(nodes["n3"]["result"] == "resynced", "n3 resynced: %s" % nodes["n3"])
    log = c.log("n1")[log0:]
    if refuse:
        sent = re.findall(r"resync of '%s': (\d+) bytes of the plan's differing pages sent "
                          r"behind its hellos" % n, log)
        check(sent and int(sent[0]) > 0,
              "n1 sent %s's pages behind its hellos before the refusal: %s" % (n, log))
        check("error from HELLO" in c.log(n),
              "%s failed its HELLO again: %s" % (n, c.log(n)[-2000:]))
    relays[n].partitioned = False
    stop_all()
    check(image_bytes(n) == before, "not a byte of %s changed (%s)" %
          (n, "refused" if refuse else "unreachable"))


def plan_then_resync(token_of, between=None):
    """A plan, then (after between()) a resync presenting token_of(the
    plan's token): each secondary's part of the resync's result."""
    lines = []
    plan = ask({"cmd": "verify", "plan": True, "no_ranges": True, "token_first": True},
               lines=lines)
    check(plan.get("ok") is True, "the plan: %s" % plan)
    # Its token in a line of its own before the result (resyncctl resync
    # --yes sends the resync on it).
    kept = [x for x in lines if x.get("type") == "plan_kept"]
    check(len(kept) == 1 and kept[0].get("plan_token") == plan.get("plan_token"),
          "the plan's token came first, in one plan_kept line: %s" % kept)
    for x in plan["nodes"]:
        # The primary knows the peers' features now: the first level
        # goes with the hellos.
        most = MAX_PLAN_EARLY_ROUND_TRIPS + (x["name"] == "n3")
        check(x.get("round_trips", 99) <= most,
              "%s: the plan paid %s round trips in sequence, at most %d" %
              (x["name"], x.get("round_trips"), most))
        early_plans.append(x.get("round_trips"))
    check(isinstance(plan.get("plan_token"), str) and plan["plan_token"],
          "the plan's result carries a token: %s" % plan)
    check(all(x["mode"] == "full" for x in plan["nodes"]), "a full compare: %s" % plan)
    if between:
        between()
    res = ask({"cmd": "resync", "confirm": "rtt", "plan_token": token_of(plan["plan_token"])})
    check(res.get("ok") is True, "the resync: %s" % res)
    nodes = {x["name"]: x for x in res["nodes"]}
    for n in ("n2", "n3"):
        check(nodes[n]["result"] == "resynced" and nodes[n]["state"] == "UpToDate",
              "%s resynced: %s" % (n, nodes[n]))
        check(nodes[n].get("proof", {}).get("match") is True, "%s: proof matched" % n)
    return nodes


early_plans = []


def same(n):
    with open(c.image("n1"), "rb") as a, open(c.image(n), "rb") as b:
        return a.read() == b.read()


try:
    data = [os.urandom(ln) for o, ln in SPANS]
    for n in c.names:
        with open(c.image(n), "r+b") as f:
            for (o, ln), d in zip(SPANS, data):
                f.seek(o)
                f.write(d)
    # Scattered pages changed on each secondary, and its metadata gone
    # (an image restored from elsewhere): a full compare.
    for n in ("n2", "n3"):
        with open(c.image(n), "r+b") as f:
            for p in rng.sample(SPAN_PAGES, CHANGED):
                f.seek(p * PAGE)
                f.write(os.urandom(PAGE))
    start_all()
    t = time.monotonic()
    rc, plan, summary, err = resync_json(c)
    full_s = time.monotonic() - t
    check(rc == 0 and plan and summary, "full resync over 50 ms (%d): %s" % (rc, err))
    nodes = {x["name"]: x for x in summary["nodes"]}
    prt = {x["name"]: x.get("round_trips") for x in plan["nodes"]}
    for n in ("n2", "n3"):
        check(nodes[n]["result"] == "resynced", "%s resynced: %s" % (n, nodes[n]))
        check(isinstance(prt[n], int) and 0 < prt[n] <= MAX_PLAN_ROUND_TRIPS,
              "%s: the plan paid %s round trips in sequence, at most %d" %
              (n, prt[n], MAX_PLAN_ROUND_TRIPS))
    # The first level: the leaves whole, more than one request holds.
    log = c.log("n1")
    for n in ("n2", "n3"):
        check("the walk of '%s' starts at level 0 (%d hashes)" % (n, VOLUME // PAGE) in log,
              "%s: the walk starts at the leaves, %d of them: %s" %
              (n, VOLUME // PAGE, re.findall(r"the walk of .*", log)))
    rt = {n: nodes[n].get("round_trips") for n in ("n2", "n3")}
    ex = {n: nodes[n].get("exchanges") for n in ("n2", "n3")}
    check(all(isinstance(v, int) and v > 0 for v in rt.values()),
          "the summary counts round trips: %s" % nodes)
    check(all(isinstance(v, int) and v >= rt[n] - 2 for n, v in ex.items()),
          "the summary counts exchanges (%s) at least as the waits (%s)" % (ex, rt))
    for n in ("n2", "n3"):
        most = MAX_ROUND_TRIPS + (n == "n3")
        check(rt[n] <= most, "%s: %d round trips in sequence, at most %d" % (n, rt[n], most))
        check(nodes[n].get("proof", {}).get("match") is True,
              "%s: the proof matched: %s" % (n, nodes[n].get("proof")))
    # Its hellos, PROOF_REQ and COMMIT cannot overlap.
    check(rt["n3"] >= 3,
          "the older peer n3 paid the separate commit (%s)" % rt)
    for n in ("n2", "n3"):
        check(nodes[n].get("plan_connection") is True and nodes[n].get("plan_walk") is True,
              "%s: the resync took the plan's connection and walk: %s" % (n, nodes[n]))
    # Every byte the relays carried: the secondaries were reached there.
    check(all(r.conns > 0 for r in relays.values()), "both went through the relays")
    check(verify(c)[0] == 0, "verify exits 0 after the full resync")
    stop_all()
    for n in ("n2", "n3"):
        check(same(n), "%s byte-identical to the primary" % n)

    # Nothing to do: the quick way, still few waits.
    start_all()
    nodes = resync_ok(c, "resync with nothing to do")
    for n in ("n2", "n3"):
        check(nodes[n].get("round_trips", 99) <= QUICK_MAX_ROUND_TRIPS,
              "%s: %s round trips when up to date, at most %d" %
              (n, nodes[n].get("round_trips"), QUICK_MAX_ROUND_TRIPS))
    stop_all()

    # A write on n2 between the plan and the resync: its tree is walked
    # again, the write is caught; n3's walk is the plan's.
    changed = diverge()
    start_all()
    # Pages the plan finds equal on n2 (changed on neither secondary).
    written = rng.sample(sorted(set(SPAN_PAGES) - changed), 3)

    def write_n2():
        for p in written:
            c.write("n2", p * PAGE, os.urandom(PAGE))
    kept = plan_then_resync(lambda t: t, write_n2)
    check(kept["n2"]["plan_connection"] is True and kept["n2"]["plan_walk"] is False,
          "n2, written since the plan, was compared again: %s" % kept["n2"])
    check(kept["n3"]["plan_connection"] is True and kept["n3"]["plan_walk"] is True,
          "n3 took the plan's walk: %s" % kept["n3"])
    for p in written:
        check(any(o <= p * PAGE < o + ln for o, ln in kept["n2"]["ranges"]),
              "n2's page %d, written after the plan, was found differing" % p)
    for n in ("n2", "n3"):
        check(kept[n].get("bytes_early", 0) >= CHANGED * PAGE // 2,
              "%s: the plan's differing pages went behind the hellos: %s" % (n, kept[n]))
    stop_all()
    for n in ("n2", "n3"):
        check(same(n), "%s byte-identical to the primary after a write between plan and "
              "resync" % n)

    # n2 refuses its HELLO again, then cannot be reached anew; then cut
    # off entirely: nothing written either time. Healed at the end.
    diverge()
    c.conf = via
    c.start("n1")
    c.conf = own
    c.start("n2", env={"RESYNC_FAILPOINT": "secondary-rehello:error:1"})
    c.start("n3", env=OLD)
    c.conf = via
    cut_off("n2", True)
    diverge()
    start_all()
    cut_off("n2", False)
    start_all()
    resync_ok(c, "the resync after the cuts")
    stop_all()
    for n in ("n2", "n3"):
        check(same(n), "%s byte-identical after the cuts healed" % n)

    # A token that is not the kept plan's: let go, connected again.
    diverge()
    start_all()
    stale = plan_then_resync(lambda t: "0" + t[1:] if t[0] != "0" else "1" + t[1:])
    for n in ("n2", "n3"):
        check(stale[n]["plan_connection"] is False and stale[n]["plan_walk"] is False,
              "%s: nothing of a plan taken with a stale token: %s" % (n, stale[n]))
    # n3 without HASH_MORE: a HASH_REQ_IF of one request, a level higher.
    check("the walk of 'n3' starts at level 1 (%d hashes)" % (VOLUME // PAGE // 16)
          in c.log("n1"), "n3's plans in the hellos' flight start at level 1: %s" %
          re.findall(r"the walk of 'n3'.*", c.log("n1")))
    check(stale["n2"]["round_trips"] > rt["n2"],
          "a resync without the plan kept pays more round trips (%d) than with it (%d)" %
          (stale["n2"]["round_trips"], rt["n2"]))
    stop_all()
    for n in ("n2", "n3"):
        check(same(n), "%s byte-identical after the stale token's resync" % n)

    # A slow link to n2 (16 MiB/s, a relay that holds 256 KiB): the
    # plan's 16 MiB of n2's pages cannot all go behind the hellos before
    # their answers come; they stop there (job_early_cut()), and the rest
    # goes in pass 1. n3's link stays fast.
    diverge()  # n3's few pages: a full compare for both
    big = rng.sample(SPAN_PAGES, SLOW_PAGES)
    with open(c.image("n2"), "r+b") as f:
        for p in big:
            f.seek(p * PAGE)
            f.write(os.urandom(PAGE))
    relays["n2"].set_shape(UP, Shape(ONE_WAY, rate=SLOW_RATE))
    relays["n2"].line_bytes = 256 << 10
    start_all()
    slow = plan_then_resync(lambda t: t)
    early = slow["n2"].get("bytes_early", 0)
    check(0 < early < SLOW_PAGES * PAGE * 3 // 4,
          "n2's early pages stopped at the hellos' answers: %d of %d bytes: %s" %
          (early, SLOW_PAGES * PAGE, slow["n2"]))
    check(slow["n2"].get("bytes_written", 0) >= SLOW_PAGES * PAGE,
          "n2's other pages went in pass 1: %s" % slow["n2"])
    check(slow["n3"].get("plan_walk") is True, "n3 took the plan's walk: %s" % slow["n3"])
    stop_all()
    relays["n2"].set_shape(UP, Shape(ONE_WAY))
    for n in ("n2", "n3"):
        check(same(n), "%s byte-identical after the slow link's resync" % n)
finally:
    c.kill_and_unmount()
    for r in relays.values():
        r.stop()
print("rtt (50 ms): full resync %.2f s, round trips n2 %d n3 %d (limit %d), exchanges %s; "
      "without the plan kept n2 %d n3 %d; plans: first %s (limit %d), later %s (limit %d)" %
      (full_s, rt["n2"], rt["n3"], MAX_ROUND_TRIPS, ex, stale["n2"]["round_trips"],
       stale["n3"]["round_trips"], prt, MAX_PLAN_ROUND_TRIPS, early_plans,
       MAX_PLAN_EARLY_ROUND_TRIPS))
print("slow link to n2: %d of %d bytes behind the hellos" % (early, SLOW_PAGES * PAGE))
print("ok: round trips in sequence bounded over a 50 ms relay in %.1f s" %
      (time.monotonic() - T0))
