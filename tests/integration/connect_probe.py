"""Make connects and report where the balancer put each socket.

UDP connect() runs the cgroup connect hooks without sending anything, so
thousands of decisions take well under a second; --proto tcp makes
non-blocking TCP connects (the hook runs inside connect()). For each socket it reads
back SO_MARK (fwmark steering) and SO_BINDTODEVICE (vrf steering).

  python connect_probe.py --dst 100.64.0.1 --count 1000
  python connect_probe.py --dst 100.64.0.1 --duration 3      (loop for N seconds)
  python connect_probe.py --dst 100.64.0.1 --rate 1000 --duration 60   (at most 1000/s; SIGTERM ends it early)
Prints JSON: {"decisions": ["mark:0x100" | "dev:wifi-vrf" | "none", ...]}
"""
from __future__ import annotations

import argparse
import json
import signal
import socket
import time

SO_BINDTODEVICE = 25
SO_MARK = 36


def decide(dst: str, port: int, proto: str = "udp", bind: str | None = None) -> str:
    family = socket.AF_INET6 if ":" in dst else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM) as sock:
        if bind is not None:
            sock.bind((bind, 0))
        if proto == "tcp":
            # The hook runs inside connect(); the handshake's outcome does not matter.
            sock.setblocking(False)
            sock.connect_ex((dst, port))
        else:
            sock.connect((dst, port))
        mark = sock.getsockopt(socket.SOL_SOCKET, SO_MARK)
        dev = sock.getsockopt(socket.SOL_SOCKET, SO_BINDTODEVICE, 16).split(b"\0", 1)[0].decode()
    if dev:
        return "dev:" + dev
    if mark:
        return "mark:%#x" % mark
    return "none"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dst", action="append", required=True, help="destination(s), cycled")
    parser.add_argument("--count", type=int, default=0, help="connects per destination")
    parser.add_argument("--duration", type=float, default=0, help="loop this many seconds instead")
    parser.add_argument("--port", type=int, default=9)
    parser.add_argument("--proto", choices=["udp", "tcp"], default="udp")
    parser.add_argument("--rate", type=float, default=0, help="with --duration: connects per second at most")
    parser.add_argument("--bind", help="bind() each socket to this local address first")
    args = parser.parse_args()
    decisions = []
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(True))
    if args.duration:
        started = time.monotonic()
        end = started + args.duration
        while time.monotonic() < end and not stop:
            for dst in args.dst:
                decisions.append(decide(dst, args.port, args.proto, args.bind))
            if args.rate:
                pause = started + len(decisions) / args.rate - time.monotonic()
                if pause > 0:
                    time.sleep(pause)
    else:
        for _ in range(args.count):
            for dst in args.dst:
                decisions.append(decide(dst, args.port, args.proto, args.bind))
    print(json.dumps({"decisions": decisions, "dst": args.dst}))


if __name__ == "__main__":
    main()
