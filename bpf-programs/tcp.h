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

static __always_inline void forget_listener(struct sock *sk)
{
	struct listener_key key = listener_key_of_btf(sk);
	struct owner *owner = bpf_map_lookup_elem(&listeners, &key);

	/* Another listener on the port (SO_REUSEPORT) may have taken it over. */
	if (owner && owner->listener_cookie == bpf_get_socket_cookie(sk))
		bpf_map_delete_elem(&listeners, &key);
}

/* An accepted connection's first owner: the process listening on its
 * port, if known. */
static __always_inline const struct owner *listeners_owner(struct sock *sk)
{
	struct listener_key key = listener_key_of_btf(sk);

	return bpf_map_lookup_elem(&listeners, &key);
}

SEC("tp_btf/inet_sock_set_state")
int BPF_PROG(flowtel_state, struct sock *sk, int oldstate, int newstate)
{
	struct conn_key key = {};
	struct conn_info *info;
	struct tcp_sock *tp;
	struct owner owner = {};

	if (tracked_protocol_btf(sk) != IPPROTO_TCP)
		return 0;
	tp = bpf_skc_to_tcp_sock(sk);
	if (!tp)
		return 0;
	key.cookie = bpf_get_socket_cookie(sk);

	switch (newstate) {
	case TCP_LISTEN:
		owner_of_current(&owner);
		remember_listener_btf(sk, &owner);
		return 0;
	case TCP_SYN_SENT: /* connect(): process context */
		owner_of_current(&owner);
		find_or_track_tcp(tp, &key, SEEN_OPENING, &owner, FT_DIR_OUTGOING);
		return 0;
	case TCP_ESTABLISHED:
		/* An accepted connection starts here, not at SYN_RECV: the child
		 * gets its tuple, and on some kernels (6.1) its own cookie, only
		 * after that state change. */
		if (oldstate == TCP_SYN_RECV)
			info = find_or_track_tcp(tp, &key, SEEN_OPENING, listeners_owner(sk),
						 FT_DIR_INCOMING);
		else
			/* From SYN_SENT, whose change the agent missed. */
			info = find_or_track_tcp(tp, &key, SEEN_MID_LIFE, 0, FT_DIR_OUTGOING);
		if (!info)
			return 0;
		info->flags |= FT_FLAG_ESTABLISHED;
		/* Ports and addresses are final only now (connect binds the
		 * source port after SYN_SENT). */
		read_tuple_btf(sk, info);
		read_tcp_counters(tp, info);
		return 0;
	case TCP_CLOSE:
		if (oldstate == TCP_LISTEN) {
			forget_listener(sk);
			return 0;
		}
		info = bpf_map_lookup_elem(&conns, &key);
		if (!info || (info->flags & FT_FLAG_CLOSED))
			return 0; /* a socket that never connected, or handed over */
		update_tcp_bytes(tp, info);
		read_tuple_btf(sk, info);
		read_tcp_counters(tp, info);
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
	struct tcp_sock *tp = bpf_skc_to_tcp_sock(sk);

	if (!tp)
		return 0;
	key.cookie = bpf_get_socket_cookie(sk);
	info = bpf_map_lookup_elem(&conns, &key);
	if (info)
		read_tcp_counters(tp, info);
	return 0;
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

static __always_inline int walk_tcp(struct bpf_iter__tcp *ctx, enum tcp_walk walk)
{
	struct sock_common *skc = ctx->sk_common;
	struct conn_key key = {};
	struct conn_info *info;
	struct tcp_sock *tp;
	struct sock *sk;
	__u8 state;

	if (!skc)
		return 0;
	/* Request and time-wait sockets are not full sockets: NULL. */
	tp = bpf_skc_to_tcp_sock(skc);
	if (!tp)
		return 0;
	sk = (struct sock *)tp;
	/* Also gives the socket its cookie, which the task_file walk reads. */
	key.cookie = bpf_get_socket_cookie(sk);
	state = sk->__sk_common.skc_state;
	if (walk == WALK_DISCOVER && state == TCP_LISTEN) {
		discover_listener(sk, key.cookie);
		return 0;
	}
	if (!tcp_connected(state))
		return 0; /* what the state program sees open */
	if (walk == WALK_DISCOVER) {
		info = find_or_track_tcp(tp, &key, SEEN_MID_LIFE, 0, discovered_direction(sk));
		if (info)
			info->flags |= FT_FLAG_ESTABLISHED;
		return 0;
	}
	info = bpf_map_lookup_elem(&conns, &key);
	if (!info || (info->flags & FT_FLAG_CLOSED))
		return 0;
	update_tcp_bytes(tp, info);
	read_tcp_counters(tp, info);
	return 0;
}

/* Once at start, in each network namespace: the TCP connections older than
 * the agent, tracked from now. */
SEC("iter/tcp")
int flowtel_tcp_discover(struct bpf_iter__tcp *ctx)
{
	return walk_tcp(ctx, WALK_DISCOVER);
}

/* Before each poll, in each network namespace that holds tracked
 * connections: their bytes and TCP counters as of now. */
SEC("iter/tcp")
int flowtel_tcp_refresh(struct bpf_iter__tcp *ctx)
{
	return walk_tcp(ctx, WALK_REFRESH);
}

/*
 * One open file of one task (its socket reached through the file is an
 * untrusted pointer: CO-RE reads only). A listener's owner is remembered
 * (accepted connections take it), and a tracked connection that has no
 * owner, or was accepted, takes the task that holds it. An accepted
 * connection first gets its listener's process, which need not be the one
 * that serves it (a prefork server's worker, a socket-activated service):
 * holding the socket is what decides.
 */
SEC("iter/task_file")
int flowtel_owners(struct bpf_iter__task_file *ctx)
{
	struct task_struct *task = ctx->task;
	struct file *file = ctx->file;
	struct conn_key key = {};
	struct conn_info *info;
	struct owner owner = {};
	struct socket *sock;
	struct sock *sk;
	__u8 state;

	if (!task || !file)
		return 0;
	sock = bpf_sock_from_file(file);
	if (!sock)
		return 0;
	sk = BPF_CORE_READ(sock, sk);
	if (!sk || tracked_protocol_core(sk) != IPPROTO_TCP)
		return 0;
	state = BPF_CORE_READ(sk, __sk_common.skc_state);
	if (state == TCP_LISTEN) {
		owner_of_task(task, &owner);
		remember_listener_core(sk, &owner);
		return 0;
	}
	if (!tcp_connected(state))
		return 0; /* the state program sees it open */
	key.cookie = FT_CORE_COOKIE(sk);
	if (!key.cookie)
		return 0; /* no program has seen this socket: not tracked */
	info = bpf_map_lookup_elem(&conns, &key);
	if (!info)
		return 0;
	/* Only the connections that take it pay for reading the task's
	 * process, cgroup and name. */
	if (!info->pid || info->direction == FT_DIR_INCOMING) {
		owner_of_task(task, &owner);
		set_owner(info, &owner);
	}
	return 0;
}
