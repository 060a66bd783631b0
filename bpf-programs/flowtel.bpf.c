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
 */

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_endian.h>

#include "kernel_types.h"
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
static __always_inline __u8 tracked_protocol(const struct sock *sk)
{
	__u16 family = sk->__sk_common.skc_family;
	__u16 protocol;

	if (family != AF_INET && family != AF_INET6)
		return 0;
	protocol = sk->sk_protocol;
	if (protocol != IPPROTO_TCP && protocol != IPPROTO_UDP)
		return 0;
	return protocol;
}

static __always_inline void read_tuple(const struct sock *sk, struct conn_info *info)
{
	info->family = sk->__sk_common.skc_family;
	info->local_port = sk->__sk_common.skc_num;
	info->remote_port = bpf_ntohs(sk->__sk_common.skc_dport);
	if (info->family == AF_INET) {
		*(__be32 *)info->local_addr = sk->__sk_common.skc_rcv_saddr;
		*(__be32 *)info->remote_addr = sk->__sk_common.skc_daddr;
	} else {
		__builtin_memcpy(info->local_addr,
				 sk->__sk_common.skc_v6_rcv_saddr.in6_u.u6_addr8, 16);
		__builtin_memcpy(info->remote_addr,
				 sk->__sk_common.skc_v6_daddr.in6_u.u6_addr8, 16);
	}
}

/* Copies the kernel's own TCP counters, the ones tcp_info reports. */
static __always_inline void read_tcp_counters(struct sock *sk, struct conn_info *info)
{
	struct tcp_sock *tp = bpf_skc_to_tcp_sock(sk);

	if (!tp)
		return;
	/* At CLOSE the kernel has already released the bound port (skc_num is
	 * 0 by the time the tracepoint runs); inet_sport keeps it. */
	if (!info->local_port)
		info->local_port = bpf_ntohs(tp->inet_conn.icsk_inet.inet_sport);
	info->tcp_segs_out = tp->segs_out;
	info->tcp_segs_in = tp->segs_in;
	info->tcp_total_retrans = tp->total_retrans;
	info->srtt_us = tp->srtt_us >> 3;
	info->rttvar_us = tp->mdev_us >> 2;
	info->tcp_state = sk->__sk_common.skc_state;
}

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

/*
 * Starts tracking a connection. `in_process` says whether the current task
 * owns the socket (a syscall) or not (softirq).
 */
static __always_inline struct conn_info *track(struct sock *sk, const struct conn_key *key,
					       __u8 protocol, enum first_sight sight,
					       int in_process)
{
	struct conn_info info = {};
	long err;

	info.first_seen_ns = bpf_ktime_get_ns();
	info.protocol = protocol;
	info.netns = sk->__sk_common.skc_net.net->ns.inum;
	read_tuple(sk, &info);
	if (in_process)
		read_process(&info);
	if (protocol == IPPROTO_TCP) {
		read_tcp_counters(sk, &info);
		if (sight == SEEN_MID_LIFE) {
			info.base_segs_out = info.tcp_segs_out;
			info.base_segs_in = info.tcp_segs_in;
			info.base_total_retrans = info.tcp_total_retrans;
			info.flags |= FT_FLAG_TCP_BASELINE;
			/* Data read after the connection closed (it was still
			 * queued): its close was already handed over, so this
			 * entry only carries bytes, and user space reaps it at
			 * the next poll. */
			if (info.tcp_state == TCP_CLOSE)
				info.flags |= FT_FLAG_CLOSED | FT_FLAG_RESIDUE;
		} else {
			info.flags |= FT_FLAG_SEEN_OPEN;
		}
	}
	err = bpf_map_update_elem(&conns, key, &info, BPF_NOEXIST);
	if (err && err != -17 /* EEXIST: another CPU won the race */) {
		/* A connection's opening happens once, so it counts connections;
		 * anything else repeats per event of an untracked socket. */
		stat_inc(sight == SEEN_OPENING ? FT_STAT_MAP_FULL : FT_STAT_UNTRACKED);
		return 0;
	}
	return bpf_map_lookup_elem(&conns, key);
}

