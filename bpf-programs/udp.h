/* SPDX-License-Identifier: GPL-2.0 OR Apache-2.0 */
/*
 * UDP has no per-socket counters, so each datagram is counted as it moves:
 * by socket cookie and, for an unconnected socket, peer.
 *
 *   tp_btf/sock_send_length, sock_recv_length   datagrams (Linux 6.3+)
 *   kprobes on udp_sendmsg, skb_consume_udp ...  datagrams (older kernels)
 *   cgroup/sendmsg4|6, cgroup/recvmsg4|6         peer of unconnected UDP
 *   cgroup/connect4|6                            a new peer of connected UDP
 *   cgroup/sock_release                          UDP socket gone
 */

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

/* connect() on a UDP socket: a socket connected before, to another peer,
 * starts a new conversation. Its old one ends here, before any datagram
 * to the new peer can count on it. (A disconnect, connect(AF_UNSPEC),
 * runs no hook: the old conversation then ends when idle.) */
static __always_inline void end_connected_udp(struct bpf_sock_addr *ctx)
{
	struct conn_key key = {};
	struct conn_info *info;

	if (ctx->protocol != IPPROTO_UDP)
		return;
	key.cookie = bpf_get_socket_cookie(ctx);
	info = bpf_map_lookup_elem(&conns, &key);
	if (!info)
		return;
	hand_over_closed(&key, info);
}

SEC("cgroup/connect4")
int flowtel_udp_connect4(struct bpf_sock_addr *ctx)
{
	end_connected_udp(ctx);
	return 1;
}

SEC("cgroup/connect6")
int flowtel_udp_connect6(struct bpf_sock_addr *ctx)
{
	end_connected_udp(ctx);
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
	return count_udp_core(sk, sent, 1);
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
	return count_udp_core(sk, len, 0);
}

/* Gives every new socket its cookie, which kprobes can read but not make. */
SEC("cgroup/sock_create")
int flowtel_sock_create(struct bpf_sock *ctx)
{
	bpf_get_socket_cookie(ctx);
	return 1;
}
