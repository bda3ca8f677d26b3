// SPDX-License-Identifier: GPL-2.0-or-later
/* The original write-up's program, kept only to show its flaw in tests:
 * every connect, loopback included, has a 50% chance of being bound to
 * wifi-vrf, so lookups through a stub resolver on 127.0.0.53 fail. */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

SEC("cgroup/connect4")
int original_connect4(struct bpf_sock_addr *ctx)
{
	char dev[] = "wifi-vrf";

	if (bpf_get_prandom_u32() % 2)
		bpf_setsockopt(ctx, 1 /* SOL_SOCKET */, 25 /* SO_BINDTODEVICE */, dev, sizeof(dev));
	return 1;
}

char LICENSE[] SEC("license") = "GPL";
