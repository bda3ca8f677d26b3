// SPDX-License-Identifier: GPL-2.0-or-later
/* netlb.multiwan balancer: pick an uplink for every new socket of a cgroup.
 *
 * One object for every host: what differs per host (how each uplink slot is
 * steered) is in the selection map, with the tables it picks from.
 *
 * cgroup/connect4 and connect6: for each connect() it takes an uplink slot from
 * the selection the control plane computed (one array lookup, whatever the
 * number of uplinks) and steers the socket as that slot says: SO_BINDTODEVICE
 * to the uplink's VRF (vrf steering) or to its own interface (device steering:
 * its routes in the main table, no VRF, no rule), or SO_MARK (fwmark
 * steering). The uplink that lives in the main table, an empty selection
 * (every uplink drained or down) and MW_NO_UPLINK mean "leave the socket alone".
 *
 * cgroup/sendmsg4 and sendmsg6: datagrams of unconnected UDP sockets (sendto
 * without connect: DHT, uTP, QUIC clients). The kernel takes a datagram's mark
 * and bound device from the socket before this hook runs, so setsockopt here
 * would miss the first datagram; only the source address can still be chosen.
 * A socket gets an uplink on its first datagram (remembered on the socket)
 * and every datagram of it gets that uplink's address as its source, which
 * `ip rule from ADDR lookup TABLE` routes out of that uplink - first datagram
 * included. A socket whose uplink is drained or goes down picks again.
 *
 * Never steered, each counted by its reason (MW_SKIP_*): loopback, link-local,
 * multicast and excluded destinations (prefixes and ports), sockets the
 * application bound to a device, mark or source address, sockets of other
 * network namespaces (containers), for which the host's VRFs and marks mean
 * nothing, and sockets with no usable uplink to go to.
 *
 * Fail-open: every path returns 1. A missing map entry, a steering failure:
 * the connect goes on unsteered; this program never blocks a connection.
 *
 * Uses only what Linux 5.8 offers to sock_addr programs (bpf_setsockopt came
 * to them in 5.8; no fetch-and-add with a result, no bpf_loop), so one object
 * loads on any kernel >= 5.8.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "multiwan.h"

/* "Steer it": no reason to leave the socket alone. */
#define MW_STEER_IT (-1)

char LICENSE[] SEC("license") = "GPL";

/* Every map is pinned by name and reused when the program is replaced, so
 * counters, cursor and runtime state survive a new object. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, MW_MAX_UPLINKS + MW_SKIP_REASONS);
	__type(key, __u32);
	__type(value, struct mw_counters);
} mw_counters SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct mw_control);
} mw_control SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, struct mw_selection);
} mw_selection SEC(".maps");

/* The rotation cursor, shared by all CPUs: sequential connects follow the
 * rotation exactly even when the connecting thread moves to another CPU, which
 * per-CPU cursors would not (each CPU would run its own rotation). Measured on
 * 2 CPUs with two processes connecting at once, a per-CPU cursor saved nothing
 * (shared 172-293 ns, per-CPU 191-212 ns per connect: noise). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} mw_cursor SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, MW_MAX_EXCLUDES);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct mw_lpm4);
	__type(value, __u8);
} mw_exclude4 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, MW_MAX_EXCLUDES);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct mw_lpm6);
	__type(value, __u8);
} mw_exclude6 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct mw_ports);
} mw_exclude_ports SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct mw_host);
} mw_host SEC(".maps");

/* The uplink of an unconnected UDP socket, stored on the socket itself (socket
 * local storage, Linux >= 5.3 for sock_addr programs): the kernel frees it with
 * the socket, so there is no table to fill up, nothing to sweep, and no live
 * socket ever loses its uplink to newer ones (a keyed LRU evicted idle ones). */
struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct mw_udp_socket);
} mw_udp_sockets SEC(".maps");

static __always_inline void count(__u32 slot, int error)
{
	struct mw_counters *c = bpf_map_lookup_elem(&mw_counters, &slot);

	if (!c)
		return;
	/* This CPU's entry: no atomics needed. */
	if (error)
		c->errors++;
	else
		c->steered++;
}

