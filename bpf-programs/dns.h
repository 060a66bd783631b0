/* SPDX-License-Identifier: GPL-2.0 OR Apache-2.0 */
/*
 * DNS messages of the host's clients, every socket and namespace: a query
 * leaving for the DNS port (cgroup_skb egress) and an answer as its client
 * reads it (tp_btf/sock_recv_length, Linux 6.3+, below) or, on older
 * kernels, as it arrives (cgroup_skb ingress), copied whole or cut at
 * FT_DNS_CAPTURE bytes into dns_events. User space parses them; nothing
 * here trusts the message.
 *
 * Where UDP is counted by flowtel_udp_egress and flowtel_recv (and
 * nothing is pinned), those programs capture DNS too (FT_SETTING_DNS_IN_UDP):
 * each program run costs about 50 ns here, and a loopback round trip passes
 * the hooks six times. Otherwise the programs below, of their own. A packet
 * that is not DNS costs two context loads, a bounds check and two or three
 * byte loads.
 *
 * Not handled: a DNS message over TCP that does not start its segment or
 * read (the second message of one, the rest of a long one; a read of the
 * 2-byte length alone is followed, in user space); IPv6 extension headers
 * before the transport header; headers outside the packet's linear part.
 * The server side (a DNS server on this host) is not captured: each
 * lookup is counted once, at its client.
 */

/* The DNS port, in host byte order; set by user space at load
 * (receiver.dns_port). */
volatile const __u16 dns_port = 53;

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 2 << 20);
} dns_events SEC(".maps");

struct dns_tcp_header {
	__be16 source;
	__be16 dest;
	__be32 seq;
	__be32 ack_seq;
	__u8 reserved_offset; /* data offset in the high nibble */
	__u8 flags;
	__be16 window;
};

/* Copies the message at `offset` (`length` bytes) and the packet's facts
 * into a ring buffer record. */
static __always_inline void hand_over_dns(struct __sk_buff *ctx, __u32 ip_version, __u8 protocol,
					  __u32 offset, __u32 length, int query, __u16 client_port,
					  __u16 server_port)
{
	struct dns_event *event;
	__u32 captured = length;

	event = bpf_ringbuf_reserve(&dns_events, sizeof(*event), 0);
	if (!event) {
		stat_inc(FT_STAT_DNS_LOST);
		return;
	}
	event->ktime_ns = bpf_ktime_get_ns();
	event->cookie = bpf_get_socket_cookie(ctx);
	event->length = length;
	event->protocol = protocol;
	event->direction = query ? FT_DNS_QUERY : FT_DNS_ANSWER;
	event->client_port = client_port;
	event->server_port = server_port;
	event->netns = 0;
	event->pid = 0;
	__builtin_memset(event->comm, 0, sizeof(event->comm));
	__builtin_memset(event->client_addr, 0, sizeof(event->client_addr));
	__builtin_memset(event->server_addr, 0, sizeof(event->server_addr));
	if (query) {
		/* Egress runs in the sender's context (answers arrive in
		 * softirq, where the current task is anyone's). */
		struct task_struct *task = bpf_get_current_task_btf();

		event->netns = task->nsproxy->net_ns->ns.inum;
		event->pid = task->tgid;
		/* The process's name, not the sending thread's. */
		__builtin_memcpy(event->comm, task->group_leader->comm, sizeof(event->comm));
	}
	/* A query goes client to server, an answer server to client. */
	if (ip_version == 4) {
		event->family = AF_INET;
		bpf_skb_load_bytes(ctx, query ? 12 : 16, event->client_addr, 4);
		bpf_skb_load_bytes(ctx, query ? 16 : 12, event->server_addr, 4);
	} else {
		event->family = AF_INET6;
		bpf_skb_load_bytes(ctx, query ? 8 : 24, event->client_addr, 16);
		bpf_skb_load_bytes(ctx, query ? 24 : 8, event->server_addr, 16);
	}
	if (captured > FT_DNS_CAPTURE)
		captured = FT_DNS_CAPTURE;
	event->captured = 0;
	if (captured >= 1) {
		/* The same value, in a form the verifier can bound: [1, 512]. */
		barrier_var(captured);
		captured = ((captured - 1) & (FT_DNS_CAPTURE - 1)) + 1;
		if (!bpf_skb_load_bytes(ctx, offset, event->message, captured))
			event->captured = captured;
	}
	/* A quarter, not a half: the reader parses as it drains, so it
	 * is given more room to catch up. */
	bpf_ringbuf_submit(event, ring_wakeup(&dns_events, 4));
}

