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

TWIN_PROGRAMS("tp_btf/sock_send_length", flowtel_send, flowtel_send_twin, FT_BUSY_SEND,
	      sk->sk_protocol == IPPROTO_UDP, count_udp_btf(sk, ret, 1),
	      struct sock *sk, int ret, int flags)

/* A UDP datagram read, or (with FT_SETTING_DNS_IN_UDP) a DNS answer: the
 * one program run per read for both features. */
static __always_inline int read_datagram_or_answer(struct sock *sk, int ret)
{
	if (ret > 0 && setting(FT_SETTING_DNS_IN_UDP))
		capture_dns_answer(sk, ret);
	if (sk->sk_protocol != IPPROTO_UDP)
		return 0;
	return count_udp_btf(sk, ret, 0);
}

/* A peek leaves the datagram queued: it counts when really read. */
TWIN_PROGRAMS("tp_btf/sock_recv_length", flowtel_recv, flowtel_recv_twin, FT_BUSY_RECV,
	      !(flags & MSG_PEEK) && (sk->sk_protocol == IPPROTO_UDP || wants_dns_answer(sk, ret, flags)),
	      read_datagram_or_answer(sk, ret), struct sock *sk, int ret, int flags)

/* --- UDP sends from the packets (cgroup_skb egress). -------------------
 *
 * Each datagram a local UDP socket sends passes here in the sender's own
 * context, before fragmentation: its payload length is in its UDP header,
 * its peer in its IP header (or, for sendto(), in the sendmsg hook's stash). Unlike a tracing program, a cgroup program has
 * no per-CPU recursion guard. Tracepoint programs are preemptible from
 * Linux 7.2, and the kernel skips (recursion_misses) every run of one that
 * another task was preempted in on the same CPU: a quarter of the sends on
 * a busy one-CPU guest went uncounted through sock_send_length. */

struct udp_header {
	__be16 source;
	__be16 dest;
	__be16 len;
	__be16 check;
};

/* The destination and payload of an outgoing IPv4 or IPv6 UDP datagram;
 * -1 when the packet is neither (an IPv6 extension header before UDP). */
static __always_inline int read_datagram(struct __sk_buff *ctx, struct conn_key *peer,
					 __u32 *payload)
{
	struct udp_header udp;
	__u32 udp_offset;
	__u8 version_ihl;
	__u8 next_header;

	if (bpf_skb_load_bytes(ctx, 0, &version_ihl, 1))
		return -1;
	if (version_ihl >> 4 == 4) {
		udp_offset = (version_ihl & 0xf) * 4;
		if (bpf_skb_load_bytes(ctx, 16, peer->peer_addr, 4))
			return -1;
		peer->peer_family = AF_INET;
	} else if (version_ihl >> 4 == 6) {
		if (bpf_skb_load_bytes(ctx, 6, &next_header, 1) || next_header != IPPROTO_UDP)
			return -1;
		udp_offset = 40;
		if (bpf_skb_load_bytes(ctx, 24, peer->peer_addr, 16))
			return -1;
		peer->peer_family = AF_INET6;
	} else {
		return -1;
	}
	if (bpf_skb_load_bytes(ctx, udp_offset, &udp, sizeof(udp)))
		return -1;
	if (bpf_ntohs(udp.len) < sizeof(udp))
		return -1;
	peer->peer_port = bpf_ntohs(udp.dest);
	*payload = bpf_ntohs(udp.len) - sizeof(udp);
	return 0;
}

/* The datagram's peer as the socket names it: an IPv6 socket sends to an
 * IPv4 peer through its v4-mapped address (as recvmsg6 reports it). */
static __always_inline void peer_as_socket_names_it(struct conn_key *key, __u16 socket_family)
{
	if (socket_family != AF_INET6 || key->peer_family != AF_INET)
		return;
	__u32 v4 = *(__u32 *)key->peer_addr;
	((__u32 *)key->peer_addr)[0] = 0;
	((__u32 *)key->peer_addr)[1] = 0;
	((__u32 *)key->peer_addr)[2] = bpf_htonl(0xffff);
	((__u32 *)key->peer_addr)[3] = v4;
	key->peer_family = AF_INET6;
}

/* Whether the key's peer is the one the socket is connected to: its
 * datagrams then belong to the socket's one conversation, as a send()
 * without an address does. */
