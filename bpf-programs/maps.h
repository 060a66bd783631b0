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

/* Peer of the datagram in flight, per thread. LRU so that a stash whose
 * tracepoint never ran cannot fill it. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, struct udp_peer);
} udp_peers SEC(".maps");

/*
 * Tracepoint set: a tracked TCP connection's bytes, in its socket's own
 * storage. Finding them there costs a third of a hash lookup, so sends and
 * receives count here; an iterator copies them into `conns` before each
 * poll, and the close copies the final ones.
 */
struct tcp_counts {
	__u64 cookie; /* the connection's key in conns */
	__u64 bytes_sent;
	__u64 bytes_received;
	__u64 closed; /* handed over: later reads are residue, counted in conns */
};

struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct tcp_counts);
} tcp_counts SEC(".maps");

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