/* A client's DNS message in this packet, if any: the checks that every
 * packet pays come first, the copy only for the DNS port's. */
static __always_inline int capture_dns(struct __sk_buff *ctx, int query)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u8 *ip = data;
	__u32 ip_version, l4, length;
	__u8 protocol;
	__u16 *ports;
	__u16 client_port, server_port;

	if (data + 40 > data_end)
		return 1;
	ip_version = ip[0] >> 4;
	if (ip_version == 4) {
		protocol = ip[9];
		l4 = (ip[0] & 0xf) * 4;
		length = ((__u32)ip[2] << 8 | ip[3]);
	} else if (ip_version == 6) {
		protocol = ip[6];
		l4 = 40;
		length = ((__u32)ip[4] << 8 | ip[5]) + 40;
	} else {
		return 1;
	}
	if (protocol != IPPROTO_UDP && protocol != IPPROTO_TCP)
		return 1;
	if (l4 < 20 || l4 > 60)
		return 1;
	ports = data + l4;
	if ((void *)(ports + 2) > data_end)
		return 1;
	/* A query's destination is the DNS port, an answer's source. */
	if (bpf_ntohs(ports[query ? 1 : 0]) != dns_port)
		return 1;
	client_port = bpf_ntohs(ports[query ? 0 : 1]);
	server_port = dns_port;
	if (length > ctx->len)
		length = ctx->len;
	if (protocol == IPPROTO_UDP) {
		l4 += 8;
	} else {
		struct dns_tcp_header tcp;

		if (bpf_skb_load_bytes(ctx, l4, &tcp, sizeof(tcp)))
			return 1;
		l4 += (tcp.reserved_offset >> 4) * 4;
	}
	/* Handshakes and acknowledgements carry nothing. */
	if (length <= l4)
		return 1;
	hand_over_dns(ctx, ip_version, protocol, l4, length - l4, query, client_port, server_port);
	return 1;
}

SEC("cgroup_skb/egress")
int flowtel_dns_egress(struct __sk_buff *ctx)
{
	return capture_dns(ctx, 1);
}

SEC("cgroup_skb/ingress")
int flowtel_dns_ingress(struct __sk_buff *ctx)
{
	return capture_dns(ctx, 0);
}

/* --- Answers as the client reads them (tp_btf/sock_recv_length). -------
 *
 * The ingress hook above makes every packet the host receives pay its
 * dispatch, DNS or not (about 40 ns here, 2-4 % of a loopback ping-pong).
 * This way costs a packet nothing: the receive tracepoint fires once per
 * read, returns at once unless the socket is UDP (or TCP to the DNS port),
 * and copies an answer from the reader's own buffer, just written by the
 * same syscall, found through its arguments (x86-64 system call ABI). A
 * read it cannot place (recvmmsg, io_uring, a 32-bit task) counts as
 * FT_STAT_DNS_LOST. The datagram's sender comes from recvmsg4|6 in the
 * same syscall (stashed only when it is the DNS port) or, for a connected
 * socket, from the socket. */

