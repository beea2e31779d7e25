#!/usr/bin/env python3
"""resync-relay (bench/relay.c), the benchmarks' link: 50 ms round trip
and a 100 MiB/s cap each way. Checks that a round trip through it costs
the two delays (49.5 ms at least, 58 ms at most at the median), that a
stream of 240 MiB arrives at 100 MiB/s within 2 % (measured past the first
24 MiB, the bucket's burst long spent), whole and in order, with its EOF;
its counters (a "stats" line and SIGTERM) count exactly the bytes sent;
a target that refuses closes the client's connection and the relay
lives on; bad options exit 2. About 4 s.

usage: test-relay-c.py RESYNC_RELAY"""
import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time

MIB = 1 << 20
DELAY_MS = 25.0
RATE = 100 * MIB
TOTAL = 240 * MIB
SKIP = 24 * MIB
failures = []


def check(cond, what):
    print("%s: %s" % ("ok" if cond else "FAIL", what))
    if not cond:
        failures.append(what)


def listener():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(8)
    return s


def start_relay(relay, port, *extra):
    p = subprocess.Popen([relay, "--target", "127.0.0.1:%d" % port, "--delay-ms", str(DELAY_MS),
                          "--rate", str(RATE)] + list(extra),
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    line = p.stdout.readline()
    if not line.startswith("listening 127.0.0.1:"):
        sys.exit("relay did not start: %r" % line)
    return p, int(line.split(":")[1])


def echo_server(srv):
    c, _ = srv.accept()
    c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    while True:
        b = c.recv(4096)
        if not b:
            break
        c.sendall(b)
    c.close()


def sink_server(srv, out):
    c, _ = srv.accept()
    buf = bytearray(MIB)
    view = memoryview(buf)
    total, expect, ok = 0, 0, True
    while True:
        n = c.recv_into(view)
        if not n:
            break
        # The stream is bytes i % 251 at offset i: whole and in order.
        if ok and buf[0] != (total % 251):
            ok = False
        total += n
        if "t_skip" not in out and total >= SKIP:
            out["t_skip"], out["at_skip"] = time.monotonic(), total
    out["t_end"], out["total"], out["in_order"] = time.monotonic(), total, ok
    c.close()


def test_rtt(relay):
    srv = listener()
    t = threading.Thread(target=echo_server, args=(srv,), daemon=True)
    t.start()
    p, port = start_relay(relay, srv.getsockname()[1])
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    rtts = []
    for i in range(12):
        t0 = time.monotonic()
        s.sendall(b"x")
        if s.recv(1) != b"x":
            check(False, "echo through the relay")
            break
        rtts.append((time.monotonic() - t0) * 1000.0)
    s.close()
    t.join(10)
    check(not t.is_alive(), "the echo server saw the client's EOF through the relay")
    check(min(rtts) >= 2 * DELAY_MS - 0.5,
          "round trip at least 2 x %g ms: min %.2f ms" % (DELAY_MS, min(rtts)))
    check(statistics.median(rtts) <= 2 * DELAY_MS + 8,
          "round trip median at most %g ms: %.2f ms" % (2 * DELAY_MS + 8, statistics.median(rtts)))
    p.stdin.write("stats\n")
    p.stdin.flush()
    st = json.loads(p.stdout.readline())
    check(st == {"conns": 1, "up": 12, "down": 12}, "counters after the pings: %s" % st)
    p.terminate()
    p.wait(10)
    srv.close()


def test_rate(relay):
    srv = listener()
    out = {}
    t = threading.Thread(target=sink_server, args=(srv, out), daemon=True)
    t.start()
    p, port = start_relay(relay, srv.getsockname()[1])
    s = socket.create_connection(("127.0.0.1", port), timeout=30)
    pattern = bytes(i % 251 for i in range(251 * 4096))  # 251 divides each piece's length
    sent = 0
    while sent < TOTAL:
        n = min(len(pattern), TOTAL - sent)
        s.sendall(pattern[:n] if n < len(pattern) else pattern)
        sent += n
    s.shutdown(socket.SHUT_WR)
    t.join(TOTAL / RATE * 3 + 10)
    check(not t.is_alive(), "the sink saw EOF after the stream")
    check(out.get("total") == TOTAL and out.get("in_order"),
          "the sink got %s of %d bytes, in order: %s" % (out.get("total"), TOTAL,
                                                         out.get("in_order")))
    if "t_skip" in out:
        rate = (out["total"] - out["at_skip"]) / (out["t_end"] - out["t_skip"])
        check(abs(rate / RATE - 1) <= 0.02,
              "rate %.2f MiB/s within 2 %% of %d MiB/s" % (rate / MIB, RATE // MIB))
    s.close()
    p.terminate()
    st = json.loads(p.stdout.readline())
    check(st["up"] == TOTAL and st["down"] == 0 and st["conns"] == 1,
          "counters on SIGTERM: %s" % st)
    check(p.wait(10) == 0, "the relay exits 0 on SIGTERM")
    srv.close()


def test_refused(relay):
    srv = listener()
    port = srv.getsockname()[1]
    srv.close()  # nothing listens there now
    p, rport = start_relay(relay, port)
    s = socket.create_connection(("127.0.0.1", rport), timeout=10)
    try:
        got = s.recv(1)
    except ConnectionResetError:
        got = b""
    check(got == b"", "a refused target closes the client's connection")
    s.close()
    p.stdin.write("stats\n")
    p.stdin.flush()
    st = json.loads(p.stdout.readline())
    check(st["conns"] == 1 and p.poll() is None, "the relay lives on after a refusal: %s" % st)
    p.terminate()
    p.wait(10)


def test_usage(relay):
    for args in ([], ["--target", "127.0.0.1"], ["--target", "127.0.0.1:1", "--rate", "-5"],
                 ["--target", "127.0.0.1:1", "--delay-ms", "x"], ["--bogus", "1"]):
        r = subprocess.run([relay] + args, capture_output=True, text=True, timeout=10)
        check(r.returncode == 2 and "resync-relay" in r.stderr,
              "exit 2 for %s" % " ".join(args or ["no options"]))


def main():
    relay = sys.argv[1]
    t0 = time.monotonic()
    test_usage(relay)
    test_rtt(relay)
    test_refused(relay)
    test_rate(relay)
    print("relay-c: %.1f s, %s" % (time.monotonic() - t0,
                                  "%d failures" % len(failures) if failures else "all ok"))
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
