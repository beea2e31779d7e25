#!/usr/bin/env python3
"""The operator's side of a resync, end to end with two real resyncd nodes:
- `resyncctl events --json`, started first, yields resync_started ->
  progress... -> resync_finished for the secondary, then resync_done;
- /metrics parses as Prometheus text and follows the resync (in progress
  and a ratio while it runs; result, totals and states after);
- `resyncctl rate` and `pause`/`resume` change the running resync's bytes
  per second measurably, and the images end byte-identical;
- the command hook runs with the documented environment; a local HTTP
  listener receives the webhook's JSON;
- the SMTP server (python3-aiosmtpd) is down during the resync: the resync
  ends while the email is still in the spool, then the server starts and
  the email arrives (retry from the spool) with the right subject,
  recipients and per-node results."""
import http.server
import json
import os
import re
import subprocess
import sys
import threading
import time
import urllib.request
from email import message_from_bytes

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cluster_lib import free_port  # noqa: E402
from resyncfs_lib import (BUILD, RESYNCCTL, Scratch, check, fail,  # noqa: E402
                          is_mounted, wait_for)

RESYNCD = os.path.join(BUILD, "daemon", "resyncd")
MB = 1 << 20
SIZE = 64 * MB
SYSTEM_PYTHON = "/usr/bin/python3"  # where Debian's python3-aiosmtpd lives


# Every notification retry after 250 ms (a test hook of resyncd), not the
# default backoff's 1, 2, 4, 8 s: the email waiting in the spool goes
# within a quarter of a second of the SMTP server's start, not seconds later.
os.environ["RESYNC_TEST_NOTIFY_RETRY_MS"] = "250"
sc = Scratch()
smtp_port, hook_port, metrics_port = free_port(), free_port(), free_port()
maildir = sc.path("mail")
env_out = sc.path("hook.env")
names = ["n1", "n2"]
conf = sc.path("ops.conf")
key = sc.path("ops.key")
with open(key, "wb") as f:
    f.write(os.urandom(32))
os.chmod(key, 0o600)
lines = ["[cluster]", "name = ops", "primary = n1", "secret_file = " + key,
         "block_size = 64K",
         "notify_email = ops@example.com, oncall@example.com",
         "notify_from = resync@example.com",
         "smtp_url = smtp://127.0.0.1:%d" % smtp_port,
         "notify_webhook = http://127.0.0.1:%d/resync" % hook_port,
         "notify_command = env | grep ^RESYNC_ | sort > %s.tmp && mv %s.tmp %s"
         % (env_out, env_out, env_out)]
for n in names:
    img = sc.path(n + ".img")
    with open(img, "wb") as f:
        f.truncate(SIZE)
    lines += ["", "[node %s]" % n, "address = 127.0.0.1:%d" % free_port(),
              "volume = " + img, "mount = " + sc.path(n + ".mnt"),
              "control = " + sc.path(n + ".sock")]
    if n == "n1":
        lines.append("metrics = 127.0.0.1:%d" % metrics_port)
with open(conf, "w") as f:
    f.write("\n".join(lines) + "\n")

procs = {}
helpers = []


class Cleanup:
    def kill_and_unmount(self):
        for p in helpers:
            if p.poll() is None:
                p.kill()
                p.wait()
        for p in procs.values():
            if p.poll() is None:
                p.kill()
                p.wait()
        for n in names:
            if is_mounted(sc.path(n + ".mnt")):
                subprocess.call(["fusermount3", "-u", "-z", sc.path(n + ".mnt")])


sc.mounts.append(Cleanup())


def log(n):
    with open(sc.path(n + ".log"), errors="replace") as f:
        return f.read()


def start(n):
    out = open(sc.path(n + ".log"), "ab")
    p = subprocess.Popen([RESYNCD, "--config", conf, "--node", n], stdout=out, stderr=out)
    procs[n] = p

    def up():
        if p.poll() is not None:
            fail("resyncd %s exited with %d: %s" % (n, p.returncode, log(n)))
        return os.path.exists(sc.path(n + ".sock")) and is_mounted(sc.path(n + ".mnt"))
    wait_for(up, what="resyncd %s up" % n)