static __always_inline void skip(int reason)
{
	count(MW_MAX_UPLINKS + reason, 0);
}

/* Destinations that must never leave through another uplink: the host
 * itself (this is what keeps DNS through a stub on 127.0.0.53 working),
 * link-local and multicast scopes. addr is in network byte order. */
static __always_inline int local4(__u32 addr_be)
{
	__u32 addr = bpf_ntohl(addr_be);

	return (addr & 0xff000000) == 0x7f000000 ||  /* 127.0.0.0/8 */
	       (addr & 0xff000000) == 0x00000000 ||  /* 0.0.0.0/8: "this host" */
	       (addr & 0xffff0000) == 0xa9fe0000 ||  /* 169.254.0.0/16 */
	       (addr & 0xf0000000) == 0xe0000000 ||  /* 224.0.0.0/4 */
	       addr == 0xffffffff;                   /* limited broadcast */
}

/* The configured prefixes (LAN, VPN); the trie is walked only when it holds any. */
static __always_inline int excluded4(const struct mw_host *host, __u32 addr_be)
{
	struct mw_lpm4 key = { .prefixlen = 32 };

	if (!host || !(host->flags & MW_HOST_EXCLUDE4))
		return 0;
	__builtin_memcpy(key.addr, &addr_be, 4);
	return bpf_map_lookup_elem(&mw_exclude4, &key) != NULL;
}

/* ::ffff:a.b.c.d - an IPv4 destination of a dual-stack socket */
static __always_inline int mapped4(const __u32 a_be[4])
{
	return a_be[0] == 0 && a_be[1] == 0 && a_be[2] == bpf_htonl(0x0000ffff);
}

static __always_inline int local6(const __u32 a_be[4])
{
	__u32 a0 = bpf_ntohl(a_be[0]);

	if (mapped4(a_be))
		return local4(a_be[3]);
	if (a_be[0] == 0 && a_be[1] == 0 && a_be[2] == 0 &&
	    (a_be[3] == bpf_htonl(1) || a_be[3] == 0))
		return 1;                          /* ::1 and :: */
	return (a0 & 0xffc00000) == 0xfe800000 ||  /* fe80::/10 */
	       (a0 & 0xff000000) == 0xff000000;    /* ff00::/8 */
}

static __always_inline int excluded6(const struct mw_host *host, const __u32 a_be[4])
{
	struct mw_lpm6 key = { .prefixlen = 128 };

	if (mapped4(a_be))
		return excluded4(host, a_be[3]);
	if (!host || !(host->flags & MW_HOST_EXCLUDE6))
		return 0;
	__builtin_memcpy(key.addr, a_be, 16);
	return bpf_map_lookup_elem(&mw_exclude6, &key) != NULL;
}

static __always_inline int port_excluded(const struct mw_host *host, struct bpf_sock_addr *ctx)
{
	__u32 zero = 0;
	struct mw_ports *ports;
	__u16 port = bpf_ntohs((__u16)ctx->user_port);
	__u64 bit = 1ULL << (port & 63);

	if (!host || !(host->flags & MW_HOST_EXCLUDE_PORTS))
		return 0;
	ports = bpf_map_lookup_elem(&mw_exclude_ports, &zero);
	if (!ports)
		return 0;
	if (ctx->protocol == MW_IPPROTO_TCP)
		return (ports->tcp[port >> 6] & bit) != 0;
	if (ctx->protocol == MW_IPPROTO_UDP)
		return (ports->udp[port >> 6] & bit) != 0;
	return 0;
}

/* A socket of another network namespace: the host's VRFs and marks are not
 * its own. An unknown host namespace (0) steers every namespace. */
static __always_inline int foreign_netns(const struct mw_host *host, struct bpf_sock_addr *ctx)
{
	return host && host->netns_cookie && bpf_get_netns_cookie(ctx) != host->netns_cookie;
}

