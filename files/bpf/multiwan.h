/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Types and constants shared by the balancer program and its rendered config.
 *
 * The per-host part (uplinks, policy, steering, excluded prefixes) is
 * rendered into multiwan_config.h from multiwan_config.h.j2; everything else
 * is static so that one reviewed program serves every host.
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

/* Policies: how an uplink is picked for a new socket. */
#define MW_POLICY_RANDOM 0      /* uniform, as the original write-up */
#define MW_POLICY_WEIGHTED 1    /* random, proportional to weight */
#define MW_POLICY_ROUND_ROBIN 2 /* uplink 0, 1, ..., n-1, 0, ... */
#define MW_POLICY_HASH_DST 3    /* same destination, same uplink; weighted */

/* Steering: how a socket is put on an uplink. */
#define MW_STEER_VRF 0    /* SO_BINDTODEVICE to the uplink's VRF device */
#define MW_STEER_FWMARK 1 /* SO_MARK, routed by `ip rule fwmark M lookup T` */

struct mw_uplink {
	char dev[MW_IFNAMSIZ]; /* VRF device; "" = main table, leave the socket */
	__u32 mark;            /* fwmark; 0 = main table, leave the socket */
	__u32 weight;
};

struct mw_prefix4 {
	__u32 addr; /* host byte order */
	__u32 mask;
};

struct mw_prefix6 {
	__u32 addr[4]; /* host byte order, word by word */
	__u32 mask[4];
};

/* Value of the counters map: one entry per uplink, then MW_SKIPPED_SLOT. */
struct mw_counters {
	__u64 steered; /* sockets given to this uplink (main uplink: left alone) */
	__u64 errors;  /* bpf_setsockopt failures; the connect went on unsteered */
};

#endif
