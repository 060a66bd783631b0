// SPDX-License-Identifier: GPL-2.0 OR Apache-2.0
/*
 * flowtel's kernel side (tracepoint probe set, kernel 6.3+).
 *
 * Per event the work is: filter to TCP/UDP over IPv4/IPv6, find the
 * connection by socket cookie (and peer, for unconnected UDP), add to its
 * counters. Everything else (names, mappings, aggregation) is user space's.
 *
 *   sock:sock_send_length / sock:sock_recv_length   bytes, UDP datagrams
 *   sock:inet_sock_set_state                        TCP open, direction, close
 *   tcp:tcp_retransmit_skb                          refresh TCP counters
 *   cgroup/sendmsg4|6, cgroup/recvmsg4|6            peer of unconnected UDP
 *   cgroup/sock_release                             UDP socket gone
 *   iter/bpf_sk_storage_map                         TCP counts, each poll
 */

#include "kernel_types.h"

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_core_read.h>

#include "flowtel_types.h"
#include "maps.h"

#define AF_INET 2
#define AF_INET6 10
#define IPPROTO_TCP 6
#define IPPROTO_UDP 17
#define MSG_PEEK 2

/* include/net/tcp_states.h */
#define TCP_ESTABLISHED 1
#define TCP_SYN_SENT 2
#define TCP_SYN_RECV 3
#define TCP_CLOSE 7

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* Returns the protocol when sk is TCP or UDP over IPv4/IPv6, else 0. */
static __always_inline void read_process(struct conn_info *info)
{
	info->pid = bpf_get_current_pid_tgid() >> 32;
	info->cgroup_id = bpf_get_current_cgroup_id();
	bpf_get_current_comm(info->comm, sizeof(info->comm));
}

enum first_sight {
	SEEN_MID_LIFE,   /* traffic on a connection older than the agent */
	SEEN_OPENING,    /* the connection's first state change */
};

/* For UDP, takes the peer the cgroup hook stashed for this syscall, if any. */
static __always_inline void take_udp_peer(struct conn_key *key)
{
	__u64 thread = bpf_get_current_pid_tgid();
	struct udp_peer *peer = bpf_map_lookup_elem(&udp_peers, &thread);

	if (!peer)
		return;
	if (peer->cookie == key->cookie) {
		__builtin_memcpy(key->peer_addr, peer->addr, 16);
		key->peer_port = peer->port;
		key->peer_family = peer->family;
	}
	bpf_map_delete_elem(&udp_peers, &thread);
}

static __always_inline void add_io(struct conn_info *info, __u8 protocol, int bytes, int sending)
{
	if (sending) {
		__sync_fetch_and_add(&info->bytes_sent, bytes);
		if (protocol == IPPROTO_UDP)
			__sync_fetch_and_add(&info->packets_sent, 1);
	} else {
		__sync_fetch_and_add(&info->bytes_received, bytes);
		if (protocol == IPPROTO_UDP)
			__sync_fetch_and_add(&info->packets_received, 1);
	}
}

/* The TCP counters are snapshots: copying them once per jiffy (1-10 ms) is
 * as good for a poll every few seconds as copying them on every send, and
 * far cheaper on a busy socket. State changes, retransmits and the close
 * always copy them, so the final counters are exact. */
static __always_inline int tcp_refresh_due(struct conn_info *info)
{
	__u32 now = (__u32)bpf_jiffies64();

	if (info->refreshed_jiffies == now)
		return 0;
	info->refreshed_jiffies = now;
	return 1;
}

/* --- TCP bytes in socket storage (tracepoint set). --------------------- */

/* Adds a send or receive to a connection's socket storage: 1 when counted,
 * 0 when there is none or it was handed over (the caller counts in conns). */
static __always_inline int add_tcp_counts(struct tcp_counts *counts, int bytes, int sending)
{
	if (!counts || counts->closed)
		return 0;
	if (sending)
		__sync_fetch_and_add(&counts->bytes_sent, bytes);
	else
		__sync_fetch_and_add(&counts->bytes_received, bytes);
	return 1;
}