/* Why this socket is left alone whatever its destination, or MW_STEER_IT. */
static __always_inline int socket_skip(const struct mw_host *host, struct bpf_sock_addr *ctx)
{
	struct bpf_sock *sk = ctx->sk;

	if (ctx->type != MW_SOCK_STREAM && ctx->type != MW_SOCK_DGRAM)
		return MW_SKIP_TYPE;
	/* Bound by the application (or a VPN): re-binding needs CAP_NET_RAW and
	 * would override an explicit choice. A marked socket is left alone too. */
	if (sk->bound_dev_if || sk->mark)
		return MW_SKIP_BOUND;
	/* bind() to a local address chose the uplink by its source; the kernel's
	 * extra MPTCP subflows come bound to their endpoint's address too, and
	 * steering one elsewhere kills it. */
	if (sk->src_ip4 || sk->src_ip6[0] || sk->src_ip6[1] || sk->src_ip6[2] || sk->src_ip6[3])
		return MW_SKIP_BOUND;
	if (foreign_netns(host, ctx))
		return MW_SKIP_FOREIGN_NETNS;
	if (port_excluded(host, ctx))
		return MW_SKIP_EXCLUDED;
	return MW_STEER_IT;
}

static __always_inline int skip4(struct bpf_sock_addr *ctx, __u32 dst_be)
{
	__u32 zero = 0;
	const struct mw_host *host = bpf_map_lookup_elem(&mw_host, &zero);
	int reason = socket_skip(host, ctx);

	if (reason != MW_STEER_IT)
		return reason;
	if (local4(dst_be))
		return MW_SKIP_LOCAL;
	return excluded4(host, dst_be) ? MW_SKIP_EXCLUDED : MW_STEER_IT;
}

static __always_inline int skip6(struct bpf_sock_addr *ctx, const __u32 dst_be[4])
{
	__u32 zero = 0;
	const struct mw_host *host = bpf_map_lookup_elem(&mw_host, &zero);
	int reason = socket_skip(host, ctx);

	if (reason != MW_STEER_IT)
		return reason;
	if (local6(dst_be))
		return MW_SKIP_LOCAL;
	return excluded6(host, dst_be) ? MW_SKIP_EXCLUDED : MW_STEER_IT;
}

/* murmur3 finalizer: spreads neighbouring addresses over all buckets. */
static __always_inline __u32 mix(__u32 h)
{
	h ^= h >> 16;
	h *= 0x85ebca6b;
	h ^= h >> 13;
	h *= 0xc2b2ae35;
	h ^= h >> 16;
	return h;
}

/* Keeps the compiler from dropping a mask it can prove redundant but the
 * verifier cannot (an index after a modulo by a runtime value). */
#define MW_OPAQUE(x) asm volatile("" : "+r"(x))

/* The selection in force and its policy; NULL before the control plane
 * wrote one (nothing is steered then). */
static __always_inline struct mw_selection *selection(__u32 *policy)
{
	__u32 zero = 0, index;
	struct mw_control *control = bpf_map_lookup_elem(&mw_control, &zero);

	if (!control)
		return NULL;
	*policy = control->policy;
	index = control->active & 1;
	return bpf_map_lookup_elem(&mw_selection, &index);
}

/* The chosen slot, or MW_NO_UPLINK. */
static __always_inline __u32 pick(struct mw_selection *sel, __u32 policy, __u32 dst_hash)
{
	__u32 zero = 0;
	__u32 *cursor;
	__u64 n;

	if (sel->rotation_len == 0 || sel->rotation_len > MW_ROTATION_MAX)
		return MW_NO_UPLINK;
	switch (policy) {
	case MW_POLICY_HASH_DST:
		return sel->buckets[mix(dst_hash) & (MW_BUCKETS - 1)];
	case MW_POLICY_ROTATION:
		cursor = bpf_map_lookup_elem(&mw_cursor, &zero);
		if (!cursor)
			return MW_NO_UPLINK;
		/* Plain read-modify-write: 5.8 has no fetch-and-add with a result.
		 * Sequential connects follow the rotation exactly; racing ones on
		 * two CPUs may take the same entry. */
		n = *cursor;
		*cursor = n + 1;
		break;
	default:
		n = bpf_get_prandom_u32();
	}
	n %= sel->rotation_len;
	MW_OPAQUE(n);
	return sel->rotation[n & (MW_ROTATION_MAX - 1)];   /* n < rotation_len <= MW_ROTATION_MAX */
}

