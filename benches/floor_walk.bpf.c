// SPDX-License-Identifier: GPL-2.0 OR Apache-2.0
/* The floor of the refresh walk: an iterator over the TCP sockets of one
 * network namespace that does nothing with them. What its run takes is what
 * the kernel's walk costs (the hash scanned, each socket held and locked)
 * before flowtel's program does anything. */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

char LICENSE[] SEC("license") = "GPL";

SEC("iter/tcp")
int floor_tcp_walk(void *ctx)
{
	return 0;
}