/* The fast path of a TCP send or receive: 1 when counted. */
static __always_inline int count_tcp_in_storage(struct sock *sk, int bytes, int sending)
{
	if (sk->sk_protocol != IPPROTO_TCP)
		return 0;
	return add_tcp_counts(bpf_sk_storage_get(&tcp_counts, sk, 0, 0), bytes, sending);
}

/* The first send or receive of a tracked TCP connection gives its socket
 * storage, starting from the bytes its entry holds (non-zero when a
 * previous agent's programs counted them); from then on the bytes count
 * there. A closed connection's residue stays in its entry. */
static __always_inline int start_tcp_storage(struct sock *sk, struct conn_info *info, int bytes,
					     int sending)
{
	struct tcp_counts start = {};

	if (info->flags & FT_FLAG_CLOSED)
		return 0;
	start.cookie = bpf_get_socket_cookie(sk);
	start.bytes_sent = info->bytes_sent;
	start.bytes_received = info->bytes_received;
	return add_tcp_counts(bpf_sk_storage_get(&tcp_counts, sk, &start,
						 BPF_SK_STORAGE_GET_F_CREATE),
			      bytes, sending);
}

/* Copies a connection's bytes from its socket storage into its entry. */
static __always_inline void copy_tcp_counts(const struct tcp_counts *counts, struct conn_info *info)
{
	info->bytes_sent = counts->bytes_sent;
	info->bytes_received = counts->bytes_received;
}

/* --- The per-event work, in two variants (see sock_access.h). ---------- */

#define FT_VARIANT(name) name##_btf
#define FT_READ(ptr, field) ((ptr)->field)
#define FT_READ_INTO(dst, ptr, field) __builtin_memcpy((dst), &(ptr)->field, sizeof(*(dst)))
#define FT_NETNS(sk) ((sk)->__sk_common.skc_net.net->ns.inum)
/* The cookie is made once per socket; after that it is a plain load, which
 * costs far less than the helper call. */
#define FT_COOKIE(sk) ((__u64)(sk)->__sk_common.skc_cookie.counter ?: bpf_get_socket_cookie(sk))
#define FT_TCP_SOCK(sk) bpf_skc_to_tcp_sock(sk)
#define FT_TCP_STORAGE_ADD(sk, info, bytes, sending) start_tcp_storage(sk, info, bytes, sending)
#include "sock_access.h"
#undef FT_VARIANT
#undef FT_READ
#undef FT_READ_INTO
#undef FT_NETNS
#undef FT_COOKIE
#undef FT_TCP_SOCK
#undef FT_TCP_STORAGE_ADD

#define FT_VARIANT(name) name##_kp
#define FT_READ(ptr, field) BPF_CORE_READ((ptr), field)
#define FT_READ_INTO(dst, ptr, field) BPF_CORE_READ_INTO((dst), (ptr), field)
#define FT_NETNS(sk) BPF_CORE_READ((sk), __sk_common.skc_net.net, ns.inum)
#define FT_KP_COOKIE(sk) ((__u64)BPF_CORE_READ((sk), __sk_common.skc_cookie.counter))
#define FT_COOKIE(sk) FT_KP_COOKIE(sk)
/* The caller checked sk_protocol: a TCP socket is a tcp_sock. */
#define FT_TCP_SOCK(sk) ((struct tcp_sock *)(sk))
/* kprobe programs cannot use socket storage: bytes count in the entry. */
#define FT_TCP_STORAGE_ADD(sk, info, bytes, sending) 0
#include "sock_access.h"
#undef FT_VARIANT
#undef FT_READ
#undef FT_READ_INTO
#undef FT_NETNS
#undef FT_COOKIE
#undef FT_TCP_SOCK
#undef FT_TCP_STORAGE_ADD


SEC("tp_btf/sock_send_length")
int BPF_PROG(flowtel_send, struct sock *sk, int ret, int flags)
{
	if (ret > 0 && count_tcp_in_storage(sk, ret, 1))
		return 0;
	return count_io_btf(sk, ret, 1);
}

