#!/usr/bin/env python3
"""Drift detected before anyone asks (issue 16), with two real resyncd nodes,
a loopback SMTP server (python3-aiosmtpd) and /health driven by curl as
HAProxy's `option httpchk` and a Kubernetes readiness probe do:
- with verify_interval = 1s, 4 known blocks corrupted in the secondary's
  image behind its daemon's back are found by the scheduled verify (exactly
  those blocks, named in the primary's log; their bytes in status), an
  alert email names the node and the bytes, the secondary's /health
  answers 503 with the reason; later verifies alert nothing more (one
  alert per incident); after resync --yes, /health answers 200 again;
- the same with the corruption made while the secondary's daemon was
  stopped: a new incident, a new email;
- /health answers 503 on the node being rewritten during a resync, 200 on
  the primary (and /health?ready 503 on the fenced primary);
- a scheduled verify interrupted by a restart of the primary resumes where
  it stopped (the bytes it compared are fewer than the volume's), and a
  resync asked during a scheduled verify runs first; the verify then goes
  on and ends."""
import json
import os
import re
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cluster_lib import MB, Cluster, check, fail, free_port, resync_ok, wait_for  # noqa: E402
from resyncfs_lib import RESYNCCTL, Scratch  # noqa: E402

SYSTEM_PYTHON = "/usr/bin/python3"  # where Debian's python3-aiosmtpd lives
BS = 64 * 1024
SIZE = 64 * MB

t_start = time.monotonic()
sc = Scratch()
c = Cluster(sc, "drift", ["n1", "n2"], "n1", size=SIZE)
smtp_port = free_port()
maildir = sc.path("mail")
hport = {"n1": free_port(), "n2": free_port()}


def configure(extra):
    """The cluster file with drift's keys and a metrics port per node."""
    with open(c.conf) as f:
        text = f.read()
    text = re.sub(r"(?m)^(verify_|alert_after|notify_|smtp_url).*\n", "", text)
    text = text.replace("block_size = 64K\n", "block_size = 64K\n" + "".join(
        k + " = " + v + "\n" for k, v in extra.items()))
    for n in c.names:
        line = "control = " + c.control(n) + "\n"
        if "metrics = 127.0.0.1:%d" % hport[n] not in text:
            text = text.replace(line, line + "metrics = 127.0.0.1:%d\n" % hport[n])
    with open(c.conf, "w") as f:
        f.write(text)


BASE = {"verify_interval": "1s", "alert_after": "3s",
        "notify_email": "ops@example.com", "notify_from": "resync@example.com",
        "smtp_url": "smtp://127.0.0.1:%d" % smtp_port}
configure(BASE)

