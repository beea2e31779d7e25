#!/usr/bin/env python3
"""Metadata crash consistency (issue 13, item 2), as ALICE and CrashMonkey
do it: a secondary's daemon runs a resync (--undo: the journal too) under
an LD_PRELOAD recorder (tests/lib/crashrec.c) of every write, flush,
truncation, rename and unlink that reaches its image, its metadata, its
tree cache, its proof leaves, its undo journal and their temporary files,
from its start to its clean stop; three runs: a quick resync --undo of a
Diverged secondary, a full one after an offline edit, and a verify then a
clean stop (the tree cache). Then every crash state is rebuilt onto
copies of the starting files:

  - every prefix of the recorded operations that ends at a flush;
  - every prefix ending at a flush with the writes not yet flushed to
    their own file lost (the page cache gone, renames kept);
  - every prefix ending just before a write, plus that write torn (its
    first half, cut at a 512-byte boundary);

and opened with the engine's metadata loader (resync-test-crashcheck,
read-only: an unclean stop's activity log counts as dirty): never
UpToDate under the primary's generation over different data, never a
clean bit over a block that differs from its generation's data, never a
checkpoint over data that differs below it. Prints the number of
persistence points checked. The secondary runs with RESYNC_IO=sync (a
recorder cannot see io_uring's writes)."""
import json
import os
import shutil
import struct
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cluster_lib import BUILD, MB, Cluster, check, fail, resync_json  # noqa: E402
from resyncfs_lib import Scratch  # noqa: E402

T0 = time.monotonic()
SIZE = 4 * MB
BLOCK = 64 << 10
RECORDER = os.path.join(BUILD, "tests", "lib", "libresync-crashrec.so")
CHECKER = os.path.join(BUILD, "tests", "lib", "resync-test-crashcheck")
OPEN, WRITE, FLUSH, TRUNC, RENAME, UNLINK, ZERO = range(1, 8)


def read_log(path):
    ops, names = [], {}
    with open(path, "rb") as f:
        data = f.read()
    pos = 0
    while pos < len(data):
        op, fi, off, ln = struct.unpack_from("<BIQQ", data, pos)
        pos += 21
        body = b""
        if op in (OPEN, WRITE):
            body = data[pos:pos + ln]
            pos += ln
        if op == OPEN:
            names[fi] = body.decode()
        else:
            ops.append((op, fi, off, ln, body))
    return ops, names


class State:
    """The files under the prefix, as bytearrays by name."""

    def __init__(self, files, alias=None):
        self.files = {k: bytearray(v) for k, v in files.items()}
        # A file renamed keeps its open descriptors: their later writes
        # go to the new name.
        self.alias = dict(alias or {})

    def apply(self, op, names, prefix_dir):
        kind, fi, off, ln, body = op
        name = os.path.relpath(self.alias.get(fi, names[fi]), prefix_dir)
        if kind == WRITE or kind == ZERO:
            b = self.files.setdefault(name, bytearray())
            if len(b) < off:
                b.extend(bytes(off - len(b)))
            data = body if kind == WRITE else bytes(ln)
            b[off:off + len(data)] = data
        elif kind == TRUNC:
            b = self.files.setdefault(name, bytearray())
            del b[ln:]
            b.extend(bytes(ln - len(b)))
        elif kind == RENAME:
            to = os.path.relpath(names[off], prefix_dir)
            self.alias[fi] = names[off]
            if name in self.files:
                self.files[to] = self.files.pop(name)
        elif kind == UNLINK:
            self.files.pop(name, None)

    def write(self, d):
        shutil.rmtree(d, ignore_errors=True)
        os.makedirs(d)
        for k, v in self.files.items():
            with open(os.path.join(d, k), "wb") as f:
                f.write(v)