static __always_inline int is_connected_peer(const struct bpf_sock *sk, const struct conn_key *key)
{
	if (!sk->dst_port || bpf_ntohs(sk->dst_port) != key->peer_port)
		return 0;
	if (key->peer_family == AF_INET)
		return sk->dst_ip4 == *(__u32 *)key->peer_addr;
	return same_ip6(sk->dst_ip6, (const __u32 *)key->peer_addr);
}

/* A new conversation's facts from the socket and the sending task (this
 * hook runs in the sender's context; the task's namespace is the socket's
 * but for a socket handed across namespaces). */
static __always_inline void new_udp_conn_from_skb(const struct bpf_sock *sk, struct conn_info *info)
{
	struct task_struct *task = bpf_get_current_task_btf();
	struct owner owner = {};

	info->first_seen_ns = bpf_ktime_get_ns();
	info->protocol = IPPROTO_UDP;
	info->netns = task->nsproxy->net_ns->ns.inum;
	info->family = sk->family;
	info->local_port = sk->src_port;
	info->remote_port = bpf_ntohs(sk->dst_port);
	if (sk->family == AF_INET) {
		*(__u32 *)info->local_addr = sk->src_ip4;
		*(__u32 *)info->remote_addr = sk->dst_ip4;
	} else {
		__builtin_memcpy(info->local_addr, (void *)sk->src_ip6, 16);
		__builtin_memcpy(info->remote_addr, (void *)sk->dst_ip6, 16);
	}
	info->direction = FT_DIR_OUTGOING;
	/* From the task itself: bpf_get_current_comm() is no cgroup_skb
	 * helper on Linux 6.12. */
	owner.pid = task->tgid;
	owner.cgroup_id = bpf_get_current_cgroup_id();
	__builtin_memcpy(owner.comm, task->comm, sizeof(owner.comm));
	set_owner(info, &owner);
}

SEC("cgroup_skb/egress")
int flowtel_udp_egress(struct __sk_buff *ctx)
{
	struct conn_key key = {};
	struct conn_key packet = {};
	struct conn_info info = {};
	struct conn_info *found;
	struct bpf_sock *sk = ctx->sk;
	__u32 payload;

	if (setting(FT_SETTING_DNS_IN_UDP))
		capture_dns(ctx, 1);
	if (!sk)
		return 1;
	sk = bpf_sk_fullsock(sk);
	if (!sk || sk->protocol != IPPROTO_UDP ||
	    (sk->family != AF_INET && sk->family != AF_INET6))
		return 1;
	if (read_datagram(ctx, &packet, &payload)) {
		stat_inc(FT_STAT_UNTRACKED);
		return 1;
	}
	key.cookie = bpf_get_socket_cookie(ctx);
	/* The peer as the sender named it, before the output path's NAT
	 * rewrote the packet (a DNAT in this host's output chain): what
	 * sendto() named, stashed by cgroup/sendmsg4|6 in this syscall; else,
	 * for a connected socket, its one conversation; else the packet's. */
	take_udp_peer(&key);
	if (!key.peer_family && !sk->dst_port) {
		peer_as_socket_names_it(&packet, sk->family);
		__builtin_memcpy(key.peer_addr, packet.peer_addr, sizeof(key.peer_addr));
		key.peer_port = packet.peer_port;
		key.peer_family = packet.peer_family;
	}
	if (!setting(FT_SETTING_SEND_PEERS) || is_connected_peer(sk, &key))
		forget_peer(&key);
	found = bpf_map_lookup_elem(&conns, &key);
	if (!found) {
		new_udp_conn_from_skb(sk, &info);
		found = insert_conn(&key, &info, SEEN_MID_LIFE);
		if (!found)
			return 1;
	}
	/* A UDP_SEGMENT send is one packet here, several on the wire. */
	add_udp_datagrams(found, payload, ctx->gso_segs > 1 ? ctx->gso_segs : 1, 1);
	return 1;
}

/* --- Peers of unconnected UDP datagrams (cgroup sock_addr hooks). ------ */

static __always_inline void stash_udp_peer(struct bpf_sock_addr *ctx, __u16 family)
{
	struct udp_peer peer = {};
	__u64 thread = bpf_get_current_pid_tgid();

	peer_of_sock_addr(ctx, family, &peer);
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
	bpf_ringbuf_submit(event, ring_wakeup(&events, 2));
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
