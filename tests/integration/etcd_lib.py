"""A real etcd for the integration tests (issue 14): one member or a
cluster of three, on free loopback ports, in a temporary data folder
under the test's scratch, stopped at the end. Keys are read and written
through etcd's v3 JSON gateway (as resyncd speaks to it). A machine
without etcd fails the test: tools/deps installs etcd-server."""
import base64
import json
import os
import shutil
import signal
import subprocess
import urllib.request

from cluster_lib import free_port
from resyncfs_lib import check, fail, wait_for  # noqa: F401

ETCD = shutil.which("etcd") or "/usr/bin/etcd"


def b64(s):
    return base64.b64encode(s.encode()).decode()


class Etcd:
    def __init__(self, sc, tag="etcd", members=1):
        if not os.access(ETCD, os.X_OK):
            fail("etcd is not installed (tools/deps installs etcd-server): the etcd tests "
                 "need a real one")
        self.sc, self.tag = sc, tag
        self.names = ["%s%d" % (tag, i) for i in range(members)]
        self.client = {n: free_port() for n in self.names}
        self.peer = {n: free_port() for n in self.names}
        self.procs = {}
        sc.mounts.append(self)
        for n in self.names:
            self.start(n, new=True)
        self.wait_healthy()

    def url(self, n):
        return "http://127.0.0.1:%d" % self.client[n]

    def endpoints(self):
        return ",".join(self.url(n) for n in self.names)

    def log(self, n):
        with open(self.sc.path(n + ".log"), errors="replace") as f:
            return f.read()

    def start(self, n, new=False):
        cluster = ",".join("%s=http://127.0.0.1:%d" % (m, self.peer[m]) for m in self.names)
        log = open(self.sc.path(n + ".log"), "ab")
        # Short heartbeats and elections: a member lost mid-test is
        # replaced within about a second.
        self.procs[n] = subprocess.Popen(
            [ETCD, "--name", n, "--data-dir", self.sc.path(n + ".data"),
             "--listen-client-urls", self.url(n), "--advertise-client-urls", self.url(n),
             "--listen-peer-urls", "http://127.0.0.1:%d" % self.peer[n],
             "--initial-advertise-peer-urls", "http://127.0.0.1:%d" % self.peer[n],
             "--initial-cluster", cluster, "--initial-cluster-token", self.tag,
             "--initial-cluster-state", "new",
             "--heartbeat-interval", "50", "--election-timeout", "500"],
            stdout=log, stderr=log)

    def healthy(self, n):
        try:
            with urllib.request.urlopen(self.url(n) + "/health", timeout=2) as r:
                return json.loads(r.read()).get("health") == "true"
        except (OSError, ValueError):
            return False

    def wait_healthy(self):
        for n in self.procs:
            p = self.procs[n]
            wait_for(lambda: p.poll() is None and self.healthy(n) or p.poll() is not None,
                     timeout=30, what="etcd %s healthy" % n)
            if p.poll() is not None:
                fail("etcd %s exited with %d: %s" % (n, p.returncode, self.log(n)))

    def kill(self, n):
        p = self.procs.pop(n)
        p.kill()
        p.wait(timeout=30)

    def stop(self, n=None):
        for m in [n] if n else list(self.procs):
            p = self.procs.pop(m)
            p.send_signal(signal.SIGTERM)
            p.wait(timeout=30)

    def kill_and_unmount(self):
        for p in self.procs.values():
            p.kill()
            p.wait()
        self.procs = {}

    def call(self, path, body):
        last = None
        for n in self.procs:
            req = urllib.request.Request(self.url(n) + path, data=json.dumps(body).encode(),
                                         headers={"Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(req, timeout=5) as r:
                    return json.loads(r.read())
            except OSError as e:
                last = e
        fail("no etcd member answered %s: %s" % (path, last))

    def put(self, key, value):
        self.call("/v3/kv/put", {"key": b64(key), "value": b64(value)})

    def get_kv(self, key):
        kvs = self.call("/v3/kv/range", {"key": b64(key)}).get("kvs") or []
        return kvs[0] if kvs else None

    def get(self, key):
        kv = self.get_kv(key)
        return base64.b64decode(kv.get("value", "")).decode() if kv else None


def etcd_section(e, tag, ttl="4s", extra=()):
    """The [etcd] section of a test cluster's config."""
    return "\n".join(["", "[etcd]", "endpoints = " + e.endpoints(), "lock_ttl = " + ttl,
                      "timeout = 2s"] + list(extra)) + "\n"


def leader_key(tag):
    return "/service/%s/leader" % tag


def lock_key(tag):
    return "/resync/%s/lock" % tag


SANITIZER = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:")


def sanitizer_clean(c):
    """No daemon of cluster c logged a sanitizer report."""
    for n in c.names:
        text = c.log(n)
        for s in SANITIZER:
            check(s not in text, "%s's log has no sanitizer report (%s):\n%s" % (n, s, text))
