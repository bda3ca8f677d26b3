"""Unconnected UDP for the balancer's sendmsg hooks: a sender and a receiver.

  python udp_probe.py serve --port 9999 --expect 600 --timeout 20
      prints {"by_socket": {"<sender port>": ["<source address of datagram 0>", ...]}}
  python udp_probe.py send --dst 100.64.0.1 --port 9999 --sockets 200 --datagrams 3
      prints {"sent": 600}
  ... send --hold /tmp/go    after the first datagram of every socket, creates
      /tmp/go.held and waits (up to a minute) for /tmp/go before the others
  ... send --churn 20000      after the first datagram of every socket, that many
      other sockets each send one datagram (to the next port) and close

Each sender socket is unbound and never connected: every datagram goes out
through sendto(), so the kernel runs cgroup/sendmsg4 (sendmsg6) for each one.
The payload carries the datagram's sequence number, so the receiver tells the
first datagram of a socket from the others.
"""
import argparse
import collections
import json
import os
import socket
import subprocess
import time


def serve(args) -> None:
    family = socket.AF_INET6 if ":" in args.bind else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    sock.bind((args.bind, args.port))
    sock.settimeout(0.5)
    by_socket: dict[str, list] = {}
    got, deadline = 0, time.monotonic() + args.timeout
    print(json.dumps({"listening": args.port}), flush=True)
    while got < args.expect and time.monotonic() < deadline:
        try:
            data, peer = sock.recvfrom(2048)
        except socket.timeout:
            continue
        seq = int(data.decode().split(":")[1])
        slots = by_socket.setdefault(str(peer[1]), [])
        slots.extend([None] * (seq + 1 - len(slots)))
        slots[seq] = peer[0]
        got += 1
    print(json.dumps({"by_socket": by_socket, "received": got}), flush=True)


def send(args) -> None:
    family = socket.AF_INET6 if ":" in args.dst else socket.AF_INET
    socks = [socket.socket(family, socket.SOCK_DGRAM) for _ in range(args.sockets)]
    sent = 0
    for seq in range(args.datagrams):
        for i, sock in enumerate(socks):
            sock.sendto(("%d:%d" % (i, seq)).encode(), (args.dst, args.port))
            sent += 1
        time.sleep(0.05)
        if seq == 0:
            churn(family, args.dst, args.port + 1, args.churn)
        if seq == 0 and args.hold:
            open(args.hold + ".held", "w").close()
            deadline = time.monotonic() + 60
            while not os.path.exists(args.hold) and time.monotonic() < deadline:
                time.sleep(0.05)
    for sock in socks:
        sock.close()
    print(json.dumps({"sent": sent}))


def churn(family, dst: str, port: int, count: int) -> None:
    """*count* short-lived sockets, each one datagram then closed (a DNS-heavy or
    torrent-like host): whatever the balancer keeps per socket must not push out
    what it keeps for the sockets still open."""
    for i in range(count):
        with socket.socket(family, socket.SOCK_DGRAM) as sock:
            sock.sendto(b"churn:%d" % i, (dst, port))


def serve_argv(python: str, script: str, *, port: int, expect: int, bind: str = "0.0.0.0") -> list[str]:
    return [python, script, "serve", "--bind", bind, "--port", str(port), "--expect", str(expect)]


def send_command(python: str, script: str, *, dst: str, port: int, sockets: int, datagrams: int,
                 hold: str | None = None, churn: int = 0) -> str:
    return "%s %s send --dst %s --port %d --sockets %d --datagrams %d --churn %d%s" % (
        python, script, dst, port, sockets, datagrams, churn, " --hold %s" % hold if hold else "")


def collect(server_argv: list, send, timeout: float = 120) -> dict:
    """Start the receiver (*server_argv*, run here: it may be `ip netns exec` or ssh),
    run *send()* (a CompletedProcess) once it listens; the receiver's by_socket."""
    server = subprocess.Popen(server_argv, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
    try:
        line = server.stdout.readline()
        if "listening" not in line:
            raise RuntimeError("the UDP receiver did not start: %r" % line)
        sent = send()
        if sent.returncode != 0:
            raise RuntimeError("the UDP sender failed: %s" % (sent.stdout + sent.stderr))
        out, _ = server.communicate(timeout=timeout)
    finally:
        server.kill()
        server.wait()
    return json.loads(out.splitlines()[-1])["by_socket"]


def spread(by_socket: dict, datagrams: int) -> dict:
    """{source address: sockets} when every socket's datagrams, the first one
    included, all arrived from one address; raises AssertionError otherwise."""
    mixed = dict((port, sources) for port, sources in by_socket.items()
                 if len(sources) != datagrams or len(set(sources)) != 1)
    assert not mixed, "sockets whose datagrams did not all arrive from one address: %s" % dict(list(mixed.items())[:5])
    return dict(collections.Counter(sources[0] for sources in by_socket.values()))


def main() -> None:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="mode", required=True)
    s = sub.add_parser("serve")
    s.add_argument("--bind", default="0.0.0.0")
    s.add_argument("--port", type=int, required=True)
    s.add_argument("--expect", type=int, required=True)
    s.add_argument("--timeout", type=float, default=20)
    c = sub.add_parser("send")
    c.add_argument("--dst", required=True)
    c.add_argument("--port", type=int, required=True)
    c.add_argument("--sockets", type=int, default=200)
    c.add_argument("--datagrams", type=int, default=3)
    c.add_argument("--churn", type=int, default=0, metavar="N",
                   help="after the first round, N other sockets send one datagram each and close")
    c.add_argument("--hold", metavar="PATH", help="after the first round, wait for PATH (PATH.held says so)")
    args = parser.parse_args()
    serve(args) if args.mode == "serve" else send(args)


if __name__ == "__main__":
    main()
