// SPDX-License-Identifier: GPL-2.0 OR Apache-2.0
/*
 * flowtel's kernel side.
 *
 * TCP costs nothing per send or receive: a connection is tracked from its
 * state changes, and its bytes and segments are the kernel's own per-socket
 * counters, copied at each poll and at the close. UDP has no such counters,
 * so each datagram is counted as it moves: by socket cookie and, for an
 * unconnected socket, peer. Everything else (names, mappings, aggregation)
 * is user space's.
 *
 *   sock:inet_sock_set_state                        TCP listen, open, close
 *   tcp:tcp_retransmit_skb                          refresh TCP counters
 *   iter/bpf_sk_storage_map                         TCP counts, each poll
 *   iter/task_file                                  TCP older than the agent;
 *                                                   who holds each socket
 *   sock:sock_send_length / sock:sock_recv_length   UDP datagrams (6.3+)
 *   kprobes on udp_sendmsg, skb_consume_udp, ...     UDP datagrams (older)
 *   cgroup/sendmsg4|6, cgroup/recvmsg4|6            peer of unconnected UDP
 *   cgroup/sock_release                             UDP socket gone
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
#define TCP_LISTEN 10

/* enum sock_flags: the peer's FIN has been received. */
#define SOCK_DONE 1

char LICENSE[] SEC("license") = "Dual BSD/GPL";

static __always_inline void owner_of_current(struct owner *owner)
{
	owner->pid = bpf_get_current_pid_tgid() >> 32;
	owner->cgroup_id = bpf_get_current_cgroup_id();
	bpf_get_current_comm(owner->comm, sizeof(owner->comm));
}

static __always_inline void owner_of_task(struct task_struct *task, struct owner *owner)
{
	owner->pid = task->tgid;
	owner->cgroup_id = task->cgroups->dfl_cgrp->kn->id;
	bpf_probe_read_kernel(owner->comm, sizeof(owner->comm), task->comm);
}

