"""CLI for the namespace lab.

  python -m tests.lab up --name N --uplinks usb0:40,wlp1s0:20   # prints a JSON description
  python -m tests.lab iperf --name N -P 10 [-t 5] [--server ADDR] [--json] [-- EXTRA IPERF3 ARGS]
  python -m tests.lab down --name N
  python -m tests.lab list
"""

from __future__ import annotations

import argparse
import json
import sys

from ._common import release
from .netlab import (
    STATE_DIR,
    SERVER4,
    Lab,
    LabError,
    Uplink,
    received_mbps,
    received_mbps_by_local_host,
    stream_local_hosts,
)


def parse_uplinks(spec: str) -> list[Uplink]:
    """"usb0:40,wlp1s0:20,eth1" -> uplinks (rate in Mbit/s, none = unshaped)."""
    out = []
    for item in filter(None, (s.strip() for s in spec.split(","))):
        ifname, _, rate = item.partition(":")
        out.append(Uplink(ifname, float(rate) if rate else None))
    if not out:
        raise argparse.ArgumentTypeError("no uplinks")
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.lab", description="network-namespace uplink lab")
    sub = p.add_subparsers(dest="cmd", required=True)

    up = sub.add_parser("up", help="create a lab and leave it running")
    up.add_argument("--name", default="nlb")
    up.add_argument("--uplinks", type=parse_uplinks, default=parse_uplinks("usb0:40,wlp1s0:20"),
                    help="IF[:MBIT],...  (default usb0:40,wlp1s0:20)")  # fmt: skip
    up.add_argument("--no-ipv6", action="store_true")
    up.add_argument("--no-server", action="store_true", help="do not run iperf3 -s")
    up.add_argument("--client-netns", default="auto",
                    help="netns name for the client, 'auto' (<name>-client) or 'none' (current "
                         "netns; only inside a VM lab guest)")  # fmt: skip

    down = sub.add_parser("down", help="remove a lab (by its state file, else its namespaces)")
    down.add_argument("--name", default="nlb")

    ip = sub.add_parser("iperf", help="run iperf3 from the client namespace")
    ip.add_argument("--name", default="nlb")
    ip.add_argument("-P", "--parallel", type=int, default=10)
    ip.add_argument("-t", "--seconds", type=float, default=5)
    ip.add_argument("--server", default=SERVER4)
    ip.add_argument("--json", action="store_true", help="print iperf3's full JSON")
    ip.add_argument("extra", nargs=argparse.REMAINDER, help="-- extra iperf3 arguments")

    sub.add_parser("list", help="labs with a state file")

    a = p.parse_args(argv)
    try:
        if a.cmd == "up":
            client = None if a.client_netns == "none" else a.client_netns
            lab = Lab(a.uplinks, name=a.name, client_netns=client, ipv6=not a.no_ipv6, server=not a.no_server)
            lab.up()
            release(f"lab-{lab.name}")  # it outlives this command: nobody's to reclaim, `down` removes it
            print(json.dumps(lab.describe(), indent=2))
        elif a.cmd == "down":
            has_state = (STATE_DIR / f"{a.name}.json").exists()
            lab = Lab.from_state(a.name) if has_state else Lab.adopt(a.name)
            removed = list(lab._made_netns)
            lab.down()
            print(f"lab {a.name}: removed netns {removed or 'none'}")
        elif a.cmd == "iperf":
            lab = Lab.from_state(a.name)
            extra = a.extra[1:] if a.extra[:1] == ["--"] else a.extra
            res = lab.iperf3(parallel=a.parallel, seconds=a.seconds, server=a.server, extra=extra)
            if a.json:
                print(json.dumps(res, indent=2))
            else:
                summary = {
                    "received_mbps": round(received_mbps(res), 2),
                    "by_local_host_mbps": {k: round(v, 2) for k, v in received_mbps_by_local_host(res).items()},
                    "stream_local_hosts": stream_local_hosts(res),
                }
                print(json.dumps(summary, indent=2))
        elif a.cmd == "list":
            for f in sorted(STATE_DIR.glob("*.json")) if STATE_DIR.exists() else []:
                print(f.stem)
    except (LabError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
