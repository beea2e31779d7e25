#!/usr/bin/env python3
"""mutate.py SEED SIZE BASIS NEW [KIND...]: write a random BASIS of SIZE
bytes and NEW, BASIS changed by the KINDs in turn (insert, delete,
overwrite, move, swap; default all of them), deterministic for SEED."""
import random
import sys


def main():
    seed, size, basis, new = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
    kinds = sys.argv[5:] or ["insert", "delete", "overwrite", "move", "swap"]
    rnd = random.Random(seed)
    b = bytearray(rnd.randbytes(size))
    with open(basis, "wb") as f:
        f.write(b)
    d = bytearray(b)
    for kind in kinds:
        n = len(d)
        span = max(1, n // 50)
        if kind == "insert":
            at = rnd.randrange(n + 1)
            d[at:at] = rnd.randbytes(rnd.randrange(1, span + 2))
        elif kind == "delete" and n:
            at = rnd.randrange(n)
            del d[at:at + rnd.randrange(1, span + 1)]
        elif kind == "overwrite" and n:
            for _ in range(5):
                at = rnd.randrange(n)
                ln = min(n - at, rnd.randrange(1, span + 1))
                d[at:at + ln] = rnd.randbytes(ln)
        elif kind == "move" and n > 2:
            # a range cut out and put back elsewhere (copies overlap output)
            at = rnd.randrange(n)
            ln = min(n - at, rnd.randrange(1, max(2, n // 4)))
            piece = d[at:at + ln]
            del d[at:at + ln]
            to = rnd.randrange(len(d) + 1)
            d[to:to] = piece
        elif kind == "swap" and n > 2:
            # the two halves exchanged: a cycle of copies
            h = rnd.randrange(1, n)
            d = d[h:] + d[:h]
    with open(new, "wb") as f:
        f.write(d)


main()
