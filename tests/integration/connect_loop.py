"""TCP connects at a steady rate, recording for each its time, uplink and outcome.

  python connect_loop.py --dst 100.64.0.1 --port 7 --rate 200 --duration 6
      prints JSON {"connects": [[unix time, local address or null, mark, error or null], ...]}
  python connect_loop.py --dst 100.64.0.1 --count 100 --timeout 0.5      (100 connects, each up to 0.5 s)
  python connect_loop.py --dst 100.64.0.1 --until-file /tmp/stop         (until that file exists)
  python connect_loop.py --serve 7      accept and close connections (the far end)

Runs inside the balancer's cgroup: the program steers each socket at connect(),
getsockname() then says which uplink's address it left from.
"""
import argparse
import errno
import json
import os
import socket
import time

SO_MARK = 36


def connect_once(dst: str, port: int, timeout: float) -> list:
    started = time.time()
    family = socket.AF_INET6 if ":" in dst else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.connect((dst, port))
            return [started, sock.getsockname()[0], sock.getsockopt(socket.SOL_SOCKET, SO_MARK), None]
        except OSError as exc:
            mark = sock.getsockopt(socket.SOL_SOCKET, SO_MARK)
            name = errno.errorcode.get(exc.errno, "timeout") if exc.errno else "timeout"
            return [started, None, mark, name]


def serve(port: int) -> None:
    with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as listener:
        listener.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("::", port))
        listener.listen(1024)
        while True:
            conn, _addr = listener.accept()
            conn.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dst")
    parser.add_argument("--port", type=int, default=7)
    parser.add_argument("--rate", type=float, default=200, help="connects per second")
    parser.add_argument("--duration", type=float, default=5)
    parser.add_argument("--count", type=int, default=0, help="stop after this many connects (however long)")
    parser.add_argument("--timeout", type=float, default=0.2)
    parser.add_argument("--until-file", metavar="PATH", help="connect until this file exists (at most an hour)")
    parser.add_argument("--serve", type=int, metavar="PORT")
    args = parser.parse_args()
    if args.serve:
        serve(args.serve)
        return
    connects = []
    period = 1.0 / args.rate
    end = None if args.count else time.time() + (3600 if args.until_file else args.duration)
    next_at = time.time()
    while len(connects) < args.count if args.count else time.time() < end:
        if args.until_file and os.path.exists(args.until_file):
            break
        connects.append(connect_once(args.dst, args.port, args.timeout))
        next_at += period
        pause = next_at - time.time()
        if pause > 0:
            time.sleep(pause)
        else:
            next_at = time.time()  # a slow connect (a dead uplink): no burst to catch up
    print(json.dumps({"connects": connects}))


if __name__ == "__main__":
    main()
