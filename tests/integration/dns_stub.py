"""A minimal DNS stub for the lab: answers every A query with 100.64.0.1.

Stands in for systemd-resolved on 127.0.0.53 (or a resolver on ::1) inside a test guest.
  python dns_stub.py 127.0.0.53
  python dns_stub.py ::1
"""
import socket
import sys


def answer(query: bytes) -> bytes:
    header = query[:2] + b"\x81\x80" + query[4:6] + b"\x00\x01\x00\x00\x00\x00"
    end = query.index(b"\x00", 12) + 5  # question: name, type, class
    question = query[12:end]
    qtype = question[-4:-2]
    if qtype != b"\x00\x01":  # only A; others get an empty answer
        return query[:2] + b"\x81\x80" + query[4:6] + b"\x00\x00\x00\x00\x00\x00" + question
    record = b"\xc0\x0c\x00\x01\x00\x01\x00\x00\x00\x3c\x00\x04" + socket.inet_aton("100.64.0.1")
    return header + question + record


def main() -> None:
    address = sys.argv[1] if len(sys.argv) > 1 else "127.0.0.53"
    sock = socket.socket(socket.AF_INET6 if ":" in address else socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((address, 53))
    while True:
        data, peer = sock.recvfrom(512)
        try:
            sock.sendto(answer(data), peer)
        except (ValueError, IndexError):
            continue


if __name__ == "__main__":
    main()