def torn(op):
    kind, fi, off, ln, body = op
    half = (len(body) // 2) // 512 * 512 if len(body) >= 1024 else len(body) // 2
    return (kind, fi, off, half, body[:half])


def durable_only(ops, k):
    """ops[0, k) without the writes not yet flushed to their own file at k
    (the page cache lost; renames and unlinks kept, in order)."""
    last_flush = {}
    for i in range(k):
        if ops[i][0] == FLUSH:
            last_flush[ops[i][1]] = i
    return [o for i, o in enumerate(ops[:k])
            if o[0] not in (WRITE, ZERO, TRUNC) or last_flush.get(o[1], -1) > i]


class Recorded:
    """One resync of the secondary s recorded from its start to its stop."""

    def __init__(self, sc, c, tag, args, before_start):
        img = c.image("s")
        self.prefix_dir = os.path.dirname(img)
        self.base = os.path.basename(img)
        self.start_gen = c.status()["s"]["generation"]
        c.stop("s")
        before_start()
        self.start = {}
        for k in os.listdir(self.prefix_dir):
            if k.startswith(self.base) and not k.endswith(".old"):
                with open(os.path.join(self.prefix_dir, k), "rb") as f:
                    self.start[k] = f.read()
        check(self.base + ".resync-meta" in self.start, "%s: the metadata exists" % tag)
        log = sc.path(tag + ".log")
        # (A sanitizer build's runtime would refuse to come second.)
        asan = os.environ.get("ASAN_OPTIONS", "")
        c.start("s", env={"LD_PRELOAD": RECORDER, "RESYNC_CRASHREC_LOG": log,
                          "RESYNC_CRASHREC_PREFIX": img, "RESYNC_IO": "sync",
                          "ASAN_OPTIONS": (asan + ":" if asan else "") + "verify_asan_link_order=0"})
        if args == ["verify"]:
            r = c.ctl("verify", "--json")
            check(r.returncode == 0, "%s: the recorded verify: %s %s" % (tag, r.stdout, r.stderr))
            self.mode = "verify, no"
        else:
            rc, plan, summary, err = resync_json(c, *args)
            check(rc == 0, "%s: the recorded resync: %s %s" % (tag, summary, err))
            self.mode = summary["nodes"][0]["mode"]
        self.target_gen = c.status()["s"]["generation"]
        c.stop("s")
        c.start("s")
        check((self.target_gen == self.start_gen) == (args == ["verify"]),
              "%s: s took the primary's generation (a resync), or kept its own (a verify)" % tag)
        with open(c.image("p"), "rb") as f:
            self.primary = f.read()
        with open(img, "rb") as f:
            check(f.read() == self.primary, "%s: s identical after the recorded resync" % tag)
        self.ops, self.names = read_log(log)
        self.tag = tag

    def files(self):
        return sorted({os.path.basename(self.names[o[1]]) for o in self.ops})

    def kinds(self):
        k = {}
        for o in self.ops:
            k[o[0]] = k.get(o[0], 0) + 1
        return k


def check_states(sc, rec):
    """Every crash state of rec through the checker: (checked by model,
    violations, states seen)."""
    ops, names, base = rec.ops, rec.names, rec.base
    prim, startimg = sc.path("primary.img"), sc.path("start.img")
    with open(prim, "wb") as f:
        f.write(rec.primary)
    with open(startimg, "wb") as f:
        f.write(rec.start[base])
    kinds = rec.kinds()
    check(kinds.get(FLUSH, 0) > 0 and kinds.get(WRITE, 0) > 0,
          "%s: the recorder saw writes and flushes: %s" % (rec.tag, kinds))
    check(any(f.endswith(".resync-meta") for f in rec.files()), "%s: metadata recorded" % rec.tag)
    # (model, label, ops to apply in order)
    points = []
    for i, o in enumerate(ops):
        if o[0] == FLUSH:
            points.append(("prefix", "after flush #%d" % i, ops[:i + 1]))
            points.append(("lost", "flush #%d, unflushed writes lost" % i, durable_only(ops, i + 1)))
        elif o[0] == WRITE and len(o[4]) > 1:
            points.append(("torn", "write #%d torn" % i, ops[:i] + [torn(o)]))
    points.append(("prefix", "the end", ops))
    d = sc.path("state")
    checked, violations, states = {}, 0, {}
    for model, label, seq in points:
        st = State(rec.start)
        for o in seq:
            st.apply(o, names, rec.prefix_dir)
        st.write(d)
        r = subprocess.run([CHECKER, os.path.join(d, base), os.path.join(d, base + ".resync-meta"),
                            prim, startimg, rec.target_gen, rec.start_gen],
                           capture_output=True, text=True, timeout=60)
        if r.returncode == 2:
            fail("%s, %s: the checker cannot read the state: %s %s" %
                 (rec.tag, label, r.stdout, r.stderr))
        out = json.loads(r.stdout)
        key = (out.get("state"), out.get("generation"), out.get("trusted"),
               out.get("checkpoint") is not None)
        states[key] = states.get(key, 0) + 1
        checked[model] = checked.get(model, 0) + 1
        if out["violations"]:
            violations += 1
            print("VIOLATION %s, %s: %s" % (rec.tag, label, out))
    return checked, violations, states


def main():
    for p in (RECORDER, CHECKER):
        check(os.path.exists(p), "built: " + p)
    sc = Scratch()
    c = Cluster(sc, "mc", ["p", "s"], "p", size=SIZE)
    with open(c.conf) as f:
        conf = f.read()
    with open(c.conf, "w") as f:
        f.write(conf.replace("[cluster]\n", "[cluster]\nundo_max_bytes = 8M\nproof = true\n", 1))
    for n in c.names:
        c.start(n)
    rnd = open("/dev/urandom", "rb")
    for i in range(0, SIZE, MB):
        c.write("p", i, rnd.read(MB))
    rc, plan, summary, err = resync_json(c)
    check(rc == 0, "the first resync: %s %s" % (summary, err))

    recs = []
    # A: s diverged (its own writes: Diverged, an undo journal), the
    # primary changed a quarter of its blocks: a quick resync --undo.
    for i in range(5):
        c.write("s", (i * 13 % 64) * BLOCK + 4096, rnd.read(8192))
    for i in range(0, SIZE, 4 * BLOCK):
        c.write("p", i, rnd.read(BLOCK))
    recs.append(Recorded(sc, c, "quick-undo", ["--undo"], lambda: None))

    # B: s's image edited while s was stopped (its bitmap untrusted): a
    # full compare through the hash tree (kept in the tree cache at the
    # stop), the primary's new blocks too.
    for i in range(BLOCK, SIZE, 5 * BLOCK):
        c.write("p", i, rnd.read(BLOCK))

    def edit():
        with open(c.image("s"), "r+b") as f:
            for i in range(3):
                f.seek((7 + 17 * i) * BLOCK)
                f.write(rnd.read(BLOCK))
    recs.append(Recorded(sc, c, "full", [], edit))

    # C: a verify of the identical s, then its clean stop: its tree
    # cache (the hashes of the unchanged image) written and renamed.
    recs.append(Recorded(sc, c, "verify", ["verify"], lambda: None))
    c.kill_and_unmount()

    total, bad = 0, 0
    for rec in recs:
        checked, violations, states = check_states(sc, rec)
        k = rec.kinds()
        print("%s (%s resync): recorded %s over %s" % (
            rec.tag, rec.mode, ", ".join("%s %d" % (n, k.get(x, 0)) for x, n in
                                         ((WRITE, "writes"), (FLUSH, "flushes"), (TRUNC, "truncations"),
                                          (RENAME, "renames"), (UNLINK, "unlinks"), (ZERO, "holes"))),
            ", ".join(rec.files())))
        for key, v in sorted(states.items(), key=lambda x: -x[1]):
            print("  %4d states: %s, generation %s, bitmap %s%s" %
                  (v, key[0], key[1], "trusted" if key[2] else "untrusted", ", checkpoint" if key[3] else ""))
        print("  checked: %s; violations %d" %
              (", ".join("%s %d" % x for x in sorted(checked.items())), violations))
        total += sum(checked.values())
        bad += violations
    print("persistence points checked: %d, violations %d, %.1f s" % (total, bad, time.monotonic() - T0))
    check(bad == 0, "no crash state claims more than its data")


main()
