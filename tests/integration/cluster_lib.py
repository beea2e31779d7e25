"""A resync cluster on loopback for the integration tests: config, key,
images, resyncd daemons started and stopped (cleanly, or with SIGKILL),
resyncctl runs. Every wait has a deadline."""
import json
import os
import signal
import socket
import subprocess

from resyncfs_lib import BUILD, RESYNCCTL, check, fail, info, is_mounted, wait_for  # noqa: F401

RESYNCD = os.path.join(BUILD, "daemon", "resyncd")
MB = 1 << 20
SIZE = 64 * MB


_given = set()


def free_port():
    """A port of 127.0.0.1 free now and never handed out before by this
    process: the kernel may give a port it just closed to the next bind,
    and two nodes of one config must not share one."""
    while True:
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        p = s.getsockname()[1]
        s.close()
        if p not in _given:
            _given.add(p)
            return p


class Cluster:
    def __init__(self, sc, tag, names, primary, size=SIZE):
        self.sc, self.tag, self.names = sc, tag, names
        self.procs = {}
        self.conf = sc.path(tag + ".conf")
        key = sc.path(tag + ".key")
        with open(key, "wb") as f:
            f.write(os.urandom(32))
        os.chmod(key, 0o600)
        lines = ["[cluster]", "name = " + tag, "secret_file = " + key, "block_size = 64K"]
        if primary:
            lines.append("primary = " + primary)
        for n in names:
            img = self.image(n)
            with open(img, "wb") as f:
                f.truncate(size)
            lines += ["", "[node %s]" % n, "address = 127.0.0.1:%d" % free_port(),
                      "volume = " + img, "mount = " + self.mount(n),
                      "control = " + self.control(n)]
        with open(self.conf, "w") as f:
            f.write("\n".join(lines) + "\n")
        sc.mounts.append(self)

    def image(self, n):
        return self.sc.path("%s-%s.img" % (self.tag, n))

    def mount(self, n):
        return self.sc.path("%s-%s.mnt" % (self.tag, n))

    def control(self, n):
        return self.sc.path("%s-%s.sock" % (self.tag, n))

    def file(self, n):
        return os.path.join(self.mount(n), "volume")

    def start(self, n, env=None):
        log = open(self.sc.path("%s-%s.log" % (self.tag, n)), "ab")
        p = subprocess.Popen([RESYNCD, "--config", self.conf, "--node", n, "--foreground"],
                             stdout=log, stderr=log,
                             env=dict(os.environ, **env) if env else None)
        self.procs[n] = p
        self.wait_up(n, p, "resyncd %s up" % n)

    def mounted(self, n):
        return is_mounted(self.mount(n))

    def wait_up(self, n, p, what):
        """Until n's daemon (process p) answers on its control socket and
        its mount serves; fails at once if p exits."""
        def up():
            if p.poll() is not None:
                fail("resyncd %s exited with %d: %s" % (n, p.returncode, self.log(n)))
            # A killed daemon leaves its socket file and a dead mount:
            # only a socket that answers and a mount that serves count.
            try:
                os.stat(self.file(n))
                s = socket.socket(socket.AF_UNIX)
                try:
                    s.connect(self.control(n))
                finally:
                    s.close()
            except OSError:
                return False
            return self.mounted(n)
        wait_for(up, what=what)

    def log(self, n):
        with open(self.sc.path("%s-%s.log" % (self.tag, n)), errors="replace") as f:
            return f.read()

    def stop(self, n):
        p = self.procs.pop(n)
        p.send_signal(signal.SIGTERM)
        rc = p.wait(timeout=30)
        check(rc == 0, "resyncd %s stopped cleanly (exit %d): %s" % (n, rc, self.log(n)))
        check(not is_mounted(self.mount(n)), "%s unmounted at stop" % n)

    def kill9(self, n):
        """SIGKILL: no checkpoint, no unmount, unclean metadata."""
        p = self.procs.pop(n)
        p.kill()
        p.wait(timeout=30)

    def status(self, via=None):
        args = (["--node", via] if via else []) + ["status", "--json"]
        r = self.ctl(*args)
        check(r.returncode == 0, "status exits 0: " + r.stderr)
        return {x["name"]: x for x in json.loads(r.stdout)["nodes"]}

    def ask(self, n, line, timeout=120, lines=None):
        """One request (a dict) on n's control socket: its result (the
        lines before it appended to lines, when given)."""
        s = socket.socket(socket.AF_UNIX)
        s.settimeout(timeout)
        s.connect(self.control(n))
        s.sendall(json.dumps(line).encode() + b"\n")
        buf = b""
        try:
            while True:
                chunk = s.recv(65536)
                check(chunk, "%s answered %s" % (n, line))
                buf += chunk
                while b"\n" in buf:
                    one, buf = buf.split(b"\n", 1)
                    o = json.loads(one)
                    if o.get("type") == "result":
                        return o
                    if lines is not None:
                        lines.append(o)
        finally:
            s.close()

    def kill_and_unmount(self):
        for n, p in list(self.procs.items()):
            p.kill()
            p.wait()
        self.procs = {}
        for n in self.names:
            if is_mounted(self.mount(n)):
                subprocess.call(["fusermount3", "-u", "-z", self.mount(n)])

    def ctl(self, *args, stdin=subprocess.DEVNULL):
        return subprocess.run([RESYNCCTL, "--config", self.conf] + list(args),
                              stdin=stdin, capture_output=True, text=True, timeout=120)

    def write(self, n, off, data):
        fd = os.open(self.file(n), os.O_WRONLY)
        try:
            check(os.pwrite(fd, data, off) == len(data), "write through %s's mount" % n)
            os.fsync(fd)
        finally:
            os.close(fd)

    def same_through_mounts(self, a, b):
        with open(self.file(a), "rb") as fa, open(self.file(b), "rb") as fb:
            while True:
                x, y = fa.read(4 * MB), fb.read(4 * MB)
                if x != y:
                    return False
                if not x:
                    return True


