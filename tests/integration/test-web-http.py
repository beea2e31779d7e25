#!/usr/bin/env python3
"""The dashboard's security without a browser (issue 15): plain HTTP to
the `web` address of a three-node cluster's primary and a secondary.

- every response carries the strict Content-Security-Policy; the page has
  no inline script or style (the JS and CSS are files);
- the read-only API needs a login (web_public_status is off); a wrong
  token is refused; the session cookie is HttpOnly and SameSite=Strict;
- a POST that would start a resync without a login, without the CSRF
  token, with a wrong one, or from another origin is refused with 403,
  and no byte of any image changes; a Host header that does not name
  loopback is refused (DNS rebinding);
- with the CSRF token but a wrong "confirm", the daemon's own check
  refuses it (nothing changes); with the cluster's name it runs, on the
  primary and forwarded from a secondary, and the images end identical;
- resyncd refuses to start with a token file others may read, with a
  non-loopback `web` unless web_allow_remote = true, and with `web` but
  neither web_token_file nor web_public_status."""
import json
import os
import re
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cluster_lib import MB, RESYNCD, check  # noqa: E402
from resyncfs_lib import Scratch  # noqa: E402
from web_lib import TOKEN, WebCluster, digest, login, request, wait_action_result  # noqa: E402

sc = Scratch()
c = WebCluster(sc, "webhttp", ["p", "s1", "s2"], "p")
for n in c.names:
    c.start(n)
c.write("p", 0, os.urandom(2 * MB))
c.write("s1", 5 * MB, os.urandom(1 * MB))
P, S2 = c.ports["p"], c.ports["s2"]


def images():
    return {n: digest(c.image(n)) for n in c.names}


# The page, its files, and the headers of every kind of response.
st, h, page = request(P, "GET", "/")
check(st == 200, "GET / is 200 (%d)" % st)
for path, method, body in [("/", "GET", None), ("/app.js", "GET", None), ("/app.css", "GET", None),
                           ("/api/session", "GET", None), ("/api/status", "GET", None),
                           ("/nope", "GET", None), ("/api/resync", "POST", {"confirm": "webhttp"})]:
    st, h, _ = request(P, method, path, body)
    csp = h.get("content-security-policy", "")
    check("default-src 'none'" in csp and "script-src 'self'" in csp and "unsafe" not in csp and
          "frame-ancestors 'none'" in csp,
          "%s %s (%d) carries the strict CSP: %r" % (method, path, st, csp))
    check(h.get("x-content-type-options") == "nosniff", "%s: nosniff" % path)
text = page.decode()
check(re.search(r"<script(?![^>]*\bsrc=)[^>]*>", text) is None, "no inline <script> in the page")
check("<style" not in text and " style=" not in text and " on" + "click=" not in text,
      "no inline style or handler in the page")
check('<script src="/app.js"' in text, "the page loads /app.js")
for path in ("/app.js", "/app.css"):
    st, h, body = request(P, "GET", path)
    check(st == 200 and len(body) > 1000, "%s is served from the binary (%d, %d bytes)" % (path, st, len(body)))
    check("http://" not in body.decode() and "https://" not in body.decode(),
          "%s fetches nothing from elsewhere" % path)

# Read-only endpoints need a login here; a wrong token is refused.
st, _, _ = request(P, "GET", "/api/status")
check(st == 401, "GET /api/status without login: 401 (%d)" % st)
st, _, _ = request(P, "GET", "/api/events")
check(st == 401, "GET /api/events without login: 401 (%d)" % st)
st, _, body = request(P, "POST", "/api/login", {"token": TOKEN + "x"})
check(st == 403, "a wrong token: 403 (%d %s)" % (st, body))
st, _, body = request(P, "GET", "/", headers={"Host": "evil.example:%d" % P})
check(st == 403, "a Host that is not loopback: 403 (%d %s)" % (st, body))