/* Slot *slot* of the selection, or NULL: MW_NO_UPLINK, or a slot the
 * selection does not have. */
static __always_inline struct mw_slot *slot_of(struct mw_selection *sel, __u32 slot)
{
	if (slot >= sel->num_slots || slot >= MW_MAX_UPLINKS)
		return NULL;
	MW_OPAQUE(slot);
	return &sel->slots[slot & (MW_MAX_UPLINKS - 1)];
}

static __always_inline void steer(struct bpf_sock_addr *ctx, struct mw_selection *sel, __u32 slot)
{
	struct mw_slot *s = slot_of(sel, slot);
	char dev[MW_IFNAMSIZ];
	int err = 0, mark;

	if (!s) {
		skip(MW_SKIP_NO_UPLINK);
		return;
	}
	if (s->dev[0]) {
		/* bpf_setsockopt wants the option value on the stack. */
		__builtin_memcpy(dev, s->dev, MW_IFNAMSIZ);
		err = bpf_setsockopt(ctx, MW_SOL_SOCKET, MW_SO_BINDTODEVICE, dev, MW_IFNAMSIZ);
	} else if (s->mark) {
		mark = s->mark;
		err = bpf_setsockopt(ctx, MW_SOL_SOCKET, MW_SO_MARK, &mark, sizeof(mark));
	}
	count(slot, err != 0);
}

/* The uplink of an unconnected UDP socket: the one it got on its first
 * datagram while that stays usable, else a new pick (counted, like a
 * connect). NULL: leave this datagram alone. */
/* The slot of uplink *id* in *sel*, or NULL. Only when a socket's uplink is no
 * longer where it was: at most MW_MAX_UPLINKS steps, once per moved socket. */
static __always_inline struct mw_slot *slot_by_id(struct mw_selection *sel, __u32 id, __u32 *slot)
{
	__u32 i;

	for (i = 0; i < MW_MAX_UPLINKS; i++) {
		if (i >= sel->num_slots)
			break;
		if (sel->slots[i].id == id) {
			*slot = i;
			return &sel->slots[i];
		}
	}
	return NULL;
}

/* The uplink of an unconnected UDP socket: the one it was given at its first
 * datagram, followed to its new slot when the inventory reordered or removed
 * uplinks (a socket that changes source mid-flow breaks NAT and its peers),
 * unless that uplink is gone or no longer usable. */
static __always_inline struct mw_slot *udp_slot(struct bpf_sock_addr *ctx, __u32 dst_hash)
{
	struct mw_udp_socket *known = bpf_sk_storage_get(&mw_udp_sockets, ctx->sk, 0, 0);
	struct mw_udp_socket mine;
	__u32 policy = 0;
	struct mw_selection *sel = selection(&policy);
	struct mw_slot *s;

	if (!sel)
		return NULL;
	if (known) {
		s = slot_of(sel, known->slot);
		if (!s || s->id != known->id) {
			s = slot_by_id(sel, known->id, &mine.slot);
			if (s)
				known->slot = mine.slot;
		}
		if (s && (s->flags & MW_SLOT_USABLE))
			return s;
	}
	mine.slot = pick(sel, policy, dst_hash);
	s = slot_of(sel, mine.slot);
	if (!s) {
		skip(MW_SKIP_NO_UPLINK);
		return NULL;
	}
	mine.id = s->id;
	if (known)
		*known = mine;
	else
		/* Out of memory: this datagram still goes where picked; the next picks again. */
		bpf_sk_storage_get(&mw_udp_sockets, ctx->sk, &mine, BPF_SK_STORAGE_GET_F_CREATE);
	count(mine.slot, 0);
	return s;
}

