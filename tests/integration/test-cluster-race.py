#!/usr/bin/env python3
"""The two races of a resync's early data (job-early.c), n1 primary, n2
reached through the project's relay (plaintext, so that the relay finds
the frames; no delay).

The fallback race: a plan, then its resync on the plan's kept
connection, whose data (the plan's differing pages) goes behind the
hellos. The relay lets every byte up to the CHECKPOINT that ends that
data reach n2, holds n2's answers, then resets the primary's end of the
connection and leaves n2's end open and silent (a middlebox that dropped
the flow: n2's session waits for frames until its session_timeout, the
volume held and Inconsistent). The primary falls back to a new
connection; n2's new session of the primary must end the old one rather
than meet EBUSY at its first write, and the resync completes, n2
byte-identical.

The split-brain window: n2 forked a generation of its own (promoted and
demoted, no write: Outdated, not split brain) and the primary wrote
pages. With the plan's kept connection, the relay holds the resync's
frames from its UNDO on, once n2 answered the hello and the status; then
a write lands on n2's mount: n2 is now in split brain, which the primary
was never told of. n2 must refuse at its first write (under the fence)
and apply nothing: its image is its own plus that write, not a byte of
the primary's. The same on a new connection without data behind the
hello (a resync without the plan's token): the write lands between the
STATUS and the first data frame. A resync --force n2 then runs. While
a resync runs, a rollback of n2 through the primary is refused: it
would be a second session of the primary that may rewrite n2. Last, with
etcd naming the primary, the leader key moves to n2 while the resync's
frames are held after n2's STATUS: n2, primary now, refuses n1's writes
at the first and holds not a byte of n1's; once with n1's own watch of
etcd lagging (n2's refusal stops the run), once without (n1 may cancel
its run first, after its held data: its summary must still not call n2
Inconsistent, since n2 wrote nothing)."""
import os
import random
import re
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cluster_lib import MB, Cluster, check, resync_json, wait_for  # noqa: E402
from etcd_lib import Etcd, etcd_section, leader_key  # noqa: E402
from relay_lib import DOWN, UP, Fault, Relay  # noqa: E402
from resyncfs_lib import Scratch  # noqa: E402

T0 = time.monotonic()
VOLUME = 16 * MB
PAGE = 4096
CHANGED = 200
WIRE = {"CHECKPOINT": 8, "STATUS": 12, "UNDO": 21}
rng = random.Random(23)
sc = Scratch()


def setup(tag, primary, extra=""):
    """Cluster tag (n1, n2), n2 reached through the relay by n1: c, relay,
    own (n2's config), via (n1's)."""
    global c, relay, own, via
    c = Cluster(sc, tag, ["n1", "n2"], primary, size=VOLUME)
    with open(c.conf) as f:
        conf = f.read()
    conf = conf.replace("[cluster]\n", "[cluster]\ninsecure = true\nproof = true\n", 1) + extra
    with open(c.conf, "w") as f:
        f.write(conf)
    addr = next(x.split("=")[1].strip() for x in conf.split("[node n2]")[1].splitlines()
                if x.startswith("address"))
    relay = Relay(("127.0.0.1", int(addr.rsplit(":", 1)[1])))
    own = c.conf
    via = sc.path(tag + "-via.conf")
    with open(via, "w") as f:
        f.write(conf.replace("address = " + addr, "address = " + relay.address))


setup("race", "n1")

def start_all(env1=None):
    c.conf = via
    c.start("n1", env=env1)
    c.conf = own
    c.start("n2")
    c.conf = via


def stop_all():
    for n in list(c.procs):
        c.stop(n)


def set_primary(name):
    for p in (own, via):
        with open(p) as f:
            text = f.read()
        with open(p, "w") as f:
            f.write(text.replace("primary = n1", "primary = " + name)
                    .replace("primary = n2", "primary = " + name))


def ask(line, timeout=120):
    """One request on n1's control socket: its result (JSON)."""
    return c.ask("n1", line, timeout)


def image(n):
    with open(c.image(n), "rb") as f:
        return f.read()


def plan():
    p = ask({"cmd": "verify", "plan": True, "no_ranges": True})
    check(p.get("ok") is True and p.get("plan_token"), "the plan: %s" % p)
    n2 = next(x for x in p["nodes"] if x["name"] == "n2")
    check(n2["mode"] == "full" and not n2.get("split_brain"),
          "the plan compares n2 whole, not in split brain: %s" % n2)
    return p["plan_token"]


def live_conns():
    return [x for x in relay.live if not x.closed]


def arm_kept(*faults):
    """faults on the plan's kept connection to n2 only."""
    # An earlier case's connection may not have been seen closed by the
    # relay yet (its close crosses the relay a moment after the job).
    wait_for(lambda: len(live_conns()) == 1, timeout=30,
             what=lambda: "one connection to n2 kept by the plan: %s" %
             [(x.frames[UP].counts, x.frames[DOWN].counts) for x in live_conns()])
    live = live_conns()
    live[0].add(faults)
    return live[0]


