#!/usr/bin/env python3
"""Control requests are checked before anything runs (issue 9, test e).
On the control socket of the primary and of a secondary (which forwards
cluster-wide requests to the primary), a resync request without
"confirm", with another cluster's name, or with a field of the wrong type
("nodes":"s1", "max_rate":"abc", "max_rate":-1, "dry_run":"no"), an
unknown field or an unknown command is refused with a message naming
what is wrong, and no byte of any volume changes. The same resync with
the right "confirm" then runs, so the refusals are not a broken socket."""
import hashlib
import json
import os
import socket
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cluster_lib import MB, Cluster, check  # noqa: E402
from resyncfs_lib import Scratch  # noqa: E402

SIZE = 16 * MB


def ask(path, line, timeout=60):
    """One request line on a control socket: its reply lines (JSON)."""
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(timeout)
    s.connect(path)
    s.sendall(line.encode() + b"\n")
    buf = b""
    out = []
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        buf += chunk
        while b"\n" in buf:
            one, buf = buf.split(b"\n", 1)
            o = json.loads(one)
            out.append(o)
            if o.get("type") == "result":
                s.close()
                return out
    s.close()
    return out


def digest(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(4 * MB)
            if not b:
                return h.hexdigest()
            h.update(b)


sc = Scratch()
c = Cluster(sc, "req", ["p", "s1", "s2"], "p", size=SIZE)
for n in c.names:
    c.start(n)
c.write("p", 1 * MB, os.urandom(3 * MB))
c.write("s1", 5 * MB, os.urandom(64 * 1024))

refused = [
    ('{"cmd":"resync"}', "confirm"),
    ('{"cmd":"resync","confirm":"other"}', "confirm"),
    ('{"cmd":"resync","confirm":"req","nodes":"s1"}', "nodes"),
    ('{"cmd":"resync","confirm":"req","max_rate":"abc"}', "max_rate"),
    ('{"cmd":"resync","confirm":"req","max_rate":-1}', "max_rate"),
    ('{"cmd":"resync","confirm":"req","dry_run":"no"}', "dry_run"),
    ('{"cmd":"resync","confirm":"req","erase_everything":true}', "erase_everything"),
    ('{"cmd":"resync","confirm":"req","nodes":["s1",7]}', "nodes"),
    ('{"cmd":"verify","confirm":"req"}', "confirm"),
    ('{"cmd":"wipe"}', "wipe"),
    ('["resync"]', "object"),
    ('{"cmd":"status","extra":1}', "extra"),
]
before = {n: digest(c.image(n)) for n in c.names}
for via in ("p", "s1"):
    for line, names in refused:
        out = ask(c.control(via), line)
        res = out[-1] if out else {}
        check(res.get("type") == "result" and res.get("ok") is False,
              "%s refuses %s: %s" % (via, line, out))
        check(names in res.get("error", ""),
              "%s's refusal of %s names %s: %s" % (via, line, names, res))
        check(not any(o.get("type") == "progress" for o in out),
              "%s: no progress for the refused %s" % (via, line))
after = {n: digest(c.image(n)) for n in c.names}
check(before == after, "no byte of any volume changed: %s -> %s" % (before, after))
st = c.status()
check(st["s1"]["state"] == "Diverged" and st["s2"]["state"] == "Outdated",
      "the secondaries still drifted as before: %s" % st)

# The same request, confirmed, through the secondary: it runs.
out = ask(c.control("s1"), '{"cmd":"resync","confirm":"req","no_ranges":true}', timeout=120)
res = out[-1]
check(res.get("ok") is True, "a confirmed resync forwarded by s1 runs: %s" % res)
check(sorted((x["name"], x["result"]) for x in res["nodes"]) ==
      [("s1", "resynced"), ("s2", "resynced")], "both resynced: %s" % res)
for n in c.names:
    c.stop(n)
for n in ("s1", "s2"):
    check(digest(c.image(n)) == digest(c.image("p")), "%s byte-identical to p" % n)
print("ok: %d malformed or unconfirmed requests refused on the primary and on a secondary, "
      "nothing changed; the confirmed one ran" % len(refused))