SEC("tp_btf/sock_recv_length")
int BPF_PROG(flowtel_recv, struct sock *sk, int ret, int flags)
{
	/* A peek leaves the bytes queued: they count when really read. */
	if (flags & MSG_PEEK)
		return 0;
	if (ret > 0 && count_tcp_in_storage(sk, ret, 0))
		return 0;
	return count_io_btf(sk, ret, 0);
}

/* Wakes the reader only when the ring is half full: user space drains it
 * at every poll anyway, and a wakeup per closed connection would cost the
 * agent a context switch each (thousands a second under churn). */
static __always_inline __u64 ring_wakeup(void)
{
	__u64 queued = bpf_ringbuf_query(&events, BPF_RB_AVAIL_DATA);
	__u64 size = bpf_ringbuf_query(&events, BPF_RB_RING_SIZE);

	return queued > size / 2 ? BPF_RB_FORCE_WAKEUP : BPF_RB_NO_WAKEUP;
}

/* Hands a closed connection to user space and forgets it. If the ring buffer
 * is full the entry stays, flagged closed, and user space reaps it at the
 * next poll: delayed, never lost. */
static __always_inline void hand_over_closed(const struct conn_key *key, struct conn_info *info)
{
	struct conn_event *event = bpf_ringbuf_reserve(&events, sizeof(*event), 0);

	if (!event) {
		stat_inc(FT_STAT_CLOSE_DEFERRED);
		return;
	}
	event->kind = FT_EVENT_CLOSED;
	event->_pad = 0;
	event->key = *key;
	event->info = *info;
	bpf_ringbuf_submit(event, ring_wakeup());
	bpf_map_delete_elem(&conns, key);
}

SEC("tp_btf/inet_sock_set_state")
int BPF_PROG(flowtel_state, struct sock *sk, int oldstate, int newstate)
{
	struct conn_key key = {};
	struct conn_info *info;
	struct tcp_counts *counts;

	if (tracked_protocol_btf(sk) != IPPROTO_TCP)
		return 0;
	key.cookie = bpf_get_socket_cookie(sk);

	switch (newstate) {
	case TCP_SYN_SENT: /* connect(): process context */
		info = find_or_track_btf(sk, &key, IPPROTO_TCP, SEEN_OPENING, 1);
		if (info)
			info->direction = FT_DIR_OUTGOING;
		return 0;
	case TCP_ESTABLISHED:
		/* An accepted connection starts here, not at SYN_RECV: the child
		 * gets its tuple, and on some kernels (6.1) its own cookie, only
		 * after that state change. */
		if (oldstate == TCP_SYN_RECV) {
			info = find_or_track_btf(sk, &key, IPPROTO_TCP, SEEN_OPENING, 0);
			if (info)
				info->direction = FT_DIR_INCOMING;
		} else {
			info = find_or_track_btf(sk, &key, IPPROTO_TCP, SEEN_MID_LIFE, 0);
		}
		if (!info)
			return 0;
		info->flags |= FT_FLAG_ESTABLISHED;
		/* Ports and addresses are final only now (connect binds the
		 * source port after SYN_SENT). */
		read_tuple_btf(sk, info);
		read_tcp_counters_btf(sk, info);
		/* Nothing was read before the handshake ended. */
		read_seq_btf(sk, info);
		return 0;
	case TCP_CLOSE:
		info = bpf_map_lookup_elem(&conns, &key);
		if (!info)
			return 0; /* a listener, or a socket that never moved data */
		counts = bpf_sk_storage_get(&tcp_counts, sk, 0, 0);
		if (counts && !counts->closed) {
			copy_tcp_counts(counts, info);
			counts->closed = 1;
		}
		read_tuple_btf(sk, info);
		read_tcp_counters_btf(sk, info);
		info->tcp_state = TCP_CLOSE;
		info->close_err = sk->sk_err;
		info->flags |= FT_FLAG_CLOSED;
		hand_over_closed(&key, info);
		return 0;
	}
	return 0;
}

SEC("tp_btf/tcp_retransmit_skb")
int BPF_PROG(flowtel_retransmit, struct sock *sk)
{
	struct conn_key key = {};
	struct conn_info *info;

	key.cookie = bpf_get_socket_cookie(sk);
	info = bpf_map_lookup_elem(&conns, &key);
	if (info)
		read_tcp_counters_btf(sk, info);
	return 0;
}

