/* SPDX-License-Identifier: GPL-2.0 OR Apache-2.0 */
/*
 * The work on a socket: find its connection, start tracking it, add a UDP
 * datagram to its counters. Included twice by flowtel.bpf.c, because the
 * two probe sets reach the socket differently:
 *
 *   BTF programs (tp_btf) hold a typed pointer: fields are plain loads and
 *   bpf_get_socket_cookie() works. FT_VARIANT(f) is f_btf.
 *   kprobes hold a bare address: fields are read with CO-RE probe reads and
 *   the cookie from sk_cookie (made at socket creation by the cgroup
 *   sock_create hook, or by the state tracepoint). FT_VARIANT(f) is f_kp.
 *
 * The including file defines:
 *   FT_VARIANT(name)              the function's name in this variant
 *   FT_READ(ptr, field)           one field's value
 *   FT_READ_INTO(dst, ptr, field) copy a field into *dst (sizeof *dst bytes)
 *   FT_NETNS(sk)                  the socket's network namespace inode
 *   FT_COOKIE(sk)                 the socket cookie (0: none yet)
 *   FT_TCP_SOCK(sk)               the tcp_sock of a TCP socket, or NULL
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

/* Copies the kernel's own TCP counters, the ones tcp_info reports. */
static __always_inline void FT_VARIANT(read_tcp_counters)(struct sock *sk, struct conn_info *info)
{
	struct tcp_sock *tp = FT_TCP_SOCK(sk);

	if (!tp)
		return;
	/* At CLOSE the kernel has already released the bound port (skc_num is
	 * 0 by the time the tracepoint runs); inet_sport keeps it. */
	if (!info->local_port)
		info->local_port = bpf_ntohs(FT_READ(tp, inet_conn.icsk_inet.inet_sport));
	info->tcp_segs_out = FT_READ(tp, segs_out);
	info->tcp_segs_in = FT_READ(tp, segs_in);
	info->tcp_total_retrans = FT_READ(tp, total_retrans);
	info->srtt_us = FT_READ(tp, srtt_us) >> 3;
	info->rttvar_us = FT_READ(tp, mdev_us) >> 2;
	info->tcp_state = FT_READ(sk, __sk_common.skc_state);
}

/*
 * Starts tracking a connection. `owner` is the process that owns the
 * socket, or NULL when none is at hand (softirq). Everything a poll may
 * read is set before the entry is inserted: a poll between the insert and
 * a later write would see the connection open with half its facts.
 */
static __always_inline struct conn_info *FT_VARIANT(track)(struct sock *sk,
							   const struct conn_key *key,
							   __u8 protocol, enum first_sight sight,
							   const struct owner *owner,
							   __u8 direction)
{
	struct conn_info info = {};
	long err;

	info.first_seen_ns = bpf_ktime_get_ns();
	info.protocol = protocol;
	info.netns = FT_NETNS(sk);
	FT_VARIANT(read_tuple)(sk, &info);
	info.direction = direction;
	if (owner)
		set_owner(&info, owner);
	if (protocol == IPPROTO_TCP) {
		FT_VARIANT(read_tcp_counters)(sk, &info);
		if (sight == SEEN_MID_LIFE) {
			info.base_segs_out = info.tcp_segs_out;
			info.base_segs_in = info.tcp_segs_in;
			info.base_total_retrans = info.tcp_total_retrans;
			info.flags |= FT_FLAG_TCP_BASELINE;
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

static __always_inline struct conn_info *FT_VARIANT(find_or_track)(struct sock *sk,
								   const struct conn_key *key,
								   __u8 protocol,
								   enum first_sight sight,
								   const struct owner *owner,
								   __u8 direction)
{
	struct conn_info *info = bpf_map_lookup_elem(&conns, key);

	if (info)
		return info;
	return FT_VARIANT(track)(sk, key, protocol, sight, owner, direction);
}

/* The UDP conversation of a send or receive on sk, tracked from now if new.
 * UDP has no handshake: whoever moved the first datagram of a conversation
 * (socket and peer) is the client. */
static __always_inline struct conn_info *FT_VARIANT(udp_conn)(struct sock *sk, int sending)
{
	struct conn_key key = {};
	struct owner owner = {};
	struct conn_info *info;

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
	info = bpf_map_lookup_elem(&conns, &key);
	if (info)
		return info;
	owner_of_current(&owner);
	return FT_VARIANT(track)(sk, &key, IPPROTO_UDP, SEEN_MID_LIFE, &owner,
				 sending ? FT_DIR_OUTGOING : FT_DIR_INCOMING);
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
	add_udp(info, bytes, sending);
	return 0;
}
