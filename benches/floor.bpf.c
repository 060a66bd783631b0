// SPDX-License-Identifier: GPL-2.0 OR Apache-2.0
/* The floor: empty programs on flowtel's two hottest hooks. Their run time
 * under kernel.bpf_stats_enabled is what any program there costs, so
 * flowtel's own work is its run time minus this. */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

char LICENSE[] SEC("license") = "GPL";

SEC("tp_btf/sock_send_length")
int floor_send(void *ctx)
{
	return 0;
}

SEC("tp_btf/sock_recv_length")
int floor_recv(void *ctx)
{
	return 0;
}
