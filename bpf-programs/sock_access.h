/* SPDX-License-Identifier: GPL-2.0 OR Apache-2.0 */
/*
 * Reading a socket, in two variants, because programs reach sockets in two
 * ways. Included twice by flowtel.bpf.c:
 *
 *   _btf: a typed pointer (tp_btf, iter/tcp; also a socket reached
 *   through a task's files, which is untrusted): fields are plain loads.
 *   FT_COOKIE, the only helper call, needs a trusted one.
 *   _core: a bare pointer (kprobes): fields are CO-RE probe reads, and the
 *   cookie is the one the socket already has (made at creation by the
 *   cgroup sock_create hook, by the state tracepoint or by the TCP
 *   iterator).
 *
 * The including file defines:
 *   FT_VARIANT(name)              the function's name in this variant
 *   FT_READ(ptr, field)           one field's value
 *   FT_READ_INTO(dst, ptr, field) copy a field into *dst (sizeof *dst bytes)
 *   FT_NETNS(sk)                  the socket's network namespace inode
 *   FT_COOKIE(sk)                 the socket cookie (0: none yet)
 */

/* Returns the protocol when sk is TCP or UDP over IPv4/IPv6, else 0. */
static __always_inline __u8 FT_VARIANT(tracked_protocol)(const struct sock *sk)
{
	__u16 family = FT_READ(sk, __sk_common.skc_family);
	__u16 protocol;

	if (family != AF_INET && family != AF_INET6)
		return 0;
	protocol = FT_READ(sk, sk_protocol);
	if (protocol != IPPROTO_TCP && protocol != IPPROTO_UDP)
		return 0;
	return protocol;
}

static __always_inline void FT_VARIANT(read_tuple)(const struct sock *sk, struct conn_info *info)
{
	info->family = FT_READ(sk, __sk_common.skc_family);
	info->local_port = FT_READ(sk, __sk_common.skc_num);
	info->remote_port = bpf_ntohs(FT_READ(sk, __sk_common.skc_dport));
	if (info->family == AF_INET) {
		*(__be32 *)info->local_addr = FT_READ(sk, __sk_common.skc_rcv_saddr);
		*(__be32 *)info->remote_addr = FT_READ(sk, __sk_common.skc_daddr);
	} else {
		FT_READ_INTO(&info->local_addr, sk, __sk_common.skc_v6_rcv_saddr);
		FT_READ_INTO(&info->remote_addr, sk, __sk_common.skc_v6_daddr);
	}
}

/* The facts of a new connection that need no protocol knowledge. `owner`
 * is the process that owns the socket, or NULL when none is at hand. */
static __always_inline void FT_VARIANT(new_conn)(struct sock *sk, __u8 protocol,
						 const struct owner *owner, __u8 direction,
						 struct conn_info *info)
{
	info->first_seen_ns = bpf_ktime_get_ns();
	info->protocol = protocol;
	info->netns = FT_NETNS(sk);
	FT_VARIANT(read_tuple)(sk, info);
	info->direction = direction;
	if (owner)
		set_owner(info, owner);
}

/* The listeners map's key for the port sk is bound to, in its namespace. */
static __always_inline struct listener_key FT_VARIANT(listener_key_of)(struct sock *sk)
{
	struct listener_key key = {};

	key.netns = FT_NETNS(sk);
	key.port = FT_READ(sk, __sk_common.skc_num);
	return key;
}

/* listen() runs in its process: remember who listens on the port. */
static __always_inline void FT_VARIANT(remember_listener)(struct sock *sk,
							  const struct owner *owner,
							  __u64 cookie)
{
	struct listener_key key = FT_VARIANT(listener_key_of)(sk);
	struct owner value = *owner;

	if (!key.port)
		return; /* not bound yet: listen() binds after this state change */
	value.listener_cookie = cookie;
	bpf_map_update_elem(&listeners, &key, &value, BPF_ANY);
}

/* Whether the peer a cgroup hook stashed is the one sk is connected to: a
 * recvfrom() on a connected socket then stays in the socket's one
 * conversation, as its sends without an address do. */
static __always_inline int FT_VARIANT(is_connected_to)(struct sock *sk, const struct conn_key *key)
{
	struct in6_addr remote;

	if (!key->peer_family || bpf_ntohs(FT_READ(sk, __sk_common.skc_dport)) != key->peer_port ||
	    !key->peer_port)
		return 0;
	if (key->peer_family == AF_INET)
		return FT_READ(sk, __sk_common.skc_daddr) == *(__u32 *)key->peer_addr;
	FT_READ_INTO(&remote, sk, __sk_common.skc_v6_daddr);
	return same_ip6(remote.in6_u.u6_addr32, (const __u32 *)key->peer_addr);
}

/* The UDP conversation of a send or receive on sk, tracked from now if new.
 * UDP has no handshake: whoever moved the first datagram of a conversation
 * (socket and peer) is the client. */
static __always_inline struct conn_info *FT_VARIANT(udp_conn)(struct sock *sk, int sending)
{
	struct conn_key key = {};
	struct owner owner = {};
	struct conn_info info = {};
	struct conn_info *found;

	if (FT_VARIANT(tracked_protocol)(sk) != IPPROTO_UDP)
		return 0;
	key.cookie = FT_COOKIE(sk);
	if (!key.cookie) {
		/* kprobe set: a socket older than the agent that nothing has
		 * given a cookie yet. */
		stat_inc(FT_STAT_UNTRACKED);
		return 0;
	}
	take_udp_peer(&key);
	if (FT_VARIANT(is_connected_to)(sk, &key))
		forget_peer(&key);
	found = bpf_map_lookup_elem(&conns, &key);
	if (found)
		return found;
	owner_of_current(&owner);
	FT_VARIANT(new_conn)(sk, IPPROTO_UDP, &owner,
			     sending ? FT_DIR_OUTGOING : FT_DIR_INCOMING, &info);
	return insert_conn(&key, &info, SEEN_MID_LIFE);
}

/* Adds one UDP datagram of `bytes` to its conversation. */
static __always_inline int FT_VARIANT(count_udp)(struct sock *sk, int bytes, int sending)
{
	struct conn_info *info;

	if (bytes <= 0)
		return 0;
	info = FT_VARIANT(udp_conn)(sk, sending);
	if (!info)
		return 0;
	add_udp_datagrams(info, bytes, 1, sending);
	return 0;
}
