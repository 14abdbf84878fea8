"""Structured protocol fuzzer for fmserve (run by test_server_fuzz.c).

usage: fuzz_protocol.py PORT SECONDS SEED [ADMIN_TOKEN]

Opens many short connections and sends, for SECONDS, a seeded mix of:
well-formed MessagePack-RPC frames whose fields have the wrong types,
sizes and values (every method, including the admin ones after a correct
or a wrong `auth`); valid predict frames with bytes flipped; frames cut
short; random bytes. Replies are read now and then, not checked: the test
around it checks that the server stays up and correct. Prints a summary
line; exits 0 unless the server stopped accepting connections.
"""
import os
import random
import socket
import sys
import time

import msgpack

port, seconds, seed = int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])
admin_token = sys.argv[4] if len(sys.argv) > 4 else None
R = random.Random(seed)
METHODS = ["predict", "health", "ready", "models", "stats", "feedback", "auth", "set_split", "nope", ""]
KEYS = ["images", "version", "key", "deadline_ms", "probs", "request_id", "label", "ratio", "token", "x"]


def rbytes(n):
    return bytes(R.getrandbits(8) for _ in range(n)) if n < 64 else os.urandom(n)


def value(depth=0):
    gens = [
        lambda: None,
        lambda: R.choice([True, False]),
        lambda: R.randrange(-2**63, 2**64),
        lambda: R.random() * 1e6 - 5e5,
        lambda: rbytes(R.choice([0, 1, 783, 784, 785, 1568, R.randrange(4000)])),
        lambda: "".join(chr(R.randrange(32, 0x2000)) for _ in range(R.randrange(20))),
        lambda: R.choice(["stable", "canary", "v1", "v2", "v9", ""]),
        lambda: R.choice([0, -1, 1, 2**32, 2**63 - 1, -2**63, 1e308, float("nan"), float("inf"), -0.0, 0.5]),
        lambda: [rbytes(784) for _ in range(R.randrange(3))],
        lambda: {"images": rbytes(784 * R.randrange(1, 5)), "version": R.choice(["stable", "canary", "v2", 1, None]),
                 "probs": R.choice([True, 1, "x"]), "deadline_ms": R.choice([0, 1, -5, 10**9, "x"])},
    ]
    if depth < 3:
        gens += [
            lambda: [value(depth + 1) for _ in range(R.randrange(4))],
            lambda: {(R.choice(KEYS) if R.random() < 0.8 else R.randrange(5)): value(depth + 1)
                     for _ in range(R.randrange(5))},
        ]
    return R.choice(gens)()


def frame():
    k = R.randrange(10)
    if k < 6:
        method = R.choice(METHODS)
        params = [value()] if R.random() < 0.8 else value()
        if method == "auth" and admin_token and R.random() < 0.5:
            params = [admin_token]
        msg = [R.choice([0, 0, 0, 1, 2, 3, -1, None]), R.choice([R.randrange(2**32), -1, 2**40, "id", None]),
               method, params]
        if R.random() < 0.2:
            msg = msg[:R.randrange(5)]
        if R.random() < 0.1:
            msg.append(value())
        return msgpack.packb(msg, use_bin_type=True)
    if k < 8:
        b = bytearray(msgpack.packb([0, 1, "predict", [{"images": rbytes(784 * R.randrange(1, 9))}]],
                                    use_bin_type=True))
        for _ in range(R.randrange(1, 6)):
            b[R.randrange(len(b))] = R.randrange(256)
        return bytes(b)
    return rbytes(R.randrange(1, 300))


deadline = time.monotonic() + seconds
frames = connections = refused = 0
while time.monotonic() < deadline:
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=0.05)
    except OSError:
        refused += 1
        if refused > 50:
            print(f"fuzz: the server stopped accepting connections after {frames} frames")
            sys.exit(1)
        time.sleep(0.01)
        continue
    connections += 1
    try:
        for _ in range(R.randrange(1, 20)):
            b = frame()
            if R.random() < 0.1:
                b = b[:R.randrange(len(b) + 1)]
            s.sendall(b)
            frames += 1
            if R.random() < 0.3:
                try:
                    s.recv(65536)
                except socket.timeout:
                    pass
        if R.random() < 0.5:
            s.shutdown(socket.SHUT_WR)
    except OSError:
        pass  # the server closed a connection it had to close
    finally:
        s.close()
print(f"fuzz: {frames} frames on {connections} connections in {seconds:.0f} s (seed {seed})")