/* A datagram of an unconnected UDP socket whose application chose no source
 * (no bind, no IP_PKTINFO). Only a slot whose table a source address selects
 * (MW_SLOT_UDP_SOURCE: not the main-table uplink, not device steering, which
 * routes nothing) has one to give. Datagrams left alone are not counted: the
 * socket is, once, when it gets its uplink. */
static __always_inline int udp_steerable(struct bpf_sock_addr *ctx, int unbound)
{
	return ctx->type == MW_SOCK_DGRAM && unbound;
}

static __always_inline int connect_steer(struct bpf_sock_addr *ctx, __u32 dst_hash)
{
	__u32 policy = 0;
	struct mw_selection *sel = selection(&policy);

	if (!sel) {
		skip(MW_SKIP_NO_UPLINK);
		return 1;
	}
	steer(ctx, sel, pick(sel, policy, dst_hash));
	return 1;
}

SEC("cgroup/connect4")
int mw_connect4(struct bpf_sock_addr *ctx)
{
	__u32 dst = ctx->user_ip4;
	int reason = skip4(ctx, dst);

	if (reason != MW_STEER_IT) {
		skip(reason);
		return 1;
	}
	return connect_steer(ctx, bpf_ntohl(dst));
}

SEC("cgroup/sendmsg4")
int mw_sendmsg4(struct bpf_sock_addr *ctx)
{
	struct mw_slot *src;
	__u32 dst = ctx->user_ip4;

	if (!udp_steerable(ctx, ctx->msg_src_ip4 == 0) || skip4(ctx, dst) != MW_STEER_IT)
		return 1;
	src = udp_slot(ctx, bpf_ntohl(dst));
	if (src && (src->flags & MW_SLOT_UDP_SOURCE) && src->ip4)
		ctx->msg_src_ip4 = src->ip4;
	return 1;
}

SEC("cgroup/sendmsg6")
int mw_sendmsg6(struct bpf_sock_addr *ctx)
{
	struct mw_slot *src;
	__u32 dst[4];

	dst[0] = ctx->user_ip6[0];
	dst[1] = ctx->user_ip6[1];
	dst[2] = ctx->user_ip6[2];
	dst[3] = ctx->user_ip6[3];
	/* A mapped IPv4 destination goes through udp_sendmsg: sendmsg4 steers it. */
	if (mapped4(dst))
		return 1;
	if (!udp_steerable(ctx, !(ctx->msg_src_ip6[0] | ctx->msg_src_ip6[1] | ctx->msg_src_ip6[2] |
				  ctx->msg_src_ip6[3])) || skip6(ctx, dst) != MW_STEER_IT)
		return 1;
	src = udp_slot(ctx, bpf_ntohl(dst[0] ^ dst[1] ^ dst[2] ^ dst[3]));
	if (src && (src->flags & MW_SLOT_UDP_SOURCE) && (src->ip6[0] | src->ip6[1] | src->ip6[2] | src->ip6[3])) {
		ctx->msg_src_ip6[0] = src->ip6[0];
		ctx->msg_src_ip6[1] = src->ip6[1];
		ctx->msg_src_ip6[2] = src->ip6[2];
		ctx->msg_src_ip6[3] = src->ip6[3];
	}
	return 1;
}

SEC("cgroup/connect6")
int mw_connect6(struct bpf_sock_addr *ctx)
{
	__u32 dst[4];
	int reason;

	dst[0] = ctx->user_ip6[0];
	dst[1] = ctx->user_ip6[1];
	dst[2] = ctx->user_ip6[2];
	dst[3] = ctx->user_ip6[3];
	reason = skip6(ctx, dst);
	if (reason != MW_STEER_IT) {
		skip(reason);
		return 1;
	}
	/* A mapped IPv4 destination hashes as in connect4: same uplink. */
	if (mapped4(dst))
		return connect_steer(ctx, bpf_ntohl(dst[3]));
	return connect_steer(ctx, bpf_ntohl(dst[0] ^ dst[1] ^ dst[2] ^ dst[3]));
}