static __always_inline void set_owner(struct conn_info *info, const struct owner *owner)
{
	info->pid = owner->pid;
	info->cgroup_id = owner->cgroup_id;
	__builtin_memcpy(info->comm, owner->comm, sizeof(info->comm));
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

static __always_inline void add_udp(struct conn_info *info, int bytes, int sending)
{
	if (sending) {
		__sync_fetch_and_add(&info->bytes_sent, bytes);
		__sync_fetch_and_add(&info->packets_sent, 1);
	} else {
		__sync_fetch_and_add(&info->bytes_received, bytes);
		__sync_fetch_and_add(&info->packets_received, 1);
	}
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
#include "sock_access.h"
#undef FT_VARIANT
#undef FT_READ
#undef FT_READ_INTO
#undef FT_NETNS
#undef FT_COOKIE
#undef FT_TCP_SOCK

#define FT_VARIANT(name) name##_kp
#define FT_READ(ptr, field) BPF_CORE_READ((ptr), field)
#define FT_READ_INTO(dst, ptr, field) BPF_CORE_READ_INTO((dst), (ptr), field)
#define FT_NETNS(sk) BPF_CORE_READ((sk), __sk_common.skc_net.net, ns.inum)
#define FT_KP_COOKIE(sk) ((__u64)BPF_CORE_READ((sk), __sk_common.skc_cookie.counter))
#define FT_COOKIE(sk) FT_KP_COOKIE(sk)
/* The caller checked sk_protocol: a TCP socket is a tcp_sock. */
#define FT_TCP_SOCK(sk) ((struct tcp_sock *)(sk))
#include "sock_access.h"
#undef FT_VARIANT
#undef FT_READ
#undef FT_READ_INTO
#undef FT_NETNS
#undef FT_COOKIE
#undef FT_TCP_SOCK


/* --- TCP bytes from the socket's own counters. ------------------------ */

/* The socket's flags, which moved into sock_common in Linux 6.13. */
static __always_inline unsigned long sock_flags(struct sock *sk)
{
	if (bpf_core_field_exists(sk->__sk_common.skc_flags))
		return sk->__sk_common.skc_flags;
	return sk->sk_flags;
}

/* A TCP socket's payload bytes so far: sent once (retransmissions not
 * again) and received in order. The counters are RFC 4898's, the ones
 * tcp_info reports. */
static __always_inline void read_tcp_bytes(struct sock *sk, __u64 *sent, __u64 *received)
{
	struct tcp_sock *tp = bpf_skc_to_tcp_sock(sk);

	*sent = 0;
	*received = 0;
	if (!tp)
		return;
	*sent = tp->bytes_sent - tp->bytes_retrans;
	*received = tp->bytes_received;
	/* The peer's FIN takes a sequence number, which bytes_received counts. */
	if (*received && (sock_flags(sk) & (1UL << SOCK_DONE)))
		*received -= 1;
}

/* Gives a tracked TCP connection its socket storage: where its counts
 * start. A connection seen opening counts from zero (data sent with the SYN
 * included); an older one from now. An existing storage (a previous agent's,
 * through a restart) is kept. */
static __always_inline void start_tcp_bytes(struct sock *sk, __u64 cookie,
					    const struct conn_info *info)
{
	struct tcp_start start = {};

	start.cookie = cookie;
	if (!(info->flags & FT_FLAG_SEEN_OPEN))
		read_tcp_bytes(sk, &start.bytes_sent, &start.bytes_received);
	bpf_sk_storage_get(&tcp_starts, sk, &start, BPF_SK_STORAGE_GET_F_CREATE);
}

/* Brings a connection's bytes up to date. Two counters read while the
 * socket moves can briefly disagree (a retransmission between its two
 * increments, a FIN between its sequence number and its flag): totals
 * never go down, so such a moment is at most one segment early, never
 * counted twice. */
static __always_inline void update_tcp_bytes(struct sock *sk, const struct tcp_start *start,
					     struct conn_info *info)
{
	__u64 sent, received;

	read_tcp_bytes(sk, &sent, &received);
	if (sent >= start->bytes_sent && sent - start->bytes_sent > info->bytes_sent)
		info->bytes_sent = sent - start->bytes_sent;
	if (received >= start->bytes_received &&
	    received - start->bytes_received > info->bytes_received)
		info->bytes_received = received - start->bytes_received;
}

/* --- UDP datagrams (tracepoint set, Linux 6.3+). ------------------------
 *
 * These tracepoints fire for every protocol; TCP returns at once. */

SEC("tp_btf/sock_send_length")
int BPF_PROG(flowtel_send, struct sock *sk, int ret, int flags)
{
	if (sk->sk_protocol != IPPROTO_UDP)
		return 0;
	return count_udp_btf(sk, ret, 1);
}

SEC("tp_btf/sock_recv_length")
int BPF_PROG(flowtel_recv, struct sock *sk, int ret, int flags)
{
	/* A peek leaves the datagram queued: it counts when really read. */
	if (sk->sk_protocol != IPPROTO_UDP || (flags & MSG_PEEK))
		return 0;
	return count_udp_btf(sk, ret, 0);
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

/* The listeners map's key for the port sk is bound to, in its namespace. */
static __always_inline struct listener_key listener_key_of(struct sock *sk)
{
	struct listener_key key = {};

	key.netns = sk->__sk_common.skc_net.net->ns.inum;
	key.port = sk->__sk_common.skc_num;
	return key;
}

/* listen() runs in its process: remember who listens on the port. */
static __always_inline void remember_listener(struct sock *sk, const struct owner *owner)
{
	struct listener_key key = listener_key_of(sk);
	struct owner value = *owner;

	if (!key.port)
		return; /* not bound yet: listen() binds after this state change */
	value.listener_cookie = bpf_get_socket_cookie(sk);
	bpf_map_update_elem(&listeners, &key, &value, BPF_ANY);
}

static __always_inline void forget_listener(struct sock *sk)
{
	struct listener_key key = listener_key_of(sk);
	struct owner *owner = bpf_map_lookup_elem(&listeners, &key);

	/* Another listener on the port (SO_REUSEPORT) may have taken it over. */
	if (owner && owner->listener_cookie == bpf_get_socket_cookie(sk))
		bpf_map_delete_elem(&listeners, &key);
}

/* An accepted connection's first owner: the process listening on its
 * port, if known. */
static __always_inline const struct owner *listeners_owner(struct sock *sk)
{
	struct listener_key key = listener_key_of(sk);

	return bpf_map_lookup_elem(&listeners, &key);
}

SEC("tp_btf/inet_sock_set_state")
int BPF_PROG(flowtel_state, struct sock *sk, int oldstate, int newstate)
{
	struct conn_key key = {};
	struct conn_info *info;
	struct tcp_start *start;
	struct owner owner = {};

	if (tracked_protocol_btf(sk) != IPPROTO_TCP)
		return 0;
	key.cookie = bpf_get_socket_cookie(sk);

	switch (newstate) {
	case TCP_LISTEN:
		owner_of_current(&owner);
		remember_listener(sk, &owner);
		return 0;
	case TCP_SYN_SENT: /* connect(): process context */
		owner_of_current(&owner);
		find_or_track_btf(sk, &key, IPPROTO_TCP, SEEN_OPENING, &owner, FT_DIR_OUTGOING);
		return 0;
	case TCP_ESTABLISHED:
		/* An accepted connection starts here, not at SYN_RECV: the child
		 * gets its tuple, and on some kernels (6.1) its own cookie, only
		 * after that state change. */
		if (oldstate == TCP_SYN_RECV)
			info = find_or_track_btf(sk, &key, IPPROTO_TCP, SEEN_OPENING,
						 listeners_owner(sk), FT_DIR_INCOMING);
		else
			/* From SYN_SENT, whose change the agent missed. */
			info = find_or_track_btf(sk, &key, IPPROTO_TCP, SEEN_MID_LIFE, 0,
						 FT_DIR_OUTGOING);
		if (!info)
			return 0;
		info->flags |= FT_FLAG_ESTABLISHED;
		/* Ports and addresses are final only now (connect binds the
		 * source port after SYN_SENT). */
		read_tuple_btf(sk, info);
		read_tcp_counters_btf(sk, info);
		start_tcp_bytes(sk, key.cookie, info);
		return 0;
	case TCP_CLOSE:
		if (oldstate == TCP_LISTEN) {
			forget_listener(sk);
			return 0;
		}
		info = bpf_map_lookup_elem(&conns, &key);
		if (!info)
			return 0; /* a socket that never connected */
		start = bpf_sk_storage_get(&tcp_starts, sk, 0, 0);
		if (start && !start->closed) {
			update_tcp_bytes(sk, start, info);
			start->closed = 1;
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

/* Before each poll, user space runs this over every tracked TCP socket: it
 * brings the connection's entry up to date (bytes, and the TCP counters as
 * of now). */
SEC("iter/bpf_sk_storage_map")
int flowtel_tcp_refresh(struct bpf_iter__bpf_sk_storage_map *ctx)
{
	struct sock *sk = ctx->sk;
	struct tcp_start *start = ctx->value;
	struct conn_key key = {};
	struct conn_info *info;

	if (!sk || !start || start->closed)
		return 0;
	key.cookie = start->cookie;
	info = bpf_map_lookup_elem(&conns, &key);
	if (!info)
		return 0;
	update_tcp_bytes(sk, start, info);
	read_tcp_counters_btf(sk, info);
	return 0;
}

/* TCP states of a connection that may still move data. */
static __always_inline int tcp_connected(__u8 state)
{
	return state != TCP_CLOSE && state != TCP_LISTEN && state != TCP_SYN_SENT &&
	       state != TCP_SYN_RECV;
}

/* What a walk over every task's open files does with each TCP socket. */
enum file_walk {
	WALK_DISCOVER, /* at start: also track the connections older than the agent */
	WALK_OWNERS,   /* before each poll: owners only */
};

/*
 * One open file of one task: a listener's owner is remembered (accepted
 * connections take it), and a tracked connection that has no owner, or was
 * accepted, takes the task that holds it. An accepted connection first gets
 * its listener's process, which need not be the one that serves it (a
 * prefork server's worker, a socket-activated service): holding the socket
 * is what decides.
 */
static __always_inline int walk_file(struct bpf_iter__task_file *ctx, enum file_walk walk)
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
		remember_listener(sk, &owner);
		return 0;
	}
	if (!tcp_connected(state))
		return 0; /* the state program sees it open */
	key.cookie = bpf_get_socket_cookie(sk);
	if (walk == WALK_DISCOVER) {
		/* A new entry is inserted with its owner. */
		owner_of_task(task, &owner);
		info = find_or_track_btf(sk, &key, IPPROTO_TCP, SEEN_MID_LIFE, &owner,
					 FT_DIR_UNKNOWN);
	} else {
		info = bpf_map_lookup_elem(&conns, &key);
	}
	if (!info)
		return 0;
	if (!info->pid || info->direction == FT_DIR_INCOMING) {
		/* Before each poll, only the connections that take it pay for
		 * reading the task's process, cgroup and name. */
		if (walk == WALK_OWNERS)
			owner_of_task(task, &owner);
		set_owner(info, &owner);
	}
	if (walk == WALK_DISCOVER) {
		info->flags |= FT_FLAG_ESTABLISHED;
		start_tcp_bytes(sk, key.cookie, info);
	}
	return 0;
}

/* Once at start: the TCP sockets older than the agent, each with the
 * process that holds it (connections, tracked from now; listeners). */
SEC("iter/task_file")
int flowtel_discover(struct bpf_iter__task_file *ctx)
{
	return walk_file(ctx, WALK_DISCOVER);
}

/* Before each poll: who holds each tracked connection and listener now. */
SEC("iter/task_file")
int flowtel_owners(struct bpf_iter__task_file *ctx)
{
	return walk_file(ctx, WALK_OWNERS);
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

/* --- kprobe set: UDP datagrams on kernels before 6.3. -----------------
 *
 * Those kernels lack sock:sock_send_length and sock:sock_recv_length; the
 * other programs above work there unchanged. */

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
	return count_udp_kp(sk, sent, 1);
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

SEND_PROBES(udp_sendmsg)
/* For a v4-mapped peer udpv6_sendmsg calls udp_sendmsg, whose return takes
 * the thread's entry first: the outer return finds none, so nothing counts
 * twice. */
SEND_PROBES(udpv6_sendmsg)

/* UDP receive: skb_consume_udp gets the bytes returned to the reader, or a
 * negative length for MSG_PEEK. It runs after the recvmsg cgroup hook has
 * stashed an unconnected socket's peer. */
SEC("kprobe/skb_consume_udp")
int BPF_KPROBE(flowtel_kp_skb_consume_udp, struct sock *sk, void *skb, int len)
{
	return count_udp_kp(sk, len, 0);
}

/* Gives every new socket its cookie, which kprobes can read but not make. */
SEC("cgroup/sock_create")
int flowtel_sock_create(struct bpf_sock *ctx)
{
	bpf_get_socket_cookie(ctx);
	return 1;
}
