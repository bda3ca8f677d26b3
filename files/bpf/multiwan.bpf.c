// SPDX-License-Identifier: GPL-2.0-or-later
/* netlb.multiwan balancer: pick an uplink for every new socket of a cgroup.
 *
 * Attached at cgroup/connect4 and cgroup/connect6. For each connect() it picks
 * an uplink by policy and steers the socket there: SO_BINDTODEVICE to the
 * uplink's VRF (vrf steering) or SO_MARK (fwmark steering). The uplink that
 * lives in the main table means "leave the socket alone".
 *
 * Fail-open: every path returns 1. A steering failure is counted and the
 * connect goes on unsteered; this program never blocks a connection.
 *
 * Uses only what Linux 5.8 offers to sock_addr programs (bpf_setsockopt came
 * to them in 5.8; no fetch-and-add, no bpf_loop), so one object loads on any
 * kernel >= 5.8.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "multiwan.h"
#include "multiwan_config.h"

#if MW_NUM_UPLINKS < 1 || MW_NUM_UPLINKS > 16
#error "between 1 and 16 uplinks"
#endif

#define MW_SKIPPED_SLOT MW_NUM_UPLINKS

char LICENSE[] SEC("license") = "GPL";

/* Per-uplink counters, then one slot for sockets never steered (loopback,
 * excluded prefixes, sockets already bound or marked). Read with
 * `bpftool map dump pinned <pin_dir>/maps/mw_counters`. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, MW_NUM_UPLINKS + 1);
	__type(key, __u32);
	__type(value, struct mw_counters);
} mw_counters SEC(".maps");

/* Runtime state: the round-robin cursor. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} mw_rr_state SEC(".maps");

static const struct mw_uplink uplinks[MW_NUM_UPLINKS] = MW_UPLINKS;

#if MW_NUM_EXCLUDE4 > 0
static const struct mw_prefix4 exclude4[MW_NUM_EXCLUDE4] = MW_EXCLUDE4;
#endif
#if MW_NUM_EXCLUDE6 > 0
static const struct mw_prefix6 exclude6[MW_NUM_EXCLUDE6] = MW_EXCLUDE6;
#endif

static __always_inline void count(__u32 slot, int error)
{
	struct mw_counters *c = bpf_map_lookup_elem(&mw_counters, &slot);

	if (!c)
		return;
	if (error)
		__sync_fetch_and_add(&c->errors, 1);
	else
		__sync_fetch_and_add(&c->steered, 1);
}

/* Destinations that must never leave through another uplink: the host
 * itself (this is what keeps DNS through a stub on 127.0.0.53 working),
 * link-local and multicast scopes, and the configured prefixes (LAN, VPN).
 * addr is in host byte order. */
static __always_inline int never_steer4(__u32 addr)
{
	if ((addr & 0xff000000) == 0x7f000000 ||  /* 127.0.0.0/8 */
	    (addr & 0xff000000) == 0x00000000 ||  /* 0.0.0.0/8: "this host" */
	    (addr & 0xffff0000) == 0xa9fe0000 ||  /* 169.254.0.0/16 */
	    (addr & 0xf0000000) == 0xe0000000 ||  /* 224.0.0.0/4 */
	    addr == 0xffffffff)                   /* limited broadcast */
		return 1;
#if MW_NUM_EXCLUDE4 > 0
#pragma unroll
	for (int i = 0; i < MW_NUM_EXCLUDE4; i++)
		if ((addr & exclude4[i].mask) == exclude4[i].addr)
			return 1;
#endif
	return 0;
}

static __always_inline int never_steer6(const __u32 a[4])
{
	/* ::ffff:a.b.c.d — an IPv4 destination of a dual-stack socket */
	if (a[0] == 0 && a[1] == 0 && a[2] == 0x0000ffff)
		return never_steer4(a[3]);
	if (a[0] == 0 && a[1] == 0 && a[2] == 0 && (a[3] == 1 || a[3] == 0))
		return 1;                                /* ::1 and :: */
	if ((a[0] & 0xffc00000) == 0xfe800000)     /* fe80::/10 */
		return 1;
	if ((a[0] & 0xff000000) == 0xff000000)     /* ff00::/8 */
		return 1;
#if MW_NUM_EXCLUDE6 > 0
#pragma unroll
	for (int i = 0; i < MW_NUM_EXCLUDE6; i++)
		if ((a[0] & exclude6[i].mask[0]) == exclude6[i].addr[0] &&
		    (a[1] & exclude6[i].mask[1]) == exclude6[i].addr[1] &&
		    (a[2] & exclude6[i].mask[2]) == exclude6[i].addr[2] &&
		    (a[3] & exclude6[i].mask[3]) == exclude6[i].addr[3])
			return 1;
#endif
	return 0;
}

