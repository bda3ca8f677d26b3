/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Types and constants shared by the balancer program and the control plane
 * (plugins/module_utils/datapath.py and selection.py).
 *
 * One object for every host: nothing here or in the program is per host. How
 * each uplink slot is steered (VRF device, interface or mark), its source
 * addresses and whether it is usable travel with the selection the control
 * plane computes, in one map entry that flips whole: the program never sees a
 * slot order different from the weights it picks by.
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
#define MW_IPPROTO_TCP 6
#define MW_IPPROTO_UDP 17

/* Policies, in mw_control.policy. */
#define MW_POLICY_RANDOM 0      /* a random rotation entry: weighted at random */
#define MW_POLICY_ROTATION 1    /* the next rotation entry (weighted, round_robin) */
#define MW_POLICY_HASH_DST 2    /* the destination's bucket: same destination, same uplink */

/* Why a socket was left alone: mw_counters[MW_MAX_UPLINKS + reason]. */
#define MW_SKIP_NO_UPLINK 0     /* no usable uplink (all drained or down), or no selection yet */
#define MW_SKIP_LOCAL 1         /* loopback, this host, link-local, multicast, broadcast */
#define MW_SKIP_EXCLUDED 2      /* an excluded prefix or port */
#define MW_SKIP_BOUND 3         /* bound to a device or a local address, or marked */
#define MW_SKIP_FOREIGN_NETNS 4 /* another network namespace's (a container's) */
#define MW_SKIP_TYPE 5          /* neither a stream nor a datagram socket */
#define MW_SKIP_REASONS 6

/* mw_host.flags: which exclusion maps hold anything (an empty one is not looked up). */
#define MW_HOST_EXCLUDE4 1
#define MW_HOST_EXCLUDE6 2
#define MW_HOST_EXCLUDE_PORTS 4

/* mw_slot.flags */
#define MW_SLOT_USABLE 1     /* up, not drained, weight > 0: an unconnected UDP socket stays on it */
#define MW_SLOT_UDP_SOURCE 2 /* its table is selected by `ip rule from ADDR`: its address steers UDP */

/* How a socket is put on one uplink: SO_BINDTODEVICE to dev (the uplink's VRF,
 * or with device steering its own interface), else SO_MARK to mark (fwmark
 * steering, for `ip rule fwmark M lookup T`). Neither: the main-table uplink,
 * the socket is left alone. */
struct mw_slot {
	char dev[MW_IFNAMSIZ];
	__u32 mark;
	__u32 flags;  /* MW_SLOT_* */
	__u32 ip4;    /* source for its unconnected UDP (network order); 0: none (yet) */
	__u32 ip6[4];
	__u32 id;     /* the uplink's, whatever its slot (a hash of its name); never 0 */
};

/* What an unconnected UDP socket remembers of its uplink: the slot, and the
 * uplink's id to find it again when the inventory put it in another slot. */
struct mw_udp_socket {
	__u32 slot;
	__u32 id;
};

/* What the program picks from, and how it steers each pick. The control plane
 * fills the entry the program does not read, then flips mw_control.active: a
 * connect sees the old generation or the new one, never half of each. */
struct mw_selection {
	__u32 rotation_len; /* 0: no usable uplink, every socket is left alone */
	__u32 num_slots;
	struct mw_slot slots[MW_MAX_UPLINKS];
	__u8 rotation[MW_ROTATION_MAX];
	__u8 buckets[MW_BUCKETS];
};

struct mw_control {
	__u32 active; /* 0 or 1: the mw_selection entry in use */
	__u32 policy; /* MW_POLICY_* */
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
	__u32 flags;  /* MW_HOST_* */
	__u32 unused;
};

/* Per CPU: one entry per uplink slot, then one per MW_SKIP_* reason for sockets
 * never steered. Kept (pinned) across weight changes and program replacement. */
struct mw_counters {
	__u64 steered; /* sockets given to this uplink (main uplink: left alone) */
	__u64 errors;  /* bpf_setsockopt failures; the connect went on unsteered */
};

#endif
