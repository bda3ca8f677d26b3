// SPDX-License-Identifier: GPL-2.0-or-later
/* The baseline of make bench's per-connect table: a connect4 program that does
 * nothing, so the balancer's own share of a hook's run time is known (the
 * kernel's cost of running any cgroup sock_addr program is in both). */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

char LICENSE[] SEC("license") = "GPL";

SEC("cgroup/connect4")
int mw_empty_connect4(struct bpf_sock_addr *ctx)
{
	return 1;
}
