// SPDX-License-Identifier: GPL-2.0-or-later
/* netlb.multiwan MPTCP upgrade: the balanced applications' TCP becomes MPTCP.
 *
 * fmod_ret on update_socket_protocol (Linux >= 6.6): socket(AF_INET[6],
 * SOCK_STREAM, 0 or IPPROTO_TCP) called by a task of a balanced cgroup (or a
 * cgroup below it) creates an MPTCP socket instead. The application sees a TCP
 * socket; a far end without MPTCP gets plain TCP (the kernel falls back), so
 * nothing breaks. With the endpoints `balancer_mptcp: paths` keeps, one such
 * connection opens a subflow over every uplink.
 *
 * Its own object: a kernel that refuses trampoline programs (fentry, fmod_ret)
 * or predates the hook must still load the balancer's cgroup programs. The
 * hook is global, so everyone else - other cgroups, other socket types, an
 * empty cgroup table - gets the protocol it asked for (fail-open).
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

#define MW_AF_INET 2
#define MW_AF_INET6 10
#define MW_SOCK_STREAM 1
#define MW_SOCK_TYPE_MASK 0xf /* SOCK_NONBLOCK and SOCK_CLOEXEC ride in the type */
#define MW_IPPROTO_TCP 6
#define MW_IPPROTO_MPTCP 262
#define MW_UPGRADE_CGROUPS 8

char LICENSE[] SEC("license") = "GPL";

/* The balanced cgroups (the attachments), filled by the control plane. */
struct {
	__uint(type, BPF_MAP_TYPE_CGROUP_ARRAY);
	__uint(max_entries, MW_UPGRADE_CGROUPS);
	__type(key, __u32);
	__type(value, __u32);
} mw_upgrade_cgroups SEC(".maps");

/* Per CPU: [0] sockets upgraded, [1] stream sockets of other tasks left as they were. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, __u64);
} mw_upgrade_counters SEC(".maps");

static __always_inline void count(__u32 which)
{
	__u64 *n = bpf_map_lookup_elem(&mw_upgrade_counters, &which);

	if (n)
		*n += 1;
}

SEC("fmod_ret/update_socket_protocol")
int BPF_PROG(mw_mptcpify, int family, int type, int protocol)
{
	__u32 i;

	if ((family != MW_AF_INET && family != MW_AF_INET6) || (type & MW_SOCK_TYPE_MASK) != MW_SOCK_STREAM ||
	    (protocol != 0 && protocol != MW_IPPROTO_TCP))
		return protocol;
	/* 1: the task is in that cgroup or below it; 0: not; < 0: an empty slot. */
	for (i = 0; i < MW_UPGRADE_CGROUPS; i++) {
		if (bpf_current_task_under_cgroup(&mw_upgrade_cgroups, i) == 1) {
			count(0);
			return MW_IPPROTO_MPTCP;
		}
	}
	count(1);
	return protocol;
}
