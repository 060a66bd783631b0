/* SPDX-License-Identifier: GPL-2.0 OR Apache-2.0 */
/* BTF map definitions. Sizes are defaults; user space sets the real ones. */
#ifndef FLOWTEL_MAPS_H
#define FLOWTEL_MAPS_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "flowtel_types.h"

/* Every tracked connection. Preallocated: a full map refuses new entries,
 * which FT_STAT_MAP_FULL and FT_STAT_UNTRACKED count. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, struct conn_key);
	__type(value, struct conn_info);
} conns SEC(".maps");

/* Closed TCP connections and released UDP sockets, for user space. */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 4 << 20);
} events SEC(".maps");

/* cgroup-v2 directories made and removed, for user space. */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 256 << 10);
} cgroup_events SEC(".maps");

/* Set by user space once the features are chosen. [0]: whether sends
 * counted from their packets keep their peer; only while the peer hooks
 * are attached, so that an unconnected socket's sends and receives stay
 * in the same flows. [1]: for tests only, the state program acts as if the
 * kernel skipped every close (FLOWTEL_TEST_MISS_TCP_CLOSES). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, FT_SETTING_COUNT);
	__type(key, __u32);
	__type(value, __u32);
} settings SEC(".maps");

/* Peer of the datagram in flight, per thread. LRU so that a stash whose
 * tracepoint never ran cannot fill it. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, struct udp_peer);
} udp_peers SEC(".maps");

/*
 * The network namespaces that hold tracked TCP connections. An iterator over
 * TCP sockets walks the namespace it is created in, so user space creates
 * one in each of these before a poll. LRU: a namespace long gone falls out.
 */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, __u32);
	__type(value, struct netns_seen);
} tcp_netns SEC(".maps");

/* Who listens on a port: an accepted connection is made in softirq, where
 * no process is at hand, so it takes its listener's. */
struct listener_key {
	__u32 netns;
	__u16 port;
	__u16 _pad;
};

struct owner {
	__u64 listener_cookie; /* listeners only: whose entry this is */
	__u64 cgroup_id;
	__u32 pid;
	__u32 _pad;
	char comm[FT_COMM_LEN];
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, struct listener_key);
	__type(value, struct owner);
} listeners SEC(".maps");

/* Per CPU, whether a run of a tracing program with a twin is under way
 * (interrupted, or from Linux 7.2 preempted): see common.h, "twins". */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, FT_BUSY_COUNT);
	__type(key, __u32);
	__type(value, __u32);
} busy SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, FT_STAT_COUNT);
	__type(key, __u32);
	__type(value, __u64);
} stats SEC(".maps");

static __always_inline void stat_inc(__u32 index)
{
	__u64 *value = bpf_map_lookup_elem(&stats, &index);

	if (value)
		*value += 1; /* per-CPU: no atomic needed */
}

#endif /* FLOWTEL_MAPS_H */
