// SPDX-License-Identifier: GPL-2.0 OR Apache-2.0
/* The floor: empty programs on flowtel's hottest hooks (UDP counted): the
 * cgroup egress hook every sent packet passes, and the receive tracepoint
 * every read passes. Their run time under kernel.bpf_stats_enabled is what
 * any program there costs, so flowtel's own work is its run time minus
 * this. */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

char LICENSE[] SEC("license") = "GPL";

SEC("cgroup_skb/egress")
int floor_egress(struct __sk_buff *skb)
{
	return 1;
}

SEC("tp_btf/sock_recv_length")
int floor_recv(void *ctx)
{
	return 0;
}