/* The server of an answer being read, by thread, from the recvmsg hook to
 * the tracepoint of the same syscall. Apart from udp_peers: each feature
 * turns off alone, and either may run first on the tracepoint. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, __u64);
	__type(value, struct udp_peer);
} dns_servers SEC(".maps");

/* How many entries dns_servers holds, about: while none, a UDP read that
 * is not from the DNS port costs an array load, not a hash lookup. A hint
 * only: an entry the LRU evicts, or a thread that peeked and left, keeps
 * it above the truth, which costs lookups, never answers. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __s64);
} dns_servers_held SEC(".maps");

static __always_inline void count_dns_servers(__s64 change)
{
	__u32 index = 0;
	__s64 *held = bpf_map_lookup_elem(&dns_servers_held, &index);

	if (held)
		__sync_fetch_and_add(held, change);
}

static __always_inline int dns_servers_stashed(void)
{
	__u32 index = 0;
	__s64 *held = bpf_map_lookup_elem(&dns_servers_held, &index);

	return held && *held > 0;
}

static __always_inline int stash_dns_server(struct bpf_sock_addr *ctx, __u16 family)
{
	struct udp_peer server = {};
	__u64 thread = bpf_get_current_pid_tgid();

	if (bpf_ntohs((__u16)ctx->user_port) != dns_port)
		return 1;
	peer_of_sock_addr(ctx, family, &server);
	if (!bpf_map_update_elem(&dns_servers, &thread, &server, BPF_NOEXIST))
		count_dns_servers(1);
	else
		bpf_map_update_elem(&dns_servers, &thread, &server, BPF_ANY);
	return 1;
}

SEC("cgroup/recvmsg4")
int flowtel_dns_recvmsg4(struct bpf_sock_addr *ctx)
{
	return stash_dns_server(ctx, AF_INET);
}

SEC("cgroup/recvmsg6")
int flowtel_dns_recvmsg6(struct bpf_sock_addr *ctx)
{
	return stash_dns_server(ctx, AF_INET6);
}

/* x86-64 system calls that read a socket into user memory. */
#define FT_NR_READ 0
#define FT_NR_READV 19
#define FT_NR_RECVFROM 45
#define FT_NR_RECVMSG 47
/* The code segment of a 64-bit user task (__USER_CS). */
#define FT_USER_CS 0x33

/* User-space layouts (the system call ABI, not kernel types). */
struct ft_iovec {
	__u64 base;
	__u64 len;
};

struct ft_user_msghdr {
	__u64 name;
	__u32 namelen;
	__u32 _pad;
	__u64 iov;
	__u64 iovlen;
};

/* The user buffer this syscall read into and its size; 0 when the read is
 * not one of the calls above. */
static __always_inline __u64 read_buffer(__u64 *size)
{
	struct pt_regs *regs = (struct pt_regs *)bpf_task_pt_regs(bpf_get_current_task_btf());
	/* Loaded before any branch: the verifier refuses an instruction
	 * that the compiler shares between this pointer and the stack. */
	__u64 segment = regs->cs, call = regs->orig_ax;
	__u64 second = regs->si, third = regs->dx;
	struct ft_user_msghdr msg;
	struct ft_iovec iov;
	__u64 vector;

	barrier_var(second);
	barrier_var(third);
	if (segment != FT_USER_CS)
		return 0;
	switch (call) {
	case FT_NR_READ:
	case FT_NR_RECVFROM:
		*size = third;
		return second;
	case FT_NR_RECVMSG:
		if (bpf_probe_read_user(&msg, sizeof(msg), (void *)second) || !msg.iovlen)
			return 0;
		vector = msg.iov;
		break;
	case FT_NR_READV:
		if (!third)
			return 0;
		vector = second;
		break;
	default:
		return 0;
	}
	/* The first segment only: a DNS reader gives one buffer. */
	if (bpf_probe_read_user(&iov, sizeof(iov), (void *)vector))
		return 0;
	*size = iov.len;
	return iov.base;
}

/* The server of an answer on sk being read now; 0 when the read is not
 * from the DNS port. */
