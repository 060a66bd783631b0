/* SPDX-License-Identifier: GPL-2.0 OR Apache-2.0 */
/*
 * TCP: a connection is tracked from its state changes; its bytes and
 * segments are the kernel's own per-socket counters (RFC 4898, as tcp_info
 * reports them), copied before each poll by an iterator over the TCP
 * sockets of each network namespace that holds tracked connections, and
 * once more at the close. No program runs on a TCP send or receive.
 *
 *   tp_btf/inet_sock_set_state   listen, open, close
 *   tp_btf/tcp_retransmit_skb    counters at each retransmission
 *   iter/tcp                     counters before each poll; at start, the
 *                                connections older than the agent
 *   iter/task_file               who holds each socket
 *
 * This part holds what does not depend on how connections are keyed;
 * tcp_programs.h, included twice, holds the programs (see there).
 */

/* The socket's flags, which moved into sock_common in Linux 6.13. */
static __always_inline unsigned long sock_flags(struct sock *sk)
{
	if (bpf_core_field_exists(sk->__sk_common.skc_flags))
		return sk->__sk_common.skc_flags;
	return sk->sk_flags;
}

/* A TCP socket's payload bytes so far: sent once (retransmissions not
 * again) and received in order. */
static __always_inline void read_tcp_bytes(struct tcp_sock *tp, __u64 *sent, __u64 *received)
{
	struct sock *sk = (struct sock *)tp;

	*sent = tp->bytes_sent - tp->bytes_retrans;
	*received = tp->bytes_received;
	/* The peer's FIN takes a sequence number, which bytes_received counts. */
	if (*received && (sock_flags(sk) & (1UL << SOCK_DONE)))
		*received -= 1;
}

/* Copies the kernel's own TCP counters, the ones tcp_info reports. */
static __always_inline void read_tcp_counters(struct tcp_sock *tp, struct conn_info *info)
{
	struct sock *sk = (struct sock *)tp;

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

/* Brings a connection's bytes up to date. Two counters read while the
 * socket moves can briefly disagree (a retransmission between its two
 * increments, a FIN between its sequence number and its flag): totals
 * never go down, so such a moment is at most one segment early, never
 * counted twice. */
static __always_inline void update_tcp_bytes(struct tcp_sock *tp, struct conn_info *info)
{
	__u64 sent, received;

	read_tcp_bytes(tp, &sent, &received);
	if (sent >= info->base_bytes_sent && sent - info->base_bytes_sent > info->bytes_sent)
		info->bytes_sent = sent - info->base_bytes_sent;
	if (received >= info->base_bytes_received &&
	    received - info->base_bytes_received > info->bytes_received)
		info->bytes_received = received - info->base_bytes_received;
}

/* Brings a tracked connection's bytes and counters up to date, and stamps
 * moved_ns when any of them grew. The stamp is taken after the counters
 * are written: a poll that read the entry before them sees a stamp later
 * than its read, so the next poll reads them. */
static __always_inline void refresh_tcp_counters(struct tcp_sock *tp, struct conn_info *info)
{
	__u64 bytes_sent = info->bytes_sent, bytes_received = info->bytes_received;
	__u32 segs_out = info->tcp_segs_out, segs_in = info->tcp_segs_in;
	__u32 retrans = info->tcp_total_retrans;

	update_tcp_bytes(tp, info);
	read_tcp_counters(tp, info);
	if (info->bytes_sent != bytes_sent || info->bytes_received != bytes_received ||
	    info->tcp_segs_out != segs_out || info->tcp_segs_in != segs_in ||
	    info->tcp_total_retrans != retrans)
		info->moved_ns = bpf_ktime_get_ns();
}

/* Records that sk's namespace holds a tracked TCP connection: user space
 * creates a TCP iterator there before each poll. */
static __always_inline void note_netns(__u32 netns, __u32 pid)
{
	struct netns_seen seen = {};

	seen.last_ns = bpf_ktime_get_ns();
	seen.pid = pid;
	bpf_map_update_elem(&tcp_netns, &netns, &seen, BPF_ANY);
}

/* Starts tracking a TCP connection. A connection seen opening counts from
 * zero (data sent with the SYN included); an older one from now. */
static __always_inline struct conn_info *track_tcp(struct tcp_sock *tp, const struct conn_key *key,
						   enum first_sight sight,
						   const struct owner *owner, __u8 direction)
{
	struct sock *sk = (struct sock *)tp;
	struct conn_info info = {};

	new_conn_btf(sk, IPPROTO_TCP, owner, direction, &info);
	read_tcp_counters(tp, &info);
	if (sight == SEEN_MID_LIFE) {
		info.base_segs_out = info.tcp_segs_out;
		info.base_segs_in = info.tcp_segs_in;
		info.base_total_retrans = info.tcp_total_retrans;
		read_tcp_bytes(tp, &info.base_bytes_sent, &info.base_bytes_received);
		info.flags |= FT_FLAG_TCP_BASELINE;
	} else {
		info.flags |= FT_FLAG_SEEN_OPEN;
	}
	info.moved_ns = info.first_seen_ns;
	note_netns(info.netns, owner ? owner->pid : 0);
	return insert_conn(key, &info, sight);
}

static __always_inline struct conn_info *find_or_track_tcp(struct tcp_sock *tp,
							   const struct conn_key *key,
							   enum first_sight sight,
							   const struct owner *owner,
							   __u8 direction)
{
	struct conn_info *info = bpf_map_lookup_elem(&conns, key);

	if (info)
		return info;
	return track_tcp(tp, key, sight, owner, direction);
}

/* An accepted connection's first owner: the process listening on its
 * port, if known. */
static __always_inline const struct owner *listeners_owner(struct sock *sk)
{
	struct listener_key key = listener_key_of_btf(sk);

	return bpf_map_lookup_elem(&listeners, &key);
}

/* TCP states of a connection that may still move data. */
static __always_inline int tcp_connected(__u8 state)
{
	return state != TCP_CLOSE && state != TCP_LISTEN && state != TCP_SYN_SENT &&
	       state != TCP_SYN_RECV;
}

/* What a walk over one namespace's TCP sockets does with each. */
enum tcp_walk {
	WALK_DISCOVER, /* at start: also track the connections older than the agent */
	WALK_REFRESH,  /* before each poll: bring the tracked ones up to date */
};

/* A listener older than the agent, before its owner is known: the owners
 * walk gives it one. An entry the state program made is kept. */
static __always_inline void discover_listener(struct sock *sk, __u64 cookie)
{
	struct listener_key key = listener_key_of_btf(sk);
	struct owner nobody = {};

	if (!key.port)
		return;
	nobody.listener_cookie = cookie;
	bpf_map_update_elem(&listeners, &key, &nobody, BPF_NOEXIST);
}

/* A connection older than the agent was accepted if its local port is a
 * listener's: the iterator walks the listeners before the connections. */
static __always_inline __u8 discovered_direction(struct sock *sk)
{
	struct listener_key key = listener_key_of_btf(sk);

	return bpf_map_lookup_elem(&listeners, &key) ? FT_DIR_INCOMING : FT_DIR_OUTGOING;
}

