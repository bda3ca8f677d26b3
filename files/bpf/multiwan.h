/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Types and constants shared by the balancer program, its rendered config and
 * the control plane (plugins/module_utils/selection.py and the engine).
 *
 * The header rendered per host (multiwan_config.h) holds only what is fixed
 * for the host: how each uplink slot is steered (VRF device or mark). All that
 * changes at runtime - weights, drained or down uplinks, the selection tables,
 * excluded prefixes, the policy - lives in pinned maps the control plane writes.
 */
#ifndef NETLB_MULTIWAN_H
#define NETLB_MULTIWAN_H

#include <linux/types.h>

/* Not from <sys/socket.h>: that pulls in glibc headers a BPF target lacks. */
#define MW_SOL_SOCKET 1
#define MW_SO_BINDTODEVICE 25
#define MW_SO_MARK 36
#define MW_SOCK_STREAM 1
#define MW_SOCK_DGRAM 2
#define MW_IFNAMSIZ 16

#define MW_MAX_UPLINKS 16
#define MW_ROTATION_MAX 1024 /* selection.ROTATION_MAX */
#define MW_BUCKETS 4096      /* selection.BUCKETS; a power of two: the index is a mask */
#define MW_NO_UPLINK 0xff    /* selection.NO_UPLINK: leave the socket alone */
#define MW_MAX_EXCLUDES 256
#define MW_UDP_SOCKETS 16384 /* unconnected UDP sockets remembered (LRU) */
#define MW_IPPROTO_TCP 6
#define MW_IPPROTO_UDP 17

/* Policies, in mw_control.policy. */
#define MW_POLICY_RANDOM 0      /* a random rotation entry: weighted at random */
#define MW_POLICY_ROTATION 1    /* the next rotation entry (weighted, round_robin) */
#define MW_POLICY_HASH_DST 2    /* the destination's bucket: same destination, same uplink */

/* Steering: how a socket is put on an uplink. */
#define MW_STEER_VRF 0    /* SO_BINDTODEVICE to the uplink's VRF device */
#define MW_STEER_FWMARK 1 /* SO_MARK, routed by `ip rule fwmark M lookup T` */
#define MW_STEER_DEVICE 2 /* SO_BINDTODEVICE to the uplink's own interface: its main-table routes */

struct mw_uplink {
	char dev[MW_IFNAMSIZ]; /* VRF device (device steering: the interface); "" = main table, leave the socket */
	__u32 mark;            /* fwmark; 0 = main table, leave the socket */
};

/* What the program picks from. The control plane fills the entry the program
 * does not read, then flips mw_control.active: a connect sees the old
 * selection or the new one, never half of each. */
struct mw_selection {
	__u32 rotation_len; /* 0: no usable uplink, every socket is left alone */
	__u8 rotation[MW_ROTATION_MAX];
	__u8 buckets[MW_BUCKETS];
};

struct mw_control {
	__u32 active; /* 0 or 1: the mw_selection entry in use */
	__u32 policy; /* MW_POLICY_* */
};

/* Runtime state per uplink slot: written by the control plane (role, the
 * netlb-multiwan command, the health tracker), read back by status. The
 * program reads only the selection computed from it. */
struct mw_uplink_state {
	__u32 weight;
	__u32 drained; /* administratively out (netlb-multiwan drain) */
	__u32 down;    /* the health tracker found it down */
};

struct mw_lpm4 {
	__u32 prefixlen;
	__u8 addr[4];
};

struct mw_lpm6 {
	__u32 prefixlen;
	__u8 addr[16];
};

/* Destination ports never steered, one bit per port and protocol: a range
 * costs what a single port does, and the program tests one bit. */
struct mw_ports {
	__u64 tcp[1024];
	__u64 udp[1024];
};

/* What the program needs of the host: the network namespace the role
 * configured. 0: unknown (kernels before 5.14 cannot tell user space a
 * namespace's cookie) or the guard is off; every namespace is steered. */
struct mw_host {
	__u64 netns_cookie;
};

/* An uplink's own addresses (network byte order, 0 = none): the source an
 * unconnected UDP datagram is given, routed by `ip rule from ADDR lookup T`.
 * Written by the control plane once that rule exists, so an address here
 * always selects its uplink. */
struct mw_uplink_addr {
	__u32 ip4;
	__u32 ip6[4];
};

/* Per CPU: one entry per uplink slot, then MW_MAX_UPLINKS for sockets never
 * steered. Kept (pinned) across weight changes and program replacement. */
struct mw_counters {
	__u64 steered; /* sockets given to this uplink (main uplink: left alone) */
	__u64 errors;  /* bpf_setsockopt failures; the connect went on unsteered */
};

#endif
