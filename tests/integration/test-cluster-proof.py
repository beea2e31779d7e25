#!/usr/bin/env python3
"""The proof of convergence (issue 11): after a resync each secondary's
volume root and the primary's are compared before the commit and shown
in the summary (--json and text), status --json, the events, the metrics
and the email; each equals `resync-diff hash` of the image after the
daemons stop. A second, quick resync hashes again only the blocks written
since. A secondary corrupted between transfer and commit (failpoint
corrupt-before-commit) fails with the mismatch named, is not committed
(Inconsistent) while the other secondary completes."""
import json
import os
import queue
import subprocess
import sys
import threading
import time
from email import message_from_bytes

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cluster_lib import (BUILD, MB, RESYNCCTL, Cluster, check, free_port,  # noqa: E402
                         resync_ok, wait_for)
from resyncfs_lib import Scratch  # noqa: E402

SIZE = 64 * MB
RESYNC_DIFF = os.path.join(BUILD, "tools", "resync-diff")
SYSTEM_PYTHON = "/usr/bin/python3"  # where Debian's python3-aiosmtpd lives

sc = Scratch()
c = Cluster(sc, "proof", ["p", "s1", "s2"], "p", size=SIZE)
smtp_port = free_port()
maildir = sc.path("mail")
with open(c.conf) as f:
    text = f.read()
text = text.replace("[cluster]\n", "[cluster]\nproof = true\nnotify_email = ops@example.com\n"
                    "smtp_url = smtp://127.0.0.1:%d\n" % smtp_port, 1)
with open(c.conf, "w") as f:
    f.write(text)
smtp = subprocess.Popen([SYSTEM_PYTHON, "-m", "aiosmtpd", "-n", "-l",
                         "127.0.0.1:%d" % smtp_port, "-c", "aiosmtpd.handlers.Mailbox", maildir],
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


class Events:
    def __init__(self):
        self.p = subprocess.Popen([RESYNCCTL, "--config", c.conf, "--node", "p", "events",
                                   "--json"], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                  stderr=subprocess.DEVNULL, text=True)
        self.all = []
        self.q = queue.Queue()
        threading.Thread(target=self.read, daemon=True).start()

    def read(self):
        for line in self.p.stdout:
            try:
                self.all.append(json.loads(line))
            except ValueError:
                pass

    def close(self):
        self.p.kill()
        self.p.wait()


def mails():
    new = os.path.join(maildir, "new")
    return sorted((os.path.join(new, x) for x in os.listdir(new)),
                  key=os.path.getmtime) if os.path.isdir(new) else []


def image_root(n):
    r = subprocess.run([RESYNC_DIFF, "hash", "--json", c.image(n)], capture_output=True,
                       text=True, timeout=60)
    check(r.returncode == 0, "resync-diff hash %s: %s" % (n, r.stderr))
    return json.loads(r.stdout)["root"]


def summary_of(args):
    r = c.ctl("resync", "--yes", "--json", *args)
    lines = [json.loads(x) for x in r.stdout.splitlines() if x.strip()]
    return r.returncode, (lines[-1] if lines else None), r


try:
    for n in c.names:
        c.start(n)
    t0 = time.monotonic()
    ev = Events()

    # The stream is open once an event published after it started shows
    # up (it prints nothing until then): a verify of the blank, identical
    # volumes reaches the secondaries (their "peer" events).
    def stream_open():
        check(ev.p.poll() is None, "resyncctl events is running")
        c.ctl("verify", "--json")
        return any(e.get("event") == "peer" for e in ev.all)
    wait_for(stream_open, timeout=30, what="the event stream to open")
    rnd = os.urandom(8 * MB)
    c.write("p", 0, rnd[:4 * MB])
    c.write("p", 40 * MB, rnd[4 * MB:])
    c.write("s2", 20 * MB, b"stray" * 1000)

    # ---- a full resync: the proof in the summary, status, events ----
    nodes = resync_ok(c, "first resync")
    rc, summary, _ = None, None, None
    r = c.ctl("status", "--json")
    st = {x["name"]: x for x in json.loads(r.stdout)["nodes"]}
    roots = {}
    for n in ("s1", "s2"):
        pr = nodes[n].get("proof")
        check(pr and pr["match"] is True and pr["root"].startswith("xxh3:"),
              "summary: %s's proof matches: %s" % (n, pr))
        roots[n] = pr["root"]
        check(st[n]["proof"] and st[n]["proof"]["root"] == pr["root"] and
              st[n]["proof"]["match"] is True, "status --json: %s's proof: %s" % (n, st[n]))
    check(roots["s1"] == roots["s2"], "both secondaries have one root")
    wait_for(lambda: sum(1 for e in ev.all if e.get("event") == "proof") >= 2, timeout=10,
             what="two proof events")
    for e in ev.all:
        if e.get("event") == "proof":
            check(e["match"] is True and e["root"] == roots[e["node"]] and
                  e["primary_root"] == roots[e["node"]], "proof event: %s" % e)
    ev.close()
    wait_for(lambda: mails(), timeout=30, what="the email")
    with open(mails()[-1], "rb") as f:
        body = message_from_bytes(f.read()).get_payload(decode=True).decode()
    check("proof:          %s (equal to the primary's)" % roots["s1"] in body,
          "the email shows the proof: %s" % body)

    # text summary
    c.write("p", 8 * MB, os.urandom(16 * 1024))
    r = c.ctl("resync", "--yes")
    check(r.returncode == 0 and "proof" in r.stdout, "text summary shows the proof: %s" % r.stdout)

    # ---- a quick resync: only the written blocks hashed again ----
    c.write("p", 12 * MB, os.urandom(3 * 64 * 1024))
    rc, summary, r = summary_of([])
    check(rc == 0, "quick resync: %s %s" % (r.stdout, r.stderr))
    for x in summary["nodes"]:
        check(x["mode"] == "quick" and x["proof"]["match"] and
              x["proof"]["blocks_hashed"] <= 8, "quick: few blocks hashed: %s" % x)
    check(summary["proof"]["blocks_hashed"] <= 8,
          "quick: the primary hashed few blocks: %s" % summary["proof"])
    last = summary["proof"]["root"]

    # ---- the roots equal resync-diff hash of each image, daemons stopped ----
    for n in c.names:
        c.stop(n)
    for n in c.names:
        check(image_root(n) == last, "resync-diff hash %s = the proof's root %s" % (n, last))

    # ---- failpoint: s1 corrupted between transfer and commit ----
    c.start("p")
    c.start("s1", env={"RESYNC_FAILPOINT": "corrupt-before-commit"})
    c.start("s2")
    c.write("p", 30 * MB, os.urandom(1 * MB))
    rc, summary, r = summary_of([])
    check(rc != 0, "a proof mismatch fails the resync: %s" % r.stdout)
    by = {x["name"]: x for x in summary["nodes"]}
    check(by["s1"]["result"] == "failed" and "proof mismatch" in by["s1"]["error"] and
          by["s1"]["proof"]["match"] is False and by["s1"]["state"] == "Inconsistent",
          "s1 named with the mismatch: %s" % by["s1"])
    check(by["s2"]["result"] == "resynced" and by["s2"]["proof"]["match"] is True,
          "s2 completes: %s" % by["s2"])
    st = c.status()
    check(st["s1"]["state"] == "Inconsistent" and st["s1"]["proof"]["match"] is False,
          "status: s1 Inconsistent with its failed proof: %s" % st["s1"])
    print("ok: proof (%.1f s)" % (time.monotonic() - t0))
finally:
    smtp.kill()
    c.kill_and_unmount()