static __always_inline struct conn_info *find_or_track(struct sock *sk, const struct conn_key *key,
						       __u8 protocol, enum first_sight sight,
						       int in_process)
{
	struct conn_info *info = bpf_map_lookup_elem(&conns, key);

	if (info)
		return info;
	return track(sk, key, protocol, sight, in_process);
}

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

static __always_inline int count_io(struct sock *sk, int bytes, int sending)
{
	struct conn_key key = {};
	struct conn_info *info;
	__u8 protocol;

	if (bytes <= 0)
		return 0;
	protocol = tracked_protocol(sk);
	if (!protocol)
		return 0;
	key.cookie = bpf_get_socket_cookie(sk);
	if (protocol == IPPROTO_UDP)
		take_udp_peer(&key);

	info = find_or_track(sk, &key, protocol, SEEN_MID_LIFE, 1);
	if (!info)
		return 0;
	if (sending) {
		__sync_fetch_and_add(&info->bytes_sent, bytes);
		if (protocol == IPPROTO_UDP)
			__sync_fetch_and_add(&info->packets_sent, 1);
	} else {
		__sync_fetch_and_add(&info->bytes_received, bytes);
		if (protocol == IPPROTO_UDP)
			__sync_fetch_and_add(&info->packets_received, 1);
	}
	if (protocol == IPPROTO_TCP)
		read_tcp_counters(sk, info);
	/* An accepted connection is created in softirq; its owner shows up here. */
	if (!info->pid)
		read_process(info);
	return 0;
}

SEC("tp_btf/sock_send_length")
int BPF_PROG(flowtel_send, struct sock *sk, int ret, int flags)
{
	return count_io(sk, ret, 1);
}

SEC("tp_btf/sock_recv_length")
int BPF_PROG(flowtel_recv, struct sock *sk, int ret, int flags)
{
	/* A peek leaves the bytes queued: they count when really read. */
	if (flags & MSG_PEEK)
		return 0;
	return count_io(sk, ret, 0);
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
	bpf_ringbuf_submit(event, 0);
	bpf_map_delete_elem(&conns, key);
}

SEC("tp_btf/inet_sock_set_state")
int BPF_PROG(flowtel_state, struct sock *sk, int oldstate, int newstate)
{
	struct conn_key key = {};
	struct conn_info *info;

	if (tracked_protocol(sk) != IPPROTO_TCP)
		return 0;
	key.cookie = bpf_get_socket_cookie(sk);

	switch (newstate) {
	case TCP_SYN_SENT: /* connect(): process context */
		info = find_or_track(sk, &key, IPPROTO_TCP, SEEN_OPENING, 1);
		if (info)
			info->direction = FT_DIR_OUTGOING;
		return 0;
	case TCP_SYN_RECV: /* a child of a listener, in softirq */
		info = find_or_track(sk, &key, IPPROTO_TCP, SEEN_OPENING, 0);
		if (info)
			info->direction = FT_DIR_INCOMING;
		return 0;
	case TCP_ESTABLISHED:
		info = find_or_track(sk, &key, IPPROTO_TCP, SEEN_MID_LIFE, 0);
		if (!info)
			return 0;
		info->flags |= FT_FLAG_ESTABLISHED;
		/* Ports and addresses are final only now (connect binds the
		 * source port after SYN_SENT; a child gets its tuple after
		 * SYN_RECV). */
		read_tuple(sk, info);
		read_tcp_counters(sk, info);
		return 0;
	case TCP_CLOSE:
		info = bpf_map_lookup_elem(&conns, &key);
		if (!info)
			return 0; /* a listener, or a socket that never moved data */
		read_tuple(sk, info);
		read_tcp_counters(sk, info);
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
		read_tcp_counters(sk, info);
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
	bpf_ringbuf_submit(event, 0);
	return 1;
}
