#!/bin/sh
# The molecule host's uplinks: veths to an "internet" network namespace that runs
# iperf3 -s, shaped with tbf, like a laptop's mobile data and wifi.
#
#   uplink_lab.sh up IFACE:MBIT [IFACE:MBIT ...]   e.g. up usb0:40 wlp1s0:20
#   uplink_lab.sh down
#
# Same address plan as tests/lab/netlab.py: uplink i gets 192.0.2.0/24,
# 198.51.100.0/24, 203.0.113.0/24 (then 100.65.i.0/24) with the gateway at .1 and
# the host at .2, 2001:db8:<i+1>::/64 likewise; the iperf3 server answers on
# 100.64.0.1 and 2001:db8:ffff::1.  The first uplink carries the default route.
# Run it only on a throw-away test host (a molecule instance): it changes that
# host's rp_filter and default route.  `up` on a host that has the lab already
# prints "unchanged" and does nothing else.
set -eu

INET=lab-inet
SERVER4=100.64.0.1
SERVER6=2001:db8:ffff::1

subnet4() {
  case "$1" in
    0) echo 192.0.2 ;;
    1) echo 198.51.100 ;;
    2) echo 203.0.113 ;;
    *) echo "100.65.$1" ;;
  esac
}

# tbf counts whole frames: iperf3 then sees ~95.6% of the rate (see netlab.tbf_params).
tbf() {
  burst=$(awk -v r="$1" 'BEGIN { b = int(r * 1e6 / 8 * 0.004); print (b > 16 * 1514 ? b : 16 * 1514) }')
  echo "rate ${1}mbit burst $burst latency 50ms"
}

up() {
  if [ -e "/run/netns/$INET" ]; then
    echo unchanged
    return 0
  fi
  [ $# -ge 1 ] || { echo "uplink_lab.sh up: give at least one IFACE:MBIT" >&2; exit 2; }
  for spec in "$@"; do
    if ip link show dev "${spec%%:*}" >/dev/null 2>&1; then
      echo "uplink_lab.sh: interface ${spec%%:*} exists already" >&2
      exit 1
    fi
  done
  ip netns add "$INET"
  # A multi-homed host answers on one uplink what came in on another.
  for c in all default; do
    sysctl -qw "net.ipv4.conf.$c.rp_filter=0"
    ip netns exec "$INET" sysctl -qw "net.ipv4.conf.$c.rp_filter=0"
  done
  ip -n "$INET" link set lo up
  ip -n "$INET" addr add "$SERVER4/32" dev lo
  ip -n "$INET" -6 addr add "$SERVER6/128" dev lo
  i=0
  for spec in "$@"; do
    iface=${spec%%:*} rate=${spec#*:} peer="lab-up$i"
    net=$(subnet4 $i) net6="2001:db8:$((i + 1))"
    ip link add "$iface" type veth peer name "$peer" netns "$INET"
    ip addr add "$net.2/24" dev "$iface"
    ip -6 addr add "$net6::2/64" dev "$iface" nodad
    ip -n "$INET" addr add "$net.1/24" dev "$peer"
    ip -n "$INET" -6 addr add "$net6::1/64" dev "$peer" nodad
    # shellcheck disable=SC2046 # tbf's arguments are meant to split
    tc qdisc add dev "$iface" root tbf $(tbf "$rate")
    # shellcheck disable=SC2046
    ip netns exec "$INET" tc qdisc add dev "$peer" root tbf $(tbf "$rate")
    ip link set "$iface" up
    ip -n "$INET" link set "$peer" up
    if [ $i = 0 ]; then
      ip route replace default via "$net.1" dev "$iface"
      ip -6 route replace default via "$net6::1" dev "$iface"
    fi
    i=$((i + 1))
  done
  ip netns exec "$INET" iperf3 -s -D
  for _ in $(seq 100); do  # until the server listens
    ip netns exec "$INET" ss -Hltn 'sport = :5201' | grep -q . && break
    sleep 0.1
  done
  echo changed
}

down() {
  if [ ! -e "/run/netns/$INET" ]; then
    echo unchanged
    return 0
  fi
  ip netns pids "$INET" | xargs -r kill
  ip netns del "$INET"  # takes the veths (and so the host-side ends) with it
  echo changed
}

case "${1:-}" in
  up) shift; up "$@" ;;
  down) down ;;
  *) echo "usage: uplink_lab.sh up IFACE:MBIT ... | down" >&2; exit 2 ;;
esac