#if MW_POLICY == MW_POLICY_HASH_DST
/* murmur3 finalizer: spreads neighbouring addresses over all uplinks. */
static __always_inline __u32 mix(__u32 h)
{
	h ^= h >> 16;
	h *= 0x85ebca6b;
	h ^= h >> 13;
	h *= 0xc2b2ae35;
	h ^= h >> 16;
	return h;
}
#endif

#if MW_POLICY == MW_POLICY_WEIGHTED || MW_POLICY == MW_POLICY_HASH_DST
/* Map x in [0, MW_TOTAL_WEIGHT) to an uplink, proportionally to weights. */
static __always_inline __u32 by_weight(__u32 x)
{
	__u32 acc = 0;

#pragma unroll
	for (__u32 i = 0; i < MW_NUM_UPLINKS; i++) {
		acc += uplinks[i].weight;
		if (x < acc)
			return i;
	}
	return 0;
}
#endif

static __always_inline __u32 pick(__u32 dst_hash)
{
#if MW_POLICY == MW_POLICY_RANDOM
	return bpf_get_prandom_u32() % MW_NUM_UPLINKS;
#elif MW_POLICY == MW_POLICY_WEIGHTED
	return by_weight(bpf_get_prandom_u32() % MW_TOTAL_WEIGHT);
#elif MW_POLICY == MW_POLICY_ROUND_ROBIN
	__u32 key = 0, n;
	__u32 *cursor = bpf_map_lookup_elem(&mw_rr_state, &key);

	if (!cursor)
		return 0;
	/* Plain read-modify-write: 5.8 has no atomic fetch-and-add. Sequential
	 * connects alternate exactly; racing ones may share an uplink. */
	n = *cursor;
	*cursor = n + 1;
	return n % MW_NUM_UPLINKS;
#elif MW_POLICY == MW_POLICY_HASH_DST
	return by_weight(mix(dst_hash) % MW_TOTAL_WEIGHT);
#else
#error "unknown MW_POLICY"
#endif
}

static __always_inline void steer(struct bpf_sock_addr *ctx, __u32 chosen)
{
	int err = 0;

#pragma unroll
	for (__u32 i = 0; i < MW_NUM_UPLINKS; i++) {
		if (i != chosen)
			continue;
		/* Constant index: the compiler turns the uplink into immediates,
		 * so the option value lives on the stack as bpf_setsockopt wants. */
#if MW_STEERING == MW_STEER_VRF
		char dev[MW_IFNAMSIZ];

		__builtin_memcpy(dev, uplinks[i].dev, MW_IFNAMSIZ);
		if (dev[0])
			err = bpf_setsockopt(ctx, MW_SOL_SOCKET, MW_SO_BINDTODEVICE, dev, MW_IFNAMSIZ);
#else
		int mark = uplinks[i].mark;

		if (mark)
			err = bpf_setsockopt(ctx, MW_SOL_SOCKET, MW_SO_MARK, &mark, sizeof(mark));
#endif
		count(i, err != 0);
	}
}

static __always_inline int steerable(struct bpf_sock_addr *ctx)
{
	struct bpf_sock *sk = ctx->sk;

	if (ctx->type != MW_SOCK_STREAM && ctx->type != MW_SOCK_DGRAM)
		return 0;
	/* Bound by the application (or a VPN): re-binding needs CAP_NET_RAW and
	 * would override an explicit choice. A marked socket is left alone too. */
	if (sk->bound_dev_if || sk->mark)
		return 0;
	return 1;
}

SEC("cgroup/connect4")
int mw_connect4(struct bpf_sock_addr *ctx)
{
	__u32 dst = bpf_ntohl(ctx->user_ip4);

	if (!steerable(ctx) || never_steer4(dst)) {
		count(MW_SKIPPED_SLOT, 0);
		return 1;
	}
	steer(ctx, pick(dst));
	return 1;
}

SEC("cgroup/connect6")
int mw_connect6(struct bpf_sock_addr *ctx)
{
	__u32 dst[4];

	dst[0] = bpf_ntohl(ctx->user_ip6[0]);
	dst[1] = bpf_ntohl(ctx->user_ip6[1]);
	dst[2] = bpf_ntohl(ctx->user_ip6[2]);
	dst[3] = bpf_ntohl(ctx->user_ip6[3]);
	if (!steerable(ctx) || never_steer6(dst)) {
		count(MW_SKIPPED_SLOT, 0);
		return 1;
	}
	/* A mapped IPv4 destination hashes as in connect4: same uplink. */
	if (dst[0] == 0 && dst[1] == 0 && dst[2] == 0x0000ffff)
		steer(ctx, pick(dst[3]));
	else
		steer(ctx, pick(dst[0] ^ dst[1] ^ dst[2] ^ dst[3]));
	return 1;
}