# POSTs that would start a resync, refused with 403; nothing changes.
before = images()
cookie, csrf = login(P)
cookie2, csrf2 = login(S2)
for port, what, headers in [
        (P, "no login", {}),
        (P, "a cookie that is no session", {"Cookie": "resync_session=" + "0" * 64,
                                            "X-CSRF-Token": csrf}),
        (P, "no CSRF token", {"Cookie": cookie}),
        (P, "a wrong CSRF token", {"Cookie": cookie, "X-CSRF-Token": "f" * 64}),
        (P, "another session's CSRF token", {"Cookie": cookie, "X-CSRF-Token": csrf2}),
        (P, "another origin", {"Cookie": cookie, "X-CSRF-Token": csrf,
                               "Origin": "http://evil.example"}),
        (S2, "no login, on a secondary", {}),
        (S2, "no CSRF token, on a secondary", {"Cookie": cookie2})]:
    for path in ("/api/resync", "/api/verify", "/api/cancel"):
        st, _, body = request(port, "POST", path, {"confirm": "webhttp"}, headers=headers)
        check(st == 403, "POST %s with %s: 403 (%d %s)" % (path, what, st, body))
check(images() == before, "no image changed after the refused POSTs")

# The daemon's own check: a wrong confirm is refused there.
st, _, body = request(P, "POST", "/api/resync", {"confirm": "another"},
                      headers={"Cookie": cookie, "X-CSRF-Token": csrf})
check(st == 202, "a wrong confirm reaches the daemon (%d %s)" % (st, body))
res = wait_action_result(P, cookie, json.loads(body)["action"])
check(not res["ok"] and "confirm" in res["error"], "the daemon refuses a wrong confirm: %s" % res)
st, _, body = request(P, "POST", "/api/resync", {}, headers={"Cookie": cookie, "X-CSRF-Token": csrf})
check(st == 400, "a resync without confirm: 400 (%d %s)" % (st, body))
check(images() == before, "no image changed after the refused confirms")

# With the CSRF token and the cluster's name: forwarded from a secondary.
st, _, body = request(S2, "POST", "/api/resync", {"confirm": "webhttp"},
                      headers={"Cookie": cookie2, "X-CSRF-Token": csrf2})
check(st == 202, "the resync from a secondary's dashboard starts (%d %s)" % (st, body))
res = wait_action_result(S2, cookie2, json.loads(body)["action"])
check(res["ok"] and all(n["result"] == "resynced" for n in res["nodes"]),
      "the forwarded resync succeeded: %s" % res)
after = images()
check(after["s1"] == after["p"] and after["s2"] == after["p"], "the images are identical")
check(after["p"] == before["p"], "the primary's image did not change")

# Logout ends the session.
st, _, _ = request(P, "POST", "/api/logout", {}, headers={"Cookie": cookie, "X-CSRF-Token": csrf})
check(st == 200, "logout")
st, _, _ = request(P, "GET", "/api/status", headers={"Cookie": cookie})
check(st == 401, "the session ended at logout (%d)" % st)
for n in c.names:
    c.stop(n)


def refused(tag, what, pattern, **kw):
    b = WebCluster(sc, tag, ["a"], "a", size=4 * MB, **kw)
    r = subprocess.run([RESYNCD, "--config", b.conf, "--node", "a", "--foreground"],
                       capture_output=True, text=True, timeout=60)
    check(r.returncode != 0, "%s: resyncd refuses to start (exit %d)" % (what, r.returncode))
    check(re.search(pattern, r.stderr), "%s: said why: %s" % (what, r.stderr))
    check(not re.search(r"Sanitizer|runtime error", r.stderr),
          "%s: no sanitizer report: %s" % (what, r.stderr))


# web_public_status = true: the overview without a login, never an action.
pub = WebCluster(sc, "webpub", ["a", "b"], "a", size=4 * MB, extra=["web_public_status = true"])
pub.start("a")
st, _, body = request(pub.ports["a"], "GET", "/api/status")
check(st == 200 and json.loads(body)["status"]["cluster"] == "webpub",
      "web_public_status: the status without a login (%d %s)" % (st, body))
st, _, body = request(pub.ports["a"], "GET", "/api/session")
check(json.loads(body)["logged_in"] is False and "csrf" not in json.loads(body),
      "web_public_status: no session, no CSRF token without a login")
st, _, body = request(pub.ports["a"], "POST", "/api/verify", {})
check(st == 403, "web_public_status: an action without a login is refused (%d)" % st)
pub.stop("a")

refused("webmode", "a token file others may read", r"web_token_file .* group or others",
        token_mode=0o644)
refused("webremote", "web on 0.0.0.0 without web_allow_remote", r"not a loopback address",
        web_host="0.0.0.0")
refused("webnotoken", "web without a token file or public status",
        r"needs web_token_file", token_mode=None)
print("ok")
