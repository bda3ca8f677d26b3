"""TCP connects at a steady rate, recording for each its time, uplink and outcome.

  python connect_loop.py --dst 100.64.0.1 --port 7 --rate 200 --duration 6
      prints JSON {"connects": [[unix time, local address or null, mark, error or null], ...]}
  python connect_loop.py --dst 100.64.0.1 --count 100 --timeout 0.5      (100 connects, each up to 0.5 s)
  python connect_loop.py --dst 100.64.0.1 --until-file /tmp/stop         (until that file exists)
  python connect_loop.py --serve 7      accept and close connections (the far end)
  python connect_loop.py --echo 9       echo what each connection sends (the far end of --hold)
  python connect_loop.py --dst 100.64.0.1 --port 9 --hold --want-mark 11 --duration 8
      one connection at a time, a byte every 100 ms, reconnecting on any error; the first
      connection is opened until its mark is 11 (or, --want-device, it is bound to that device). Prints {"events": [[unix time, event,
      local address, mark, error or null], ...]}, event one of connect, echo, error

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


def echo(port: int) -> None:
    import selectors

    sel = selectors.DefaultSelector()
    listener = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    listener.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("::", port))
    listener.listen(1024)
    print("listening", flush=True)  # for a caller that must not connect before (a slow emulated guest)
    sel.register(listener, selectors.EVENT_READ)
    while True:
        for key, _mask in sel.select():
            if key.fileobj is listener:
                conn, _addr = listener.accept()
                sel.register(conn, selectors.EVENT_READ)
                continue
            try:
                data = key.fileobj.recv(4096)
                if data:
                    key.fileobj.sendall(data)
                    continue
            except OSError:
                pass
            sel.unregister(key.fileobj)
            key.fileobj.close()


def hold(dst: str, port: int, duration: float, want_mark, want_device=None) -> list:
    """A long-lived connection as an application holds one: it notices a dead one
    only through an error, and then connects again."""
    import select

    events, sock, first = [], None, True
    end = time.time() + duration
    family = socket.AF_INET6 if ":" in dst else socket.AF_INET
    while time.time() < end:
        started = time.time()
        if sock is None:
            sock = socket.socket(family, socket.SOCK_STREAM)
            sock.settimeout(1.0)
            try:
                sock.connect((dst, port))
            except OSError as exc:
                events.append([started, "error", None, None, errno.errorcode.get(exc.errno or 0, "timeout")])
                sock.close()
                sock = None
                continue
            mark = sock.getsockopt(socket.SOL_SOCKET, SO_MARK)
            device = sock.getsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, 16).rstrip(b"\0").decode()
            if first and ((want_mark is not None and mark != want_mark)
                          or (want_device is not None and device != want_device)):
                sock.close()
                sock = None
                continue
            first = False
            local = sock.getsockname()[0]
            events.append([started, "connect", local, mark, None])
        try:
            sock.send(b"x")
            ready, _w, _x = select.select([sock], [], [], 0.1)
            if ready:
                if not sock.recv(4096):
                    raise OSError(errno.ECONNRESET, "closed by the far end")
                events.append([time.time(), "echo", local, mark, None])
        except OSError as exc:
            events.append([time.time(), "error", local, mark, errno.errorcode.get(exc.errno or 0, "timeout")])
            sock.close()
            sock = None
            continue
        pause = started + 0.1 - time.time()
        if pause > 0:
            time.sleep(pause)
    if sock is not None:
        sock.close()
    return events


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
    parser.add_argument("--echo", type=int, metavar="PORT")
    parser.add_argument("--hold", action="store_true")
    parser.add_argument("--want-mark", type=int)
    parser.add_argument("--want-device", help="the first connection: until bound to this device (a VRF)")
    args = parser.parse_args()
    if args.serve:
        serve(args.serve)
        return
    if args.echo:
        echo(args.echo)
        return
    if args.hold:
        print(json.dumps({"events": hold(args.dst, args.port, args.duration, args.want_mark, args.want_device)}))
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