/* Before each poll, user space runs this over every socket with TCP
 * counts: it brings the connection's entry up to date (bytes, and the TCP
 * counters as of now). */
SEC("iter/bpf_sk_storage_map")
int flowtel_tcp_refresh(struct bpf_iter__bpf_sk_storage_map *ctx)
{
	struct sock *sk = ctx->sk;
	struct tcp_counts *counts = ctx->value;
	struct conn_key key = {};
	struct conn_info *info;

	if (!sk || !counts || counts->closed)
		return 0;
	key.cookie = counts->cookie;
	info = bpf_map_lookup_elem(&conns, &key);
	if (!info)
		return 0;
	copy_tcp_counts(counts, info);
	read_tcp_counters_btf(sk, info);
	return 0;
}

/* --- Peers of unconnected UDP datagrams (cgroup sock_addr hooks). ------ */

static __always_inline void stash_udp_peer(struct bpf_sock_addr *ctx, __u16 family)
{
	struct udp_peer peer = {};
	__u64 thread = bpf_get_current_pid_tgid();

	peer.cookie = bpf_get_socket_cookie(ctx);
	peer.family = family;
	peer.port = bpf_ntohs((__u16)ctx->user_port);
	if (family == AF_INET) {
		*(__u32 *)peer.addr = ctx->user_ip4;
	} else {
		((__u32 *)peer.addr)[0] = ctx->user_ip6[0];
		((__u32 *)peer.addr)[1] = ctx->user_ip6[1];
		((__u32 *)peer.addr)[2] = ctx->user_ip6[2];
		((__u32 *)peer.addr)[3] = ctx->user_ip6[3];
	}
	bpf_map_update_elem(&udp_peers, &thread, &peer, BPF_ANY);
}

SEC("cgroup/sendmsg4")
int flowtel_udp_sendmsg4(struct bpf_sock_addr *ctx)
{
	stash_udp_peer(ctx, AF_INET);
	return 1;
}

SEC("cgroup/sendmsg6")
int flowtel_udp_sendmsg6(struct bpf_sock_addr *ctx)
{
	stash_udp_peer(ctx, AF_INET6);
	return 1;
}

SEC("cgroup/recvmsg4")
int flowtel_udp_recvmsg4(struct bpf_sock_addr *ctx)
{
	stash_udp_peer(ctx, AF_INET);
	return 1;
}

SEC("cgroup/recvmsg6")
int flowtel_udp_recvmsg6(struct bpf_sock_addr *ctx)
{
	stash_udp_peer(ctx, AF_INET6);
	return 1;
}

/* A UDP socket has one entry per peer, so the kernel cannot delete them by
 * key: it tells user space the socket is gone, and user space reaps them. */
SEC("cgroup/sock_release")
int flowtel_sock_release(struct bpf_sock *ctx)
{
	struct conn_event *event;

	if (ctx->protocol != IPPROTO_UDP || (ctx->family != AF_INET && ctx->family != AF_INET6))
		return 1;
	event = bpf_ringbuf_reserve(&events, sizeof(*event), 0);
	if (!event) {
		stat_inc(FT_STAT_RELEASE_LOST);
		return 1;
	}
	__builtin_memset(event, 0, sizeof(*event));
	event->kind = FT_EVENT_RELEASED;
	event->key.cookie = bpf_get_socket_cookie(ctx);
	bpf_ringbuf_submit(event, ring_wakeup());
	return 1;
}

/* --- kprobe set: send and receive on kernels before 6.3. ---------------
 *
 * Those kernels lack sock:sock_send_length and sock:sock_recv_length; the
 * state, retransmit and cgroup programs above work there unchanged. */