def diverge_n2():
    """The same random volume on every node, then CHANGED pages of n2's
    rewritten: a full compare finds them."""
    data = os.urandom(VOLUME)
    for n in c.names:
        with open(c.image(n), "wb") as f:
            f.write(data)
    with open(c.image("n2"), "r+b") as f:
        for p in rng.sample(range(VOLUME // PAGE), CHANGED):
            f.seek(p * PAGE)
            f.write(os.urandom(PAGE))


def n2_result(res):
    return next(x for x in res["nodes"] if x["name"] == "n2")


def fallback_race():
    diverge_n2()
    start_all()
    token = plan()
    hold, orphan = Fault("hold", DOWN), Fault("orphan", UP, ftype=WIRE["CHECKPOINT"])
    arm_kept(hold, orphan)
    log1, log2 = len(c.log("n1")), len(c.log("n2"))
    t = time.monotonic()
    res = ask({"cmd": "resync", "confirm": c.tag, "plan_token": token})
    took = time.monotonic() - t
    new1, new2 = c.log("n1")[log1:], c.log("n2")[log2:]
    # (hold fires only when n2 answered before the orphan: either way no
    # answer of n2 reached n1 on that connection)
    check(orphan.fired, "the relay orphaned the kept connection: %s %s" % (orphan, hold))
    sent = re.findall(r"resync of 'n2': (\d+) bytes of the plan's differing pages sent "
                      r"behind its hellos", new1)
    check(sent and int(sent[0]) >= CHANGED * PAGE // 2,
          "n1 sent the plan's pages behind its hellos: %s" % new1[-3000:])
    check("the plan's connection failed" in new1,
          "n1 fell back to a new connection: %s" % new1[-3000:])
    check(new2.count("is rewriting this volume") >= 1,
          "n2 applied the early data before the break: %s" % new2[-3000:])
    x = n2_result(res)
    check(res.get("ok") is True and x["result"] == "resynced" and x["state"] == "UpToDate",
          "n2 resynced after the fallback, not EBUSY: %s\nn2's log: %s" % (x, new2[-3000:]))
    check(x.get("proof", {}).get("match") is True, "n2's proof matched: %s" % x)
    check("earlier session of it ended first" in new2,
          "n2 ended its orphaned session first: %s" % new2[-3000:])
    stop_all()
    check(image("n1") == image("n2"), "n2 byte-identical to n1 after the fallback")
    return took


def fork_n2():
    """n2 promoted then demoted without a write (a generation of its own,
    Outdated: not split brain), then pages written on the primary."""
    set_primary("n2")
    c.conf = own
    c.start("n2")
    c.stop("n2")
    set_primary("n1")
    start_all()
    pages = rng.sample(range(VOLUME // PAGE), CHANGED)
    for p in pages:
        c.write("n1", p * PAGE, os.urandom(PAGE))
    return pages


def held_window(conn, what, request, during):
    """The resync's frames to n2 held from its UNDO on (conn: the kept
    connection, or None: the next one) until n2 sent its STATUS and
    during() ran: the resync's result, and n2's log meanwhile."""
    hold = Fault("hold", UP, ftype=WIRE["UNDO"])
    if conn:
        conn.add([hold])
    else:
        relay.arm(hold)
    status0 = relay.frames(DOWN, WIRE["STATUS"])
    log2 = len(c.log("n2"))
    out = {}

    def resync():
        out["res"] = ask(request)
    t = threading.Thread(target=resync)
    t.start()
    try:
        wait_for(lambda: hold.fired and relay.frames(DOWN, WIRE["STATUS"]) > status0,
                 what=lambda: "%s: n2's STATUS sent, the resync's UNDO held (%s, %d STATUS "
                 "before, %d now): %s" % (what, hold, status0, relay.frames(DOWN, WIRE["STATUS"]),
                                          c.log("n1")[-2000:]))
        during()
    finally:
        hold.release()
        t.join(120)
    check(not t.is_alive(), "%s: the resync ended" % what)
    new2 = c.log("n2")[log2:]
    check("is rewriting this volume" not in new2,
          "%s: n2 never began writing: %s" % (what, new2[-3000:]))
    return out.get("res", {}), new2


def truthful_state(x, what):
    """The primary's summary of n2 (x) says the state n2's own status
    shows: its refusal wrote nothing, so not the Inconsistent that the
    bytes sent would suggest (n2's ERROR says its state)."""
    own = c.status("n2")["n2"]
    check(x.get("state") == own["state"] and own["state"] != "Inconsistent",
          "%s: the summary's state of n2 is what n2's status shows: %s, n2 says %s\n"
          "the summary: %s\nn1's log: %s\nn2's log: %s" %
          (what, x.get("state"), own, x, c.log("n1")[-3000:], c.log("n2")[-2000:]))


def split_window(conn, pages, what, request):
    """A write on n2's page pages[0] in held_window(): n2 must refuse at
    its first write, nothing applied."""
    before = image("n2")
    mine = os.urandom(PAGE)

    def during():
        # A rollback through the primary meanwhile would be a second
        # session of it that may rewrite n2: refused while the run lasts.
        r = c.ctl("--node", "n1", "rollback", "n2", "--yes", "--json")
        check(r.returncode != 0 and "a resync or verify is running" in r.stdout + r.stderr,
              "%s: a rollback of n2 refused while the resync runs: %s %s" %
              (what, r.stdout, r.stderr))
        c.write("n2", pages[0] * PAGE, mine)
    res, new2 = held_window(conn, what, request, during)
    x = n2_result(res) if res.get("nodes") else {}
    check(x.get("result") == "failed" and "nothing written" in x.get("error", ""),
          "%s: n2 not resynced: %s" % (what, res))
    check("split brain" in new2 and "refused the writes of 'n1', nothing written" in new2,
          "%s: n2 refused at its first write, in split brain: %s" % (what, new2[-3000:]))
    truthful_state(x, what)
    after = image("n2")
    want = before[:pages[0] * PAGE] + mine + before[(pages[0] + 1) * PAGE:]
    check(after == want, "%s: n2 holds its own data and its write, nothing of n1's" % what)
    st = c.status("n1")
    check(st["n2"].get("split_brain") is True and st["n2"]["state"] == "Diverged",
          "%s: n1 sees n2 in split brain now: %s" % (what, st["n2"]))


def promoted_window(deaf=True):
    """etcd's leader key moves to n2 in held_window(), on the plan's kept
    connection: n2, primary now, must refuse n1's writes at the first.
    deaf: n1's watch lags behind its run (etcd-deaf), so that n2's defence
    is what stops the run. Not deaf: n1 may stop its run itself, at its
    own sight of the change, before or after its held frames reach n2;
    either way n2 wrote nothing, and n1's summary must not call it
    Inconsistent (a cancelled job that sent data reads n2's refusal, with
    its state, rather than guess from the bytes sent)."""
    tag = "racee" if deaf else "raced"
    e = Etcd(sc, tag="etcd" if deaf else "etcdb")
    e.put(leader_key(tag), "n1")
    setup(tag, None, etcd_section(e, tag))
    diverge_n2()
    start_all({"RESYNC_FAILPOINT": "etcd-deaf"} if deaf else None)
    wait_for(lambda: "(this node is secondary)" in c.log("n2"), what="n2 a secondary")
    token = plan()
    before = image("n2")

    def during():
        e.put(leader_key(tag), "n2")
        wait_for(lambda: "(this node is primary)" in c.log("n2"), what="n2 promoted")
    what = "promoted" if deaf else "promoted, n1 seeing it too"
    res, new2 = held_window(arm_kept(), what, {"cmd": "resync", "confirm": c.tag,
                                               "plan_token": token}, during)
    x = n2_result(res) if res.get("nodes") else {}
    if deaf:
        check("this node acts as primary now: refused the writes of 'n1', nothing written"
              in new2, "%s: n2 refused n1's writes at its first: %s\nn1's log: %s\nthe "
              "result: %s" % (what, new2[-3000:], c.log("n1")[-3000:], res))
        truthful_state(x, what)
    else:
        own_state = c.status("n2")["n2"]["state"]
        print("%s: n2 %s, state %s (its status: %s): %s" %
              (what, x.get("result"), x.get("state"), own_state, x.get("error")), flush=True)
        check(x.get("result") != "resynced" and x.get("state") != "Inconsistent" and
              own_state != "Inconsistent",
              "%s: n2 not resynced, and not called Inconsistent (it wrote nothing; its "
              "status says %s): %s\nn1's log: %s" % (what, own_state, res,
                                                     c.log("n1")[-3000:]))
    stop_all()
    check(image("n2") == before, "%s: not a byte of n1's written on n2" % what)


def forced():
    """resync --force n2: the split brain resolved, n2 the primary's."""
    rc, _, summary, err = resync_json(c, "--force", "n2")
    check(rc == 0 and summary, "resync --force n2 after the refusal: %s" % err)
    stop_all()
    check(image("n1") == image("n2"), "n2 byte-identical after resync --force n2")


try:
    took = fallback_race()
    # With data behind the hellos, on the plan's kept connection.
    pages = fork_n2()
    token = plan()
    split_window(arm_kept(), pages, "behind the hellos",
                 {"cmd": "resync", "confirm": c.tag, "plan_token": token})
    forced()
    # Without (a resync without the plan's token: new connections), the
    # write landing between n2's STATUS and the first data frame.
    pages = fork_n2()
    split_window(None, pages, "on a new connection", {"cmd": "resync", "confirm": c.tag})
    forced()
    c.kill_and_unmount()
    relay.stop()
    promoted_window()
    c.kill_and_unmount()
    relay.stop()
    promoted_window(deaf=False)
finally:
    c.kill_and_unmount()
    relay.stop()
print("ok: the kept connection's fallback (resync %.2f s), the split-brain and promotion windows, "
      "in %.1f s" % (took, time.monotonic() - T0))
