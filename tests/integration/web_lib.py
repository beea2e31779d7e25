"""A resync cluster whose nodes serve the web dashboard (`web`), for the
dashboard's tests: the config with web ports and a token file, plain HTTP
helpers (no browser), the event stream read with a deadline, image
digests."""
import hashlib
import http.client
import json
import os
import time

from cluster_lib import MB, Cluster, check, free_port  # noqa: F401

TOKEN = "resync-web-test-" + os.urandom(12).hex()


class WebCluster(Cluster):
    """Cluster with `web = 127.0.0.1:PORT` on every node and the cluster
    keys given in extra (web_token_file is added, mode 0600, unless
    token_mode is None)."""

    def __init__(self, sc, tag, names, primary, size=16 * MB, extra=None, token_mode=0o600,
                 web_host="127.0.0.1"):
        super().__init__(sc, tag, names, primary, size=size)
        self.ports = {n: free_port() for n in names}
        self.token_file = sc.path(tag + ".token")
        cluster_keys = list(extra or [])
        if token_mode is not None:
            with open(self.token_file, "w") as f:
                f.write(TOKEN + "\n")
            os.chmod(self.token_file, token_mode)
            cluster_keys.append("web_token_file = " + self.token_file)
        out = []
        with open(self.conf) as f:
            lines = f.read().splitlines()
        node = None
        for line in lines:
            out.append(line)
            if line == "[cluster]":
                out += cluster_keys
            if line.startswith("[node "):
                node = line[len("[node "):-1]
            if line.startswith("control = "):
                out.append("web = %s:%d" % (web_host, self.ports[node]))
        with open(self.conf, "w") as f:
            f.write("\n".join(out) + "\n")

    def url(self, n):
        return "http://127.0.0.1:%d/" % self.ports[n]


def request(port, method, path, body=None, headers=None, timeout=60):
    """One HTTP request: (status, headers dict lower-cased, body bytes)."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    h = {"Host": "127.0.0.1:%d" % port}
    h.update(headers or {})
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        h.setdefault("Content-Type", "application/json")
    c.request(method, path, body=data, headers=h)
    r = c.getresponse()
    out = r.read()
    hdrs = {k.lower(): v for k, v in r.getheaders()}
    c.close()
    return r.status, hdrs, out


def login(port):
    """Log in with TOKEN: (cookie header value, csrf token)."""
    st, h, body = request(port, "POST", "/api/login", {"token": TOKEN})
    check(st == 200, "login with the token: 200 (%d %s)" % (st, body))
    cookie = h.get("set-cookie", "")
    check("HttpOnly" in cookie and "SameSite=Strict" in cookie,
          "the session cookie is HttpOnly and SameSite=Strict: " + cookie)
    return cookie.split(";", 1)[0], json.loads(body)["csrf"]


def wait_action_result(port, cookie, action_id, timeout=120):
    """Read /api/events until the result line of the dashboard's action
    action_id; returns it."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    c.request("GET", "/api/events", headers={"Host": "127.0.0.1:%d" % port, "Cookie": cookie})
    r = c.getresponse()
    check(r.status == 200, "the event stream opens (%d)" % r.status)
    check(r.getheader("Content-Type", "").startswith("text/event-stream"),
          "the event stream is text/event-stream")
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            line = r.fp.readline()
            if not line:
                break
            if not line.startswith(b"data: "):
                continue
            m = json.loads(line[6:])
            if (m.get("type") == "action" and m.get("id") == action_id and
                    m.get("line", {}).get("type") == "result"):
                return m["line"]
    finally:
        c.close()
    check(False, "the result of action %d on the event stream" % action_id)


def digest(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(4 * MB)
            if not b:
                return h.hexdigest()
            h.update(b)
