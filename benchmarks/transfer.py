"""Equal transfers started together: how long until the last one has arrived.

  transfer.py serve PORT                 receive until EOF, then close (one thread per connection)
  transfer.py run DST PORT COUNT BYTES   COUNT connections, each sends BYTES

``run`` opens every connection first (so the balancer places each one), then
starts the clock and sends on all of them at once. A transfer ends when the
server has read all of it and closed: the sender sees EOF. Prints JSON:
{"makespan": s, "seconds": [per transfer], "local": [source address]}.
Standalone (standard library only): it runs inside namespaces and cgroups.
"""
from __future__ import annotations

import json
import socket
import socketserver
import sys
import threading
import time

CHUNK = 256 * 1024


class _Drain(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        while self.request.recv(CHUNK):
            pass


class _Server(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True
    request_queue_size = 128


def serve(port: int) -> None:
    with _Server(("0.0.0.0", port), _Drain) as server:
        server.serve_forever()


def run(dst: str, port: int, count: int, nbytes: int) -> dict:
    socks = [socket.create_connection((dst, port), timeout=120) for _ in range(count)]
    payload = memoryview(bytes(nbytes))
    start = threading.Barrier(count + 1)
    ends = [0.0] * count
    errors: list[str] = []

    def send(i: int) -> None:
        sock = socks[i]
        try:
            start.wait()
            sock.sendall(payload)
            sock.shutdown(socket.SHUT_WR)
            while sock.recv(CHUNK):
                pass
            ends[i] = time.monotonic()
        except OSError as exc:
            errors.append("transfer %d: %s" % (i, exc))

    threads = [threading.Thread(target=send, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    local = [s.getsockname()[0] for s in socks]
    t0 = time.monotonic()
    start.wait()
    for t in threads:
        t.join()
    for s in socks:
        s.close()
    if errors:
        raise SystemExit("; ".join(errors))
    seconds = [e - t0 for e in ends]
    return {"makespan": max(seconds), "seconds": seconds, "local": local}


def main(argv: list[str]) -> int:
    if len(argv) == 2 and argv[0] == "serve":
        serve(int(argv[1]))
        return 0
    if len(argv) == 5 and argv[0] == "run":
        print(json.dumps(run(argv[1], int(argv[2]), int(argv[3]), int(argv[4]))))
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
