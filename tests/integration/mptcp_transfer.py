"""One bulk transfer over one connection, MPTCP or plain TCP, measured by the receiver.

  python mptcp_transfer.py serve PORT
      a sink that accepts MPTCP and plain TCP (an MPTCP listener takes both; --plain: TCP only); for each
      connection it reads to the end and answers with JSON {"bytes", "seconds"}: what
      arrived between its first and its last byte
  python mptcp_transfer.py send --dst ADDR --port PORT --seconds N [--mptcp]
                                [--bind-dev DEV --bind ADDR]
      sends for N seconds (--bytes B: B bytes); prints JSON {"mbit": the receiver's rate, "bytes",
      "seconds", "elapsed": from connect() until the receiver had everything,
      "mptcp": the socket is MPTCP, "fallback": it fell back to TCP, "subflows_max": the most
      extra subflows it had (MPTCP_INFO), "error": what the application got, or null}

Standard library only: the sender runs on a lab host's python3.
"""
from __future__ import annotations

import argparse
import json
import socket
import struct
import sys
import threading
import time

IPPROTO_MPTCP = 262
SOL_MPTCP, MPTCP_INFO = 284, 1
CHUNK = b"\0" * 65536


def serve(port: int, plain: bool = False) -> None:
    lst = socket.socket(socket.AF_INET6, socket.SOCK_STREAM, 0 if plain else IPPROTO_MPTCP)
    lst.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lst.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    lst.bind(("::", port))
    lst.listen(16)
    print("listening", flush=True)

    def sink(conn: socket.socket) -> None:
        total, first, last = 0, None, None
        with conn:
            while True:
                data = conn.recv(1 << 18)
                if not data:
                    break
                now = time.monotonic()
                first = first or now
                last = now
                total += len(data)
            seconds = (last - first) if first else 0.0
            conn.sendall(json.dumps({"bytes": total, "seconds": seconds}).encode())

    while True:
        conn, _ = lst.accept()
        threading.Thread(target=sink, args=(conn,), daemon=True).start()


def mptcp_info(sock: socket.socket) -> tuple[int, bool] | None:
    """(mptcpi_subflows: the extra subflows, fell back to TCP) from MPTCP_INFO; None for
    a plain TCP socket."""
    try:
        info = sock.getsockopt(SOL_MPTCP, MPTCP_INFO, 64)
    except OSError:
        return None
    if len(info) < 12:
        return None
    return struct.unpack_from("B", info, 0)[0], bool(struct.unpack_from("=I", info, 8)[0] & 1)


def send(args: argparse.Namespace) -> dict:
    family = socket.AF_INET6 if ":" in args.dst else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, IPPROTO_MPTCP if args.mptcp else 0)
    out = {"error": None, "mptcp": False, "fallback": None, "subflows_max": None}
    try:
        if args.bind_dev:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, args.bind_dev.encode())
        if args.bind:
            sock.bind((args.bind, 0))
        sock.connect((args.dst, args.port))
        started = time.monotonic()
        end = started + args.seconds
        sampled, sent = 0.0, 0
        while (sent < args.bytes) if args.bytes else (time.monotonic() < end):
            chunk = CHUNK if not args.bytes else CHUNK[:min(len(CHUNK), args.bytes - sent)]
            sock.sendall(chunk)
            sent += len(chunk)
            if time.monotonic() - sampled > 0.2:
                sampled = time.monotonic()
                info = mptcp_info(sock)
                if info is not None:
                    out["mptcp"], out["fallback"] = True, info[1]
                    out["subflows_max"] = max(out["subflows_max"] or 0, info[0])
        sock.shutdown(socket.SHUT_WR)
        answer = b""
        while True:
            data = sock.recv(4096)
            if not data:
                break
            answer += data
        got = json.loads(answer)
        out.update(got, mbit=got["bytes"] * 8 / got["seconds"] / 1e6 if got["seconds"] else 0.0,
                   elapsed=time.monotonic() - started)
    except OSError as exc:
        out["error"] = "%s: %s" % (type(exc).__name__, exc)
    finally:
        sock.close()
    return out


def main() -> int:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="cmd", required=True)
    served = sub.add_parser("serve")
    served.add_argument("port", type=int)
    served.add_argument("--plain", action="store_true", help="a plain TCP listener (no MPTCP)")
    s = sub.add_parser("send")
    s.add_argument("--dst", required=True)
    s.add_argument("--port", type=int, required=True)
    s.add_argument("--seconds", type=float, default=10)
    s.add_argument("--bytes", type=int, default=0, help="send this many bytes instead (elapsed: until all arrived)")
    s.add_argument("--mptcp", action="store_true")
    s.add_argument("--bind-dev")
    s.add_argument("--bind")
    args = parser.parse_args()
    if args.cmd == "serve":
        serve(args.port, args.plain)
        return 0
    print(json.dumps(send(args)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