def resync_json(c, *args):
    """resyncctl resync --yes --json ARGS: (exit code, plan, summary)."""
    r = c.ctl("resync", "--yes", "--json", *args)
    lines = [json.loads(x) for x in r.stdout.splitlines()]
    plan = next((x for x in lines if x.get("type") == "plan"), None)
    summary = lines[-1] if lines and lines[-1].get("type") == "summary" else None
    return r.returncode, plan, summary, r.stderr


def resync_ok(c, what, *args):
    r = c.ctl("resync", "--yes", "--json", *args)
    check(r.returncode == 0, "%s: resync --yes exits 0 (%d): %s %s" %
          (what, r.returncode, r.stdout, r.stderr))
    lines = [json.loads(x) for x in r.stdout.splitlines()]
    check(all(isinstance(x, dict) for x in lines), "%s: one JSON object a line" % what)
    summary = lines[-1]
    check(summary.get("type") == "summary", "%s: the last line is the summary" % what)
    for n in summary["nodes"]:
        for k in ("name", "result", "bytes_compared", "bytes_read", "bytes_sent",
                  "bytes_written", "seconds"):
            check(k in n, "%s: summary has %s" % (what, k))
        check(n["result"] == "resynced", "%s: %s resynced: %s" % (what, n["name"], n))
    return {n["name"]: n for n in summary["nodes"]}


def verify(c):
    r = c.ctl("verify", "--json")
    out = json.loads(r.stdout) if r.stdout.strip() else None
    return r.returncode, out, r.stderr


def checkpoint(c, n):
    """The checkpoint offset in node n's metadata on disk (0: none):
    resyncctl info reads it beside the running daemon. A primary's
    progress runs ahead of what a secondary has made durable."""
    cp = info(c.image(n)).get("checkpoint")
    return cp["offset"] if cp else 0