def ctl(*args):
    return subprocess.run([RESYNCCTL, "--config", conf] + list(args),
                          capture_output=True, text=True, timeout=60)


def scrape():
    with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % metrics_port, timeout=5) as r:
        check(r.status == 200, "/metrics answers 200")
        return parse_prometheus(r.read().decode())


SERIES = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\.)*"'
                    r'(,[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\.)*")*)?\})? (\S+)$')


def parse_prometheus(text):
    """Prometheus text format 0.0.4: # HELP / # TYPE lines, then samples
    NAME{label="value",...} VALUE. Every sample's metric has a TYPE line
    before it. Returns {series: float}."""
    out, typed = {}, set()
    check(text.endswith("\n"), "metrics text ends with a newline")
    for line in text.splitlines():
        if line.startswith("# HELP "):
            continue
        if line.startswith("# TYPE "):
            parts = line.split()
            check(len(parts) == 4 and parts[3] in ("counter", "gauge", "histogram", "summary",
                                                   "untyped"), "TYPE line: " + line)
            typed.add(parts[2])
            continue
        m = SERIES.match(line)
        check(m is not None, "a sample line parses: %r" % line)
        check(m.group(1) in typed, "%s has a TYPE line before it" % m.group(1))
        out[line.rsplit(" ", 1)[0]] = float(m.group(5))
    return out


# ---- a webhook listener ----
hooks = []