/* The socket of a send in flight, by thread, from entry to return. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, __u64);
} sends_in_flight SEC(".maps");

static __always_inline int enter_send(struct sock *sk)
{
	__u64 thread = bpf_get_current_pid_tgid();
	__u64 socket = (__u64)sk;

	bpf_map_update_elem(&sends_in_flight, &thread, &socket, BPF_ANY);
	return 0;
}

static __always_inline int return_send(int sent)
{
	__u64 thread = bpf_get_current_pid_tgid();
	__u64 *socket = bpf_map_lookup_elem(&sends_in_flight, &thread);
	struct sock *sk;

	if (!socket)
		return 0;
	sk = (struct sock *)*socket;
	bpf_map_delete_elem(&sends_in_flight, &thread);
	return count_io_kp(sk, sent, 1);
}

/* A send function's kprobe and kretprobe: flowtel_kp_FN and flowtel_kp_FN_ret. */
#define SEND_PROBES(fn)                                         \
	SEC("kprobe/" #fn)                                      \
	int BPF_KPROBE(flowtel_kp_##fn, struct sock *sk)        \
	{                                                       \
		return enter_send(sk);                          \
	}                                                       \
	SEC("kretprobe/" #fn)                                   \
	int BPF_KRETPROBE(flowtel_kp_##fn##_ret, int sent)      \
	{                                                       \
		return return_send(sent);                       \
	}

SEND_PROBES(tcp_sendmsg)
SEND_PROBES(udp_sendmsg)
/* For a v4-mapped peer udpv6_sendmsg calls udp_sendmsg, whose return takes
 * the thread's entry first: the outer return finds none, so nothing counts
 * twice. */
SEND_PROBES(udpv6_sendmsg)

/*
 * TCP receive: tcp_cleanup_rbuf runs at the end of every recvmsg, after the
 * copy. Its `copied` argument is not the bytes read (it is called again,
 * cumulatively, while a read waits, and for MSG_PEEK), so the bytes are the
 * advance of copied_seq since the last receive. A kretprobe on tcp_recvmsg
 * would hold a kretprobe instance for as long as a reader blocks.
 */
SEC("kprobe/tcp_cleanup_rbuf")
int BPF_KPROBE(flowtel_kp_tcp_cleanup_rbuf, struct sock *sk, int copied)
{
	struct conn_key key = {};
	struct conn_info *info;
	__u32 seq, bytes;

	if (copied <= 0 || tracked_protocol_kp(sk) != IPPROTO_TCP)
		return 0;
	key.cookie = FT_KP_COOKIE(sk);
	if (!key.cookie) {
		stat_inc(FT_STAT_UNTRACKED);
		return 0;
	}
	seq = BPF_CORE_READ((struct tcp_sock *)sk, copied_seq);
	info = bpf_map_lookup_elem(&conns, &key);
	if (info) {
		bytes = seq - info->seq_read; /* wraps like the sequence space */
		info->seq_read = seq;
		/* Reading the peer's FIN advances copied_seq by one more than
		 * the bytes read. (A MSG_WAITALL read that waited and then met
		 * the FIN is the one case this misses: one byte too many.) */
		if (bytes == (__u32)copied + 1)
			bytes = copied;
	} else {
		/* First sight (older than the agent, or read after close): this
		 * read is `copied` bytes, unless it waited in between. */
		info = track_kp(sk, &key, IPPROTO_TCP, SEEN_MID_LIFE, 1);
		if (!info)
			return 0;
		bytes = copied;
	}
	if (bytes)
		add_io(info, IPPROTO_TCP, bytes, 0);
	if (tcp_refresh_due(info))
		read_tcp_counters_kp(sk, info);
	if (!info->pid)
		read_process(info);
	return 0;
}

/* UDP receive: skb_consume_udp gets the bytes returned to the reader, or a
 * negative length for MSG_PEEK. It runs after the recvmsg cgroup hook has
 * stashed an unconnected socket's peer. */
SEC("kprobe/skb_consume_udp")
int BPF_KPROBE(flowtel_kp_skb_consume_udp, struct sock *sk, void *skb, int len)
{
	return count_io_kp(sk, len, 0);
}

/* Gives every new socket its cookie, which kprobes can read but not make. */
SEC("cgroup/sock_create")
int flowtel_sock_create(struct bpf_sock *ctx)
{
	bpf_get_socket_cookie(ctx);
	return 1;
}
