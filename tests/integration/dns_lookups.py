"""N lookups through the system resolver (/etc/resolv.conf); prints successes.

Each lookup is a fresh getaddrinfo() (glibc opens and connect()s a new UDP
socket each time, which is exactly what the connect4 hook sees)."""
import json
import socket
import sys

count = int(sys.argv[1]) if len(sys.argv) > 1 else 100
ok, errors = 0, {}
for i in range(count):
    try:
        socket.getaddrinfo("host%d.lab.test" % i, 80, socket.AF_INET, socket.SOCK_STREAM)
        ok += 1
    except socket.gaierror as exc:
        errors[str(exc)] = errors.get(str(exc), 0) + 1
print(json.dumps({"ok": ok, "count": count, "errors": errors}))
