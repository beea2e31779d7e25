"""Helpers for the resyncfs integration tests: a scratch dir, mounting with
a deadline (polling /proc/self/mountinfo), unmounting in every exit path,
the control socket, and resyncctl info. Tests never sleep and hope."""
import atexit
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

BUILD = os.environ.get("RESYNC_BUILD") or os.path.join(
    os.path.dirname(__file__), "..", "..", "build")
RESYNCFS = os.path.join(BUILD, "tools", "resyncfs")
RESYNCCTL = os.path.join(BUILD, "tools", "resyncctl")
RESYNC_DIFF = os.path.join(BUILD, "tools", "resync-diff")


def fail(msg):
    print("FAIL: " + msg, file=sys.stderr)
    sys.exit(1)


def check(cond, msg):
    if not cond:
        fail(msg)


def wait_for(cond, timeout=20.0, what="condition"):
    deadline = time.monotonic() + timeout
    pause = 0.005
    while not cond():
        if time.monotonic() > deadline:
            if cond():
                return
            fail("timed out waiting for " + (what() if callable(what) else what))
        time.sleep(pause)
        pause = min(pause * 2, 0.1)


def is_mounted(path):
    path = os.path.realpath(path)
    with open("/proc/self/mountinfo") as f:
        for line in f:
            if line.split()[4] == path:
                return True
    return False


class Scratch:
    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="resyncfs-test-")
        self.mounts = []
        atexit.register(self.cleanup)
        signal.signal(signal.SIGTERM, lambda *a: sys.exit(130))

    def path(self, name):
        return os.path.join(self.dir, name)

    def image(self, name, size):
        p = self.path(name)
        with open(p, "wb") as f:
            f.truncate(size)
        return p

    def cleanup(self):
        for m in reversed(self.mounts):
            m.kill_and_unmount()
        shutil.rmtree(self.dir, ignore_errors=True)


class Mount:
    """resyncfs IMAGE MNT -f, started in the background."""

    def __init__(self, scratch, image, options=None, name="mnt", control=True):
        self.scratch = scratch
        self.image = image
        self.mnt = scratch.path(name)
        os.makedirs(self.mnt, exist_ok=True)
        self.control = scratch.path(name + ".ctl") if control else None
        opts = list(options or [])
        if self.control:
            opts.append("control=" + self.control)
        cmd = [RESYNCFS, image, self.mnt, "-f"]
        if opts:
            cmd += ["-o", ",".join(opts)]
        self.proc = subprocess.Popen(cmd, stderr=subprocess.PIPE)
        scratch.mounts.append(self)
        wait_for(lambda: is_mounted(self.mnt) or self.proc.poll() is not None,
                 what="the mount of " + self.mnt)
        if self.proc.poll() is not None:
            fail("resyncfs exited early: " + self.proc.stderr.read().decode())
        if self.control:
            wait_for(lambda: os.path.exists(self.control), what="the control socket")
        self.file = os.path.join(self.mnt, "volume")

    def unmount(self):
        """Clean unmount; resyncfs must exit 0."""
        subprocess.run(["fusermount3", "-u", self.mnt], check=True)
        rc = self.proc.wait(timeout=30)
        err = self.proc.stderr.read().decode()
        check(rc == 0, "resyncfs exited %d: %s" % (rc, err))
        self.scratch.mounts.remove(self)

    def terminate(self, sig=signal.SIGTERM):
        self.proc.send_signal(sig)
        rc = self.proc.wait(timeout=30)
        check(rc == 0, "resyncfs exited %d after signal %d: %s"
              % (rc, sig, self.proc.stderr.read().decode()))
        check(not is_mounted(self.mnt), "still mounted after signal")
        self.scratch.mounts.remove(self)

    def kill9(self):
        self.proc.kill()
        self.proc.wait(timeout=30)
        subprocess.run(["umount", "-l", self.mnt], stderr=subprocess.DEVNULL)
        wait_for(lambda: not is_mounted(self.mnt), what="the unmount after kill -9")
        self.scratch.mounts.remove(self)

    def kill_and_unmount(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if is_mounted(self.mnt):
            subprocess.run(["umount", "-l", self.mnt], stderr=subprocess.DEVNULL)

    def ctl(self, line):
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(60)
            s.connect(self.control)
            s.sendall((line + "\n").encode())
            buf = b""
            while not buf.endswith(b"\n"):
                d = s.recv(4096)
                if not d:
                    break
                buf += d
        return buf.decode().strip()


def info(image, meta=None):
    cmd = [RESYNCCTL, "info", "--volume", image, "--json"]
    if meta:
        cmd += ["--meta", meta]
    out = subprocess.run(cmd, check=True, stdout=subprocess.PIPE).stdout
    return json.loads(out)


def blocks_of(writes, bs, size):
    """The set of blocks touched by writes [(off, len)]."""
    s = set()
    for off, n in writes:
        if n:
            s.update(range(off // bs, (off + n - 1) // bs + 1))
    return s


def ranges_to_blocks(ranges, bs):
    s = set()
    for off, n in ranges:
        check(off % bs == 0, "dirty range %d+%d not block aligned" % (off, n))
        s.update(range(off // bs, (off + n + bs - 1) // bs))
    return s
