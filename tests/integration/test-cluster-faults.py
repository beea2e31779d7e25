#!/usr/bin/env python3
"""Faults on the way to a secondary, injected here: a relay between the
primary and n2 that cuts the connection part-way through the transfer, then
one that flips a byte of the stream; and a full disk under n3's image.
Each time the resync names the node and the reason, the other secondary
is not held back, the faulty one is left Inconsistent with what it had, and
once the fault is gone the next resync completes (resuming where the cut
one stopped) and every image is byte-identical to the primary's."""
import json
import os
import socket
import subprocess
import sys
import threading

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cluster_lib import MB, Cluster, check, free_port, resync_json, resync_ok, verify  # noqa: E402
from resyncfs_lib import Scratch, wait_for  # noqa: E402

VOLUME = 64 * MB


class Relay:
    """TCP relay from a port to n2's real address. mode: None (pass
    through), ("cut", N) closes both sides once N bytes went from the
    primary to n2, ("flip", N) inverts the byte at offset N of that
    direction. Every connection is counted."""

    def __init__(self, target):
        self.target = target
        self.mode = None
        self.conns = 0
        self.srv = socket.socket()
        self.srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.srv.bind(("127.0.0.1", 0))
        self.srv.listen(16)
        self.port = self.srv.getsockname()[1]
        threading.Thread(target=self.accept, daemon=True).start()

    def accept(self):
        while True:
            a, _ = self.srv.accept()
            self.conns += 1
            try:
                b = socket.create_connection(self.target)
            except OSError:
                a.close()
                continue
            mode = self.mode
            threading.Thread(target=self.pump, args=(a, b, mode), daemon=True).start()
            threading.Thread(target=self.pump, args=(b, a, None), daemon=True).start()

    @staticmethod
    def pump(src, dst, mode):
        done = 0
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if mode and mode[0] == "cut" and done + len(data) >= mode[1]:
                    break
                if mode and mode[0] == "flip" and done <= mode[1] < done + len(data):
                    i = mode[1] - done
                    data = data[:i] + bytes([data[i] ^ 0xFF]) + data[i + 1:]
                dst.sendall(data)
                done += len(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()


sc = Scratch()
c = Cluster(sc, "faults", ["n1", "n2", "n3"], "n1", size=VOLUME)
with open(c.conf) as f:
    conf = f.read()
n2_addr = next(x.split("=")[1].strip() for x in conf.split("[node n2]")[1].splitlines()
               if x.startswith("address"))
host, port = n2_addr.rsplit(":", 1)
relay = Relay((host, int(port)))
# The primary (and resyncctl) reach n2 through the relay; n2 listens at
# its own address.
via = sc.path("via-relay.conf")
with open(via, "w") as f:
    f.write(conf.replace("address = " + n2_addr, "address = 127.0.0.1:%d" % relay.port))
own = c.conf
c.conf = via
c.start("n1")
c.start("n3")
c.conf = own
c.start("n2")
c.conf = via

# n3's image on a 40 MiB tmpfs (the image a link to it): room for less
# than the data the primary will have.
small = sc.path("small")
os.makedirs(small)
subprocess.run(["mount", "-t", "tmpfs", "-o", "size=40M", "tmpfs", small], check=True)
try:
    c.stop("n3")
    os.unlink(c.image("n3"))
    with open(os.path.join(small, "n3.img"), "wb") as f:
        f.truncate(VOLUME)  # blank and sparse, as the one it replaces
    os.symlink(os.path.join(small, "n3.img"), c.image("n3"))
    c.start("n3")

    data = {off: os.urandom(MB) for off in range(0, 48 * MB, 2 * MB)}
    for off, d in data.items():
        c.write("n1", off, d)
    # ~ 24 MiB differ on each secondary; n3 has room for about 40.
    resync_ok(c, "first resync")  # into n3's 40 MiB: fits (sparse)
    for off in range(1 * MB, 48 * MB, 2 * MB):
        c.write("n1", off, os.urandom(MB))  # 24 MiB more: n3 needs 48 MiB

    # ---- the connection to n2 cut after 20 MiB; n3's disk full ----
    relay.mode = ("cut", 20 * MB)
    rc, plan, summary, err = resync_json(c)
    check(rc != 0 and summary, "a resync with faults exits non-zero with a summary: %s" % err)
    res = {x["name"]: x for x in summary["nodes"]}
    check(res["n2"]["result"] == "failed" and "n2" in res["n2"].get("error", ""),
          "the cut connection names n2: %s" % res["n2"])
    check(res["n3"]["result"] == "failed" and "space" in res["n3"].get("error", "").lower(),
          "the full disk names n3 and says so: %s" % res["n3"])
    st = c.status()
    check(st["n1"]["state"] == "UpToDate", "the primary is untouched: %s" % st["n1"])
    check(st["n2"]["state"] == "Inconsistent" and st["n3"]["state"] == "Inconsistent",
          "the faulty secondaries stay Inconsistent: %s" % st)
    check("space" in c.log("n3").lower(), "n3 logs the full disk")
    cut_sent = res["n2"]["bytes_sent"]

    # ---- a byte flipped in the stream to n2: TLS refuses the record ----
    relay.mode = ("flip", 6 * MB)
    rc, plan, summary, err = resync_json(c, "--node", "n2")
    res = {x["name"]: x for x in summary["nodes"]} if summary else {}
    check(rc != 0 and res.get("n2", {}).get("result") == "failed",
          "a corrupted stream fails n2's resync (%d): %s %s" % (rc, summary, err))
    check(c.status()["n2"]["state"] == "Inconsistent", "n2 still Inconsistent after it")

    # ---- the faults gone: both complete; n2 resumes ----
    relay.mode = None
    subprocess.run(["mount", "-o", "remount,size=100M", small], check=True)
    stats = resync_ok(c, "after the faults")
    # n2 lacked 24 MiB; the cut run had checkpointed 16 MiB of it.
    print("n2: %d bytes sent before the cut, %d written after" %
          (cut_sent, stats["n2"]["bytes_written"]))
    check(cut_sent >= 16 * MB and stats["n2"]["bytes_written"] <= 24 * MB - 16 * MB,
          "n2 resumes past its checkpoint (%d bytes written; %d were sent before the cut)" %
          (stats["n2"]["bytes_written"], cut_sent))
    check(verify(c)[0] == 0, "verify exits 0 after the faults are gone")
    for n in ("n2", "n3"):
        c.stop(n)
    c.stop("n1")
    for n in ("n2", "n3"):
        with open(c.image("n1"), "rb") as a, open(c.image(n), "rb") as b:
            check(a.read() == b.read(), "%s byte-identical to the primary" % n)
    check(relay.conns > 0, "the primary reached n2 through the relay")
finally:
    c.kill_and_unmount()
    subprocess.run(["umount", "-l", small])
print("ok: a cut connection, a corrupted stream and a full disk: named, resumed, identical")
