// SPDX-License-Identifier: GPL-2.0 OR Apache-2.0
/* Map choice for the per-event lookup, measured under kernel.bpf_stats:
 * each program finds the socket's counters one way and adds the bytes,
 * as flowtel's send program does, with flowtel's own key and value types.
 * The bench attaches one at a time beside an empty program on the same hook
 * and reports the difference. */
#include "../bpf-programs/kernel_types.h"
#include "../bpf-programs/flowtel_types.h"

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

char LICENSE[] SEC("license") = "GPL";

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, struct conn_key);
	__type(value, struct conn_info);
} by_wide_key SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, struct conn_info);
} by_cookie SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, struct conn_info);
} by_cookie_lru SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, struct conn_info);
} by_cookie_per_cpu SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct conn_info);
} per_socket SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 65536);
	__type(key, __u32);
	__type(value, struct conn_info);
} by_slot SEC(".maps");

#define COOKIE(sk) ((__u64)(sk)->__sk_common.skc_cookie.counter ?: bpf_get_socket_cookie(sk))

/* Find or create the entry for key in map, then add. */
#define COUNT_IN_HASH(map, key)                                                   \
	do {                                                                      \
		struct conn_info *c = bpf_map_lookup_elem(&map, key);             \
		if (!c) {                                                         \
			struct conn_info zero = {};                               \
			bpf_map_update_elem(&map, key, &zero, BPF_NOEXIST);       \
			c = bpf_map_lookup_elem(&map, key);                       \
			if (!c)                                                   \
				return 0;                                         \
		}                                                                 \
		__sync_fetch_and_add(&c->bytes_sent, ret);                        \
	} while (0)

SEC("tp_btf/sock_send_length")
int BPF_PROG(empty, struct sock *sk, int ret, int flags)
{
	return 0;
}

SEC("tp_btf/sock_send_length")
int BPF_PROG(hash_wide_key, struct sock *sk, int ret, int flags)
{
	struct conn_key key = {};

	key.cookie = COOKIE(sk);
	COUNT_IN_HASH(by_wide_key, &key);
	return 0;
}

SEC("tp_btf/sock_send_length")
int BPF_PROG(hash_cookie, struct sock *sk, int ret, int flags)
{
	__u64 key = COOKIE(sk);

	COUNT_IN_HASH(by_cookie, &key);
	return 0;
}

SEC("tp_btf/sock_send_length")
int BPF_PROG(lru_hash,  struct sock *sk, int ret, int flags)
{
	__u64 key = COOKIE(sk);

	COUNT_IN_HASH(by_cookie_lru, &key);
	return 0;
}

/* Per-CPU values: a plain add, no atomic; user space sums the CPUs. */
SEC("tp_btf/sock_send_length")
int BPF_PROG(per_cpu_hash, struct sock *sk, int ret, int flags)
{
	__u64 key = COOKIE(sk);
	struct conn_info *c = bpf_map_lookup_elem(&by_cookie_per_cpu, &key);

	if (!c) {
		struct conn_info zero = {};

		bpf_map_update_elem(&by_cookie_per_cpu, &key, &zero, BPF_NOEXIST);
		c = bpf_map_lookup_elem(&by_cookie_per_cpu, &key);
		if (!c)
			return 0;
	}
	c->bytes_sent += ret;
	return 0;
}

SEC("tp_btf/sock_send_length")
int BPF_PROG(socket_storage, struct sock *sk, int ret, int flags)
{
	struct conn_info *c = bpf_sk_storage_get(&per_socket, sk, 0, BPF_SK_STORAGE_GET_F_CREATE);

	if (c)
		__sync_fetch_and_add(&c->bytes_sent, ret);
	return 0;
}

/* The array stands for a slot table; a real one needs the socket's slot
 * from somewhere (socket storage, a hash): this is the lookup's floor. */
SEC("tp_btf/sock_send_length")
int BPF_PROG(array_slot, struct sock *sk, int ret, int flags)
{
	__u32 slot = (__u32)COOKIE(sk) & 0xffff;
	struct conn_info *c = bpf_map_lookup_elem(&by_slot, &slot);

	if (c)
		__sync_fetch_and_add(&c->bytes_sent, ret);
	return 0;
}