static __always_inline int answer_server(struct sock *sk, __u64 cookie, struct udp_peer *server)
{
	__u64 thread = bpf_get_current_pid_tgid();
	struct udp_peer *stashed = 0;

	if (sk->sk_protocol == IPPROTO_UDP && dns_servers_stashed())
		stashed = bpf_map_lookup_elem(&dns_servers, &thread);
	if (stashed) {
		int ours = stashed->cookie == cookie;

		if (ours)
			*server = *stashed;
		if (!bpf_map_delete_elem(&dns_servers, &thread))
			count_dns_servers(-1);
		if (ours)
			return 1;
	}
	if (bpf_ntohs(sk->__sk_common.skc_dport) != dns_port)
		return 0;
	server->family = sk->__sk_common.skc_family;
	if (server->family == AF_INET)
		*(__u32 *)server->addr = sk->__sk_common.skc_daddr;
	else
		__builtin_memcpy(server->addr, &sk->__sk_common.skc_v6_daddr, 16);
	return 1;
}

static __always_inline int wants_dns_answer(struct sock *sk, int ret, int flags)
{
	if (ret <= 0 || (flags & MSG_PEEK))
		return 0;
	if (sk->sk_protocol == IPPROTO_UDP)
		return 1;
	return sk->sk_protocol == IPPROTO_TCP &&
	       bpf_ntohs(sk->__sk_common.skc_dport) == dns_port;
}

static __always_inline int capture_dns_answer(struct sock *sk, int ret)
{
	struct dns_event *event;
	struct udp_peer server = {};
	__u64 cookie, buffer, size = 0;
	__u32 captured = ret;
	__u16 family = sk->__sk_common.skc_family;

	if (family != AF_INET && family != AF_INET6)
		return 0;
	/* Everything that decides before reserving: most reads are not DNS. */
	cookie = (__u64)sk->__sk_common.skc_cookie.counter ?: bpf_get_socket_cookie(sk);
	if (!answer_server(sk, cookie, &server))
		return 0;
	buffer = read_buffer(&size);
	if (!buffer) {
		stat_inc(FT_STAT_DNS_LOST);
		return 0;
	}
	event = bpf_ringbuf_reserve(&dns_events, sizeof(*event), 0);
	if (!event) {
		stat_inc(FT_STAT_DNS_LOST);
		return 0;
	}
	__builtin_memset(event, 0, __builtin_offsetof(struct dns_event, message));
	event->family = server.family;
	__builtin_memcpy(event->server_addr, server.addr, 16);
	event->ktime_ns = bpf_ktime_get_ns();
	event->cookie = cookie;
	event->length = ret;
	event->protocol = sk->sk_protocol;
	event->direction = FT_DNS_ANSWER;
	event->client_port = sk->__sk_common.skc_num;
	event->server_port = dns_port;
	if (family == AF_INET)
		*(__u32 *)event->client_addr = sk->__sk_common.skc_rcv_saddr;
	else
		__builtin_memcpy(event->client_addr, &sk->__sk_common.skc_v6_rcv_saddr, 16);
	if (captured > size)
		captured = size;
	if (captured > FT_DNS_CAPTURE)
		captured = FT_DNS_CAPTURE;
	if (captured >= 1) {
		barrier_var(captured);
		captured = ((captured - 1) & (FT_DNS_CAPTURE - 1)) + 1;
		if (!bpf_probe_read_user(event->message, captured, (void *)buffer))
			event->captured = captured;
	}
	bpf_ringbuf_submit(event, ring_wakeup(&dns_events, 4));
	return 0;
}

TWIN_PROGRAMS("tp_btf/sock_recv_length", flowtel_dns_recv, flowtel_dns_recv_twin,
	      FT_BUSY_DNS_RECV, wants_dns_answer(sk, ret, flags), capture_dns_answer(sk, ret),
	      struct sock *sk, int ret, int flags)