class Hook(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        hooks.append((self.path, self.headers.get("Content-Type"), body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *a):
        pass


hook_server = http.server.HTTPServer(("127.0.0.1", hook_port), Hook)
threading.Thread(target=hook_server.serve_forever, daemon=True).start()

for n in names:
    start(n)

# ---- /health and the first scrape ----
with urllib.request.urlopen("http://127.0.0.1:%d/health" % metrics_port, timeout=5) as r:
    h = json.loads(r.read())
    check(h["status"] == "ok" and h["node"] == "n1" and h["cluster"] == "ops", "/health: %s" % h)
m = scrape()
for name in ("resync_in_progress", "resync_last_success_timestamp_seconds",
             "resync_last_duration_seconds", 'resync_dirty_bytes{node="n1"}',
             'resync_progress_ratio{node="n2"}', 'resync_bytes_compared_total{node="n2"}',
             'resync_bytes_sent_total{node="n2"}', 'resync_peer_connected{peer="n2"}',
             'resync_last_result{result="success"}',
             'resync_node_state{node="n1",state="UpToDate"}'):
    check(name in m, "metric %s is served" % name)
check(m['resync_node_state{node="n1",state="UpToDate"}'] == 1, "the primary is UpToDate")

# ---- data on the primary, 48 MiB that n2 lacks ----
fd = os.open(os.path.join(sc.path("n1.mnt"), "volume"), os.O_WRONLY)
os.pwrite(fd, os.urandom(48 * MB), 8 * MB)
os.fsync(fd)
os.close(fd)
check(scrape()['resync_dirty_bytes{node="n1"}'] >= 48 * MB, "dirty bytes follow the writes")

# ---- the SMTP server, down until the resync has ended ----
# Its python and aiosmtpd are loaded now (a second on a loaded machine);
# it binds its port only when told to (a line on its stdin), so that the
# email's first retry after that finds it up.
smtp = subprocess.Popen([SYSTEM_PYTHON, "-c", "import sys, aiosmtpd.main as m, aiosmtpd.handlers; "
                         "sys.stdin.readline(); m.main(sys.argv[1:])",
                         "-n", "-l", "127.0.0.1:%d" % smtp_port,
                         "-c", "aiosmtpd.handlers.Mailbox", maildir],
                        stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
helpers.append(smtp)

# ---- the event stream, open before the resync ----
events_out = open(sc.path("events.jsonl"), "w+")
ev = subprocess.Popen([RESYNCCTL, "--config", conf, "events", "--json"], stdout=events_out,
                      stderr=subprocess.PIPE)
helpers.append(ev)


def events():
    with open(sc.path("events.jsonl")) as f:
        return [json.loads(x) for x in f.read().splitlines() if x.endswith("}")]


# The stream is open once an event published after the request shows up:
# a verify touches n2 (a "peer" event).
def stream_open():
    check(ev.poll() is None, "resyncctl events is running")
    ctl("verify", "--json")
    return any(e["event"] == "peer" for e in events())


wait_for(stream_open, timeout=20, what="the event stream to open")

# ---- a resync at 4 MiB/s; rate, pause, resume while it runs ----
samples = []  # (monotonic time, bytes_done of the transfer)
rs = subprocess.Popen([RESYNCCTL, "--config", conf, "resync", "--yes", "--json",
                       "--max-rate", "3M"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                      text=True)
helpers.append(rs)
rs_lines = []


def read_resync():
    for line in rs.stdout:
        o = json.loads(line)
        rs_lines.append(o)
        if o.get("type") == "progress" and o.get("phase") == "transfer":
            samples.append((time.monotonic(), o["bytes_done"]))


reader = threading.Thread(target=read_resync, daemon=True)
reader.start()


def rate_over(seconds):
    """Bytes per second of the transfer over the next `seconds`, from the
    resync's own progress lines (two or more of them)."""
    t0 = time.monotonic()
    wait_for(lambda: samples and samples[-1][0] > t0, timeout=10, what="a progress line")
    a = samples[-1]
    wait_for(lambda: samples[-1][0] >= a[0] + seconds, timeout=seconds + 10,
             what="progress after %.1f s" % seconds)
    b = samples[-1]
    return (b[1] - a[1]) / (b[0] - a[0])


def transfer_started():
    if samples:
        return True
    if rs.poll() is not None:
        fail("the resync ended before its transfer (exit %d): %s %s" %
             (rs.returncode, rs_lines[-3:], rs.stderr.read()))
    return False


wait_for(transfer_started, timeout=30,
         what=lambda: "the transfer to start (last lines: %s)" % rs_lines[-3:])
m = scrape()
check(m["resync_in_progress"] == 1, "resync_in_progress is 1 while it runs")
check(0 <= m['resync_progress_ratio{node="n2"}'] < 1, "a ratio below 1 while it runs")
slow = rate_over(1.2)
r = ctl("rate", "12M", "--json")
check(r.returncode == 0 and json.loads(r.stdout)["max_rate"] == 12 * MB, "rate 12M: %s %s"
      % (r.stdout, r.stderr))
fast = rate_over(1.0)
check(slow < 4.5 * MB, "at --max-rate 3M: %.1f MiB/s" % (slow / MB))
check(fast > 2 * slow, "after rate 12M it goes faster: %.1f -> %.1f MiB/s"
      % (slow / MB, fast / MB))
r = ctl("pause")
check(r.returncode == 0 and "paused" in r.stdout, "pause: %s %s" % (r.stdout, r.stderr))
# A batch in flight when the pause came may still land (its progress line
# within 0.5 s); over the next second nothing moves: a transfer that moved
# would print a progress line (they come every 0.5 s while data flows).
t_pause = time.monotonic()
wait_for(lambda: time.monotonic() >= t_pause + 0.6, what="the pause to settle")
a = samples[-1]
wait_for(lambda: time.monotonic() >= t_pause + 1.6 or samples[-1] != a,
         what="one second paused")
paused = (samples[-1][1] - a[1]) / (time.monotonic() - t_pause - 0.6)
check(samples[-1] == a, "paused: nothing sent for a second (%.1f MiB/s)" % (paused / MB))
check(rs.poll() is None, "the paused resync is still running")
r = ctl("resume", "--json")
check(r.returncode == 0 and not json.loads(r.stdout)["paused"], "resume: " + r.stdout + r.stderr)
check(rs.wait(timeout=60) == 0, "the resync completes after resume: %s" % rs.stderr.read())
t_done = time.monotonic()
reader.join(timeout=10)
summary = rs_lines[-1]
check(summary["type"] == "summary" and summary["nodes"][0]["result"] == "resynced",
      "resynced: %s" % summary)


def same_images():
    with open(os.path.join(sc.path("n1.mnt"), "volume"), "rb") as a, \
         open(os.path.join(sc.path("n2.mnt"), "volume"), "rb") as b:
        while True:
            x, y = a.read(4 * MB), b.read(4 * MB)
            if x != y:
                return False
            if not x:
                return True


check(same_images(), "n2 is byte-identical to n1 after rate, pause and resume")

# The resync ended while the email could not go: it sits in the spool.
spool = sc.path("n1.img.resync-notify")
check(any(f.endswith(".json") for f in os.listdir(spool)),
      "the undelivered email is kept in the spool")
# Its first attempt failed; the server starts now, the checks below run
# while the retries wait.
wait_for(lambda: any(e["event"] == "notify_failed" and e["channel"] == "email"
                     for e in events()), timeout=20, what="a failed email attempt")
check(smtp.poll() is None, "the SMTP server waits to start: %s" % (smtp.poll(),))
smtp.stdin.write(b"start\n")
smtp.stdin.close()

# ---- the event stream: started -> progress... -> finished, then done ----
wait_for(lambda: any(e["event"] == "resync_done" for e in events()), timeout=10,
         what="resync_done on the stream")
es = events()
for e in es:
    check(e["type"] == "event" and e["cluster"] == "ops" and "time" in e and "ts" in e,
          "every event has type, cluster, time, ts: %s" % e)
seq = [e["event"] for e in es if e.get("node") == "n2" and e["event"] in
       ("resync_started", "progress", "resync_finished", "resync_failed", "resync_cancelled")]
check(seq and seq[0] == "resync_started" and seq[-1] == "resync_finished" and
      seq.count("progress") >= 3 and set(seq[1:-1]) == {"progress"},
      "n2's sequence is started -> progress... -> finished: %s" % seq)
prog = [e for e in es if e["event"] == "progress" and e["node"] == "n2"]
for a, b in zip(prog, prog[1:]):
    check(b["ts"] - a["ts"] >= 0.99, "progress at most once a second: %s %s" % (a, b))
done = [e for e in es if e["event"] == "resync_done"][-1]
check(done["result"] == "success" and done["nodes"] == 1, "resync_done: %s" % done)
fin = [e for e in es if e["event"] == "resync_finished"][-1]
check(fin["state"] == "UpToDate" and fin["bytes_sent"] > 0, "finished event: %s" % fin)

# ---- metrics after ----
m = scrape()
check(m["resync_in_progress"] == 0, "not in progress after")
check(m['resync_progress_ratio{node="n2"}'] == 1, "ratio 1 after")
check(m['resync_last_result{result="success"}'] == 1 and
      m['resync_last_result{result="failed"}'] == 0, "last result success")
check(m['resync_node_state{node="n2",state="UpToDate"}'] == 1, "n2 UpToDate in the metrics")
check(m['resync_bytes_sent_total{node="n2"}'] > 0, "bytes sent counted")
check(m['resync_bytes_compared_total{node="n2"}'] >= SIZE, "bytes compared counted")
check(m["resync_last_duration_seconds"] > 0, "a duration")
check(abs(m["resync_last_success_timestamp_seconds"] - time.time()) < 120, "a recent success")
check(m['resync_peer_connected{peer="n2"}'] == 1, "n2 connected")

# ---- the command hook and the webhook ----
def hook_env():
    """The environment of the command hook's last run ({} before one)."""
    try:
        with open(env_out) as f:
            return dict(x.split("=", 1) for x in f.read().splitlines() if "=" in x)
    except FileNotFoundError:
        return {}


# The primary's watch alerts n2 Outdated (the 48 MiB it lacked; the
# verify that opened the stream: 48 MiB differ) through the same hook
# before the resync: the run for the resync's end is the one looked at.
wait_for(lambda: hook_env().get("RESYNC_EVENT") == "resync_finished", timeout=20,
         what=lambda: "the command hook of resync_finished (last: %s)" % hook_env())
env = hook_env()
for k, v in (("RESYNC_CLUSTER", "ops"), ("RESYNC_EVENT", "resync_finished"),
             ("RESYNC_RESULT", "success"), ("RESYNC_NODES", "n2"), ("RESYNC_PRIMARY", "n1"),
             ("RESYNC_NODE_COUNT", "1"), ("RESYNC_NODE_1_NAME", "n2"),
             ("RESYNC_NODE_1_RESULT", "resynced"), ("RESYNC_NODE_1_STATE_AFTER", "UpToDate")):
    check(env.get(k) == v, "hook env %s=%s: %s" % (k, v, env.get(k)))
check(int(env["RESYNC_NODE_1_BYTES_SENT"]) > 0, "hook env bytes sent")
check(json.loads(env["RESYNC_JSON"])["cluster"] == "ops", "hook env RESYNC_JSON")
# (The same for the webhook: an alert's POST may have come first.)
wait_for(lambda: any(json.loads(h[2]).get("type") == "resync_finished" for h in hooks), timeout=20,
         what=lambda: "the webhook of resync_finished (%d POSTs)" % len(hooks))
path, ctype, body = next(h for h in hooks if json.loads(h[2]).get("type") == "resync_finished")
doc = json.loads(body)
check(path == "/resync" and ctype == "application/json", "webhook POST: %s %s" % (path, ctype))
check(doc["type"] == "resync_finished" and doc["cluster"] == "ops" and doc["result"] == "success"
      and doc["nodes"][0]["name"] == "n2" and doc["nodes"][0]["result"] == "resynced",
      "webhook JSON: %s" % doc)

# ---- the email: failed while the server was down, delivered after it starts ----
# (The server was started above, after the first failed attempt.)


def mails():
    new = os.path.join(maildir, "new")
    return [os.path.join(new, x) for x in os.listdir(new)] if os.path.isdir(new) else []


def mail_of_resync():
    """The email of the resync's end (an alert's may come first, or not at
    all before it), or None."""
    for p in mails():
        with open(p, "rb") as f:
            m = message_from_bytes(f.read())
        if "resync " in (m["Subject"] or "") and "alert" not in (m["Subject"] or ""):
            return m
    return None


def subjects():
    return [message_from_bytes(open(p, "rb").read())["Subject"] for p in mails()]


wait_for(mail_of_resync, timeout=40,
         what=lambda: "the email after the SMTP server started (have: %s)" % subjects())
msg = mail_of_resync()
subject = msg["Subject"]
check("cluster 'ops'" in subject and "resync succeeded" in subject, "subject: " + subject)
rcpt = msg.get("X-RcptTo", "")
check("ops@example.com" in rcpt and "oncall@example.com" in rcpt, "recipients: " + rcpt)
check(msg["From"] == "resync@example.com", "from: %s" % msg["From"])
text = msg.get_payload(decode=True).decode()
for want in ("n2: resynced", "-> UpToDate",
             "bytes compared: 67108864", "bytes sent:", "duration:", "generation:",
             "More: resyncctl --config %s status" % conf):
    check(want in text, "email body has %r: %s" % (want, text))
# The alert's email, queued before the resync (see the hook above), goes
# at its next retry (250 ms apart here); the spool empties once it went
# too.
wait_for(lambda: not any(f.endswith(".json") for f in os.listdir(spool)), timeout=40,
         what=lambda: "the spool to empty (mail so far: %s)" % subjects())
check(any(e["event"] == "notify_delivered" and e["channel"] == "email" for e in events()),
      "notify_delivered for the email on the stream")
check("notification" in log("n1") and "<4>resyncd: notification" in log("n1"),
      "attempts are logged with a priority")
ev.terminate()
print("ok: events, metrics, rate/pause/resume, hook, webhook, email from the spool "
      "(%.1f/%.1f MiB/s before/after rate)" % (slow / MB, fast / MB))
