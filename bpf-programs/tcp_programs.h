/* SPDX-License-Identifier: GPL-2.0 OR Apache-2.0 */
/*
 * The TCP programs, included twice by flowtel.bpf.c, for the two ways a
 * connection can be keyed:
 *
 *   by socket cookie (Linux 5.12+, where tracing programs may call
 *   bpf_get_socket_cookie()): TCP_PROG(name) is name;
 *   by the socket's address, for older kernels: TCP_PROG(name) is
 *   name_by_addr. An address is unique while the socket lives, and a
 *   closed connection's entry is gone before its socket is freed. Kernel
 *   addresses lie far above any cookie, so the two never meet.
 *
 * The including file defines TCP_PROG(name) and TCP_KEY(sk), the key of a
 * socket (a trusted pointer), and TCP_LOADED_KEY(sk) for an untrusted one
 * (plain loads, no helper).
 * A loaded set uses one keying throughout: the loader picks it with the
 * state program.
 */

/* BPF_PROG pastes its name: expand TCP_PROG(...) first. */
#define TCP_BPF_PROG(name, args...) BPF_PROG(name, ##args)

static __always_inline void TCP_PROG(forget_listener)(struct sock *sk)
{
	struct listener_key key = listener_key_of_btf(sk);
	struct owner *owner = bpf_map_lookup_elem(&listeners, &key);

	/* Another listener on the port (SO_REUSEPORT) may have taken it over. */
	if (owner && owner->listener_cookie == TCP_KEY(sk))
		bpf_map_delete_elem(&listeners, &key);
}

static __always_inline int TCP_PROG(on_state)(struct sock *sk, int oldstate, int newstate)
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
	key.cookie = TCP_KEY(sk);

	switch (newstate) {
	case TCP_LISTEN:
		owner_of_current(&owner);
		remember_listener_btf(sk, &owner, key.cookie);
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
		info->alive_ns = bpf_ktime_get_ns();
		/* Ports and addresses are final only now (connect binds the
		 * source port after SYN_SENT). */
		read_tuple_btf(sk, info);
		refresh_tcp_counters(tp, info);
		return 0;
	case TCP_CLOSE:
		if (oldstate == TCP_LISTEN) {
			TCP_PROG(forget_listener)(sk);
			return 0;
		}
		info = bpf_map_lookup_elem(&conns, &key);
		if (!info || (info->flags & FT_FLAG_CLOSED))
			return 0; /* a socket that never connected, or handed over */
		if (setting(FT_SETTING_TEST_MISS_TCP_CLOSES))
			return 0; /* as a skipped run would: the walks find it gone */
		update_tcp_bytes(tp, info);
		read_tuple_btf(sk, info);
		read_tcp_counters(tp, info);
		info->tcp_state = TCP_CLOSE;
		info->close_err = sk->sk_err;
		hand_over_closed(&key, info);
		return 0;
	}
	return 0;
}

TWIN_PROGRAMS("tp_btf/inet_sock_set_state", TCP_PROG(flowtel_state), TCP_PROG(flowtel_state_twin),
	      TCP_BUSY, 1, TCP_PROG(on_state)(sk, oldstate, newstate),
	      struct sock *sk, int oldstate, int newstate)

SEC("tp_btf/tcp_retransmit_skb")
int TCP_BPF_PROG(TCP_PROG(flowtel_retransmit), struct sock *sk)
{
	struct conn_key key = {};
	struct conn_info *info;
	struct tcp_sock *tp = bpf_skc_to_tcp_sock(sk);

	if (!tp)
		return 0;
	key.cookie = TCP_KEY(sk);
	info = bpf_map_lookup_elem(&conns, &key);
	if (info)
		refresh_tcp_counters(tp, info);
	return 0;
}

static __always_inline int TCP_PROG(walk_tcp)(struct bpf_iter__tcp *ctx, enum tcp_walk walk)
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
	key.cookie = TCP_KEY(sk);
	state = sk->__sk_common.skc_state;
	if (walk == WALK_DISCOVER && state == TCP_LISTEN) {
		discover_listener(sk, key.cookie);
		return 0;
	}
	if (!tcp_connected(state))
		return 0; /* what the state program sees open */
	if (walk == WALK_DISCOVER) {
		info = find_or_track_tcp(tp, &key, SEEN_MID_LIFE, 0, discovered_direction(sk));
		if (info) {
			info->flags |= FT_FLAG_ESTABLISHED;
			info->alive_ns = bpf_ktime_get_ns();
		}
		return 0;
	}
	info = bpf_map_lookup_elem(&conns, &key);
	if (!info || (info->flags & FT_FLAG_CLOSED))
		return 0;
	info->alive_ns = bpf_ktime_get_ns();
	refresh_tcp_counters(tp, info);
	return 0;
}

/* Once at start, in each network namespace: the TCP connections older than
 * the agent, tracked from now. */
SEC("iter/tcp")
int TCP_PROG(flowtel_tcp_discover)(struct bpf_iter__tcp *ctx)
{
	return TCP_PROG(walk_tcp)(ctx, WALK_DISCOVER);
}

/* Before each poll, in each network namespace that holds tracked
 * connections: their bytes and TCP counters as of now. */
SEC("iter/tcp")
int TCP_PROG(flowtel_tcp_refresh)(struct bpf_iter__tcp *ctx)
{
	return TCP_PROG(walk_tcp)(ctx, WALK_REFRESH);
}

/*
 * One open file of one task. Its socket is an untrusted pointer: no helper
 * takes it, but plain loads do (the verifier makes them fault-safe), and
 * they are cheaper than bpf_probe_read_kernel() calls; the cookie is the
 * one the socket already has. A listener's owner is remembered
 * (accepted connections take it), and a tracked connection that has no
 * owner, or was accepted, takes the task that holds it. An accepted
 * connection first gets its listener's process, which need not be the one
 * that serves it (a prefork server's worker, a socket-activated service):
 * holding the socket is what decides.
 */
SEC("iter/task_file")
int TCP_PROG(flowtel_owners)(struct bpf_iter__task_file *ctx)
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
	sk = sock->sk;
	if (!sk || tracked_protocol_btf(sk) != IPPROTO_TCP)
		return 0;
	state = sk->__sk_common.skc_state;
	if (state == TCP_LISTEN) {
		owner_of_task(task, &owner);
		remember_listener_btf(sk, &owner, TCP_LOADED_KEY(sk));
		return 0;
	}
	if (!tcp_connected(state))
		return 0; /* the state program sees it open */
	key.cookie = TCP_LOADED_KEY(sk);
	if (!key.cookie)
		return 0; /* no program has seen this socket: not tracked */
	info = bpf_map_lookup_elem(&conns, &key);
	if (!info)
		return 0;
	/* Only the connections that take it pay for reading the task's
	 * process, cgroup and name: one the walk already gave this process
	 * keeps it. */
	if (!info->pid || (info->direction == FT_DIR_INCOMING && info->pid != task->tgid)) {
		owner_of_task(task, &owner);
		set_owner(info, &owner);
	}
	return 0;
}

#undef TCP_BPF_PROG