smtp = subprocess.Popen([SYSTEM_PYTHON, "-m", "aiosmtpd", "-n", "-l", "127.0.0.1:%d" % smtp_port,
                         "-c", "aiosmtpd.handlers.Mailbox", maildir],
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


class Helpers:
    def kill_and_unmount(self):
        if smtp.poll() is None:
            smtp.kill()
            smtp.wait()


sc.mounts.append(Helpers())


def curl_health(n, query=""):
    """As a probe does: GET, the status code decides; the body says why."""
    body = sc.path("health-body")
    r = subprocess.run(["curl", "-sS", "-o", body, "-w", "%{http_code}",
                        "http://127.0.0.1:%d/health%s" % (hport[n], query)],
                       capture_output=True, text=True, timeout=10)
    check(r.returncode == 0, "curl /health on %s: %s" % (n, r.stderr))
    with open(body) as f:
        return int(r.stdout), json.loads(f.read())


def curl_fail(n, query=""):
    """HAProxy's and kubelet's verdict: curl --fail exits 0 only on 2xx."""
    return subprocess.run(["curl", "-fsS", "-o", "/dev/null",
                           "http://127.0.0.1:%d/health%s" % (hport[n], query)],
                          capture_output=True, timeout=10).returncode == 0


def mails():
    out = []
    d = os.path.join(maildir, "new")
    if not os.path.isdir(d):
        return out
    for name in sorted(os.listdir(d)):
        with open(os.path.join(d, name), errors="replace") as f:
            out.append(f.read())
    return out


def verify_mails():
    return [m for m in mails() if "verify found" in m]


def status():
    return c.status()


def corrupt(blocks):
    """Random bytes over whole blocks of n2's image, behind resyncd's back."""
    fd = os.open(c.image("n2"), os.O_WRONLY)
    try:
        for b in blocks:
            os.pwrite(fd, os.urandom(BS), b * BS)
        os.fsync(fd)
    finally:
        os.close(fd)


def wait_verify_after(t, what, timeout=30.0):
    """A verify of n2 that ended after last_verify t; its status line."""
    got = {}

    def ended():
        s = status()["n2"]
        if s.get("last_verify") and s["last_verify"] != t and s.get("verify_differing_bytes") is not None:
            got.update(s)
            return True
        return False
    wait_for(ended, timeout=timeout, what=what)
    return got


def expect_found(blocks, since_log, what):
    s = wait_verify_after(status()["n2"].get("last_verify"), what)
    # A verify may have begun before the corruption was complete: the
    # next one sees it all.
    if s["verify_differing_blocks"] != len(blocks):
        s = wait_verify_after(s["last_verify"], what + " (next verify)")
    check(s["verify_differing_bytes"] == len(blocks) * BS and s["verify_differing_blocks"] == len(blocks),
          "%s: the verify found exactly %d blocks: %s" % (what, len(blocks), s))
    named = set(int(x) for x in re.findall(r"node 'n2' differs at offset \d+ \(block (\d+)\)",
                                           c.log("n1")[since_log:]))
    check(named == set(blocks), "%s: the blocks named are %s, not %s" % (what, sorted(named), blocks))
    return s


c.start("n1")
c.start("n2")
wait_for(lambda: smtp.poll() is None and os.path.isdir(maildir), what="smtp server up")
# A common starting point: n2 takes n1's generation (a fresh n2 is Outdated).
resync_ok(c, "first resync")
wait_for(lambda: curl_health("n2")[0] == 200, what=lambda: "n2 healthy: %s" % (curl_health("n2"),))
code, h = curl_health("n1")
check(code == 200 and h["status"] == "ok" and h["role"] == "primary", "primary healthy: %s" % h)
check(curl_fail("n1") and curl_fail("n1", "?ready"), "curl --fail on the primary's /health")

# ---- 4 known blocks corrupted while the secondary runs ----
t0 = time.monotonic()
blocks = [3, 100, 513, 1000]
log_at = len(c.log("n1"))
corrupt(blocks)
s = expect_found(blocks, log_at, "corruption behind a running daemon")
wait_for(lambda: len(verify_mails()) == 1, timeout=30, what="the verify alert email")
m = verify_mails()[0]
# The alert goes out with the first verify that saw differences: one that
# began before the corruption was complete saw only some of the blocks.
found = re.search(r"verify found (\d+) bytes in (\d+) blocks", m)
check(found and int(found.group(1)) == int(found.group(2)) * BS and
      1 <= int(found.group(2)) <= len(blocks), "the email says the bytes found: " + m)
check("n2" in m and "Subject: [resync] cluster 'drift':" in m
      and "resync --yes n2" in m, "the email names the node, the bytes and the fix: " + m)
wait_for(lambda: curl_health("n2")[0] == 503, what="n2's /health 503")
code, h = curl_health("n2")
check("verify" in h["reason"] and "262144 bytes in 4 blocks" in h["reason"] and h["status"] == "unhealthy",
      "503 says why: %s" % h)
check(not curl_fail("n2"), "curl --fail fails on n2 (a probe takes it out)")
# More verifies: the incident is not alerted again.
s2 = wait_verify_after(s["last_verify"], "another scheduled verify")
s3 = wait_verify_after(s2["last_verify"], "a third scheduled verify")
check(s3["verify_differing_bytes"] == 4 * BS, "still differs: %s" % s3)
check(len(verify_mails()) == 1, "one alert per incident, not per verify: %d" % len(verify_mails()))
m = c.ctl("status")
check(m.returncode == 0 and "VERIFY" in m.stdout and "256.0 KiB" in m.stdout,
      "status text shows the verify's finding:\n" + m.stdout)
resync_ok(c, "resync after the verify")
wait_for(lambda: curl_health("n2")[0] == 200, what=lambda: "n2 200 after the resync: %s" % (curl_health("n2"),))
check(curl_fail("n2") and curl_fail("n2", "?ready"), "probes put n2 back")
print("corruption of a running secondary: found, alerted once, 503, resync, 200 (%.1f s)"
      % (time.monotonic() - t0))

# ---- the same with the daemon stopped: a new incident ----
t0 = time.monotonic()
c.stop("n2")
blocks = [7, 64, 800, 1023]
corrupt(blocks)
log_at = len(c.log("n1"))
c.start("n2")
expect_found(blocks, log_at, "corruption while the daemon was stopped")
wait_for(lambda: len(verify_mails()) == 2, timeout=30, what="a second incident's email")
wait_for(lambda: curl_health("n2")[0] == 503, what="n2's /health 503 again")
resync_ok(c, "resync after the second corruption")
wait_for(lambda: curl_health("n2")[0] == 200, what="n2 200 after the second resync")
print("corruption of a stopped secondary: found, alerted, resynced (%.1f s)" % (time.monotonic() - t0))

# ---- /health during a resync ----
t0 = time.monotonic()
fd = os.open(c.file("n1"), os.O_WRONLY)
try:
    os.pwrite(fd, os.urandom(24 * MB), 8 * MB)
    os.fsync(fd)
finally:
    os.close(fd)
# --fence whole: the primary is fenced for the whole run, so that its
# /health?ready can be seen 503 while the secondary is rewritten (with
# the default short fence the primary is fenced only for the last pass).
p = subprocess.Popen([RESYNCCTL, "--config", c.conf, "resync", "--yes", "--json", "--max-rate", "6M",
                      "--fence", "whole"],
                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
seen = {}


def rewriting():
    code2, h2 = curl_health("n2")
    if code2 == 503 and "resync in progress" in h2.get("reason", ""):
        seen["n2"] = h2
        seen["n1"] = curl_health("n1")
        seen["n1ready"] = curl_health("n1", "?ready")
        return True
    check(p.poll() is None, "the resync ended before n2 was seen being rewritten")
    return False


wait_for(rewriting, timeout=30, what="n2 503 while rewritten")
out, err = p.communicate(timeout=60)
check(p.returncode == 0, "the rate-limited resync: %s %s" % (out, err))
check(seen["n1"][0] == 200, "the primary answers 200 during the resync: %s" % (seen["n1"],))
check(seen["n1ready"][0] == 503 and "fenced" in seen["n1ready"][1]["reason"],
      "the primary's /health?ready is 503 while fenced: %s" % (seen["n1ready"],))
wait_for(lambda: curl_health("n2")[0] == 200, what="n2 200 after the rate-limited resync")
print("/health during a resync: 503 on the rewritten node, 200 on the primary (%.1f s)"
      % (time.monotonic() - t0))

# ---- resumed after a restart; a resync asked during a verify runs first ----
t0 = time.monotonic()
c.stop("n1")
configure(dict(BASE, verify_interval="1s", verify_max_rate="16M"))
c.start("n1")


def in_progress(minimum):
    s = status()["n2"]
    return s.get("verify_offset") is not None and s["verify_offset"] >= minimum


wait_for(lambda: in_progress(16 * MB), timeout=30, what="a scheduled verify a quarter done")
c.stop("n1")
c.start("n1")
last = status()["n2"]["last_verify"]
s = wait_verify_after(last, "the resumed verify")
check(0 < s["verify_resumed_from"] and s["verify_bytes_compared"] == SIZE - s["verify_resumed_from"]
      and s["verify_bytes_compared"] < SIZE,
      "the resumed verify compared only the rest: %s" % s)
check(s["verify_differing_bytes"] == 0, "nothing differs: %s" % s)
print("resumed at %d: compared %d of %d bytes (%.1f s)"
      % (s["verify_resumed_from"], s["verify_bytes_compared"], SIZE, time.monotonic() - t0))

t0 = time.monotonic()
wait_for(lambda: in_progress(8 * MB) and not in_progress(40 * MB), timeout=30,
         what="the next scheduled verify under way")
at = status()["n2"]["verify_offset"]
fd = os.open(c.file("n1"), os.O_WRONLY)  # a resync that lasts: 16 MiB at 8 MiB/s
try:
    os.pwrite(fd, os.urandom(16 * MB), 40 * MB)
    os.fsync(fd)
finally:
    os.close(fd)
tr = time.monotonic()
resync_ok(c, "a resync during a scheduled verify", "--max-rate", "8M")
took = time.monotonic() - tr
check("scheduled verify of 'n2' waits for the resync" in c.log("n1"),
      "the verify said it waits for the resync: %s"
      % [x for x in c.log("n1").splitlines() if "verify" in x or "resync" in x][-15:])
s = wait_verify_after(s["last_verify"], "the verify after the resync")
# Went on from where it waited: each byte compared once by this run.
check(s["verify_resumed_from"] == 0 and s["verify_bytes_compared"] == SIZE
      and s["verify_differing_bytes"] == 0,
      "the verify went on from where it waited (%d): %s" % (at, s))
print("a resync during a verify ran first (%.2f s), the verify went on (%.1f s)" % (took, time.monotonic() - t0))

for n in ("n1", "n2"):
    c.stop(n)
print("drift detection: OK (%.1f s)" % (time.monotonic() - t_start))
