/* SPDX-License-Identifier: GPL-2.0 OR Apache-2.0 */
/*
 * DNS messages of the host's clients, every socket and namespace: a query
 * leaving for the DNS port (cgroup_skb egress) and an answer arriving from
 * it (cgroup_skb ingress), copied whole or cut at FT_DNS_CAPTURE bytes into
 * dns_events. User space parses them; nothing here trusts the message.
 *
 * Programs of their own rather than a branch of flowtel_udp_egress: the
 * feature turns off alone (receiver.dns: false, or a refused program), and
 * TCP answers need an ingress hook anyway. A packet that is not DNS costs
 * two context loads, a bounds check and two or three byte loads.
 *
 * Not handled: a DNS message over TCP that does not start its segment (the
 * second message of a segment, the rest of a long one); IPv6 extension
 * headers before the transport header; headers outside the packet's linear
 * part. The server side (a DNS server on this host) is not captured: each
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
