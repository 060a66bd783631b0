// SPDX-License-Identifier: GPL-2.0 OR Apache-2.0
/*
 * flowtel's kernel side: one object, its programs by hook family.
 *
 *   flowtel_types.h  the structs and constants user space shares
 *                    (receiver/src/kernel/abi.rs, checked by a test)
 *   maps.h           the maps
 *   common.h         owners, inserting and handing over connections
 *   sock_access.h    reading a socket: typed (_btf) or bare (_core)
 *   tcp.h            TCP: the sockets' own counters, tracking a connection
 *   tcp_programs.h   TCP: state changes, the TCP and task_file iterators
 *   udp.h            UDP: datagram hooks, peers, socket release
 *   cgroups.h        cgroup-v2 directories made and removed (containers)
 *   dns.h            DNS messages of the host's clients, for user space to parse
 *
 * TCP costs nothing per send or receive: its bytes are the sockets' own
 * counters. Everything else (names, mappings, aggregation) is user space's.
 */

#include "kernel_types.h"

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_core_read.h>

#include "flowtel_types.h"
#include "maps.h"
#include "common.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

#define FT_VARIANT(name) name##_btf
#define FT_READ(ptr, field) ((ptr)->field)
#define FT_READ_INTO(dst, ptr, field) __builtin_memcpy((dst), &(ptr)->field, sizeof(*(dst)))
#define FT_NETNS(sk) ((sk)->__sk_common.skc_net.net->ns.inum)
/* The cookie is made once per socket; after that it is a plain load, which
 * costs far less than the helper call. */
#define FT_COOKIE(sk) ((__u64)(sk)->__sk_common.skc_cookie.counter ?: bpf_get_socket_cookie(sk))
#include "sock_access.h"
#undef FT_VARIANT
#undef FT_READ
#undef FT_READ_INTO
#undef FT_NETNS
#undef FT_COOKIE

#define FT_VARIANT(name) name##_core
#define FT_READ(ptr, field) BPF_CORE_READ((ptr), field)
#define FT_READ_INTO(dst, ptr, field) BPF_CORE_READ_INTO((dst), (ptr), field)
#define FT_NETNS(sk) BPF_CORE_READ((sk), __sk_common.skc_net.net, ns.inum)
#define FT_COOKIE(sk) ((__u64)BPF_CORE_READ((sk), __sk_common.skc_cookie.counter))
#include "sock_access.h"
#undef FT_VARIANT
#undef FT_READ
#undef FT_READ_INTO
#undef FT_NETNS
#undef FT_COOKIE

#include "tcp.h"

#define TCP_PROG(name) name
#define TCP_KEY(sk) bpf_get_socket_cookie(sk)
#define TCP_LOADED_KEY(sk) ((__u64)(sk)->__sk_common.skc_cookie.counter)
#define TCP_BUSY FT_BUSY_STATE
#include "tcp_programs.h"
#undef TCP_PROG
#undef TCP_KEY
#undef TCP_LOADED_KEY
#undef TCP_BUSY

#define TCP_PROG(name) name##_by_addr
#define TCP_KEY(sk) ((__u64)(sk))
#define TCP_LOADED_KEY(sk) ((__u64)(sk))
#define TCP_BUSY FT_BUSY_STATE_BY_ADDR
#include "tcp_programs.h"
#undef TCP_PROG
#undef TCP_KEY
#undef TCP_LOADED_KEY
#undef TCP_BUSY

/* DNS first: the UDP programs capture it too when both features are on. */
#include "dns.h"
#include "udp.h"
#include "cgroups.h"
