/* SPDX-License-Identifier: GPL-2.0 OR Apache-2.0 */
/*
 * What every hook family shares: constants, the owner of a socket, the
 * insertion of a new connection, the hand-over of a closed one.
 */
#ifndef FLOWTEL_COMMON_H
#define FLOWTEL_COMMON_H

#define AF_INET 2
#define AF_INET6 10
#define IPPROTO_TCP 6
#define IPPROTO_UDP 17
#define MSG_PEEK 2
#define EEXIST 17
#define E2BIG 7

/* include/net/tcp_states.h */
#define TCP_ESTABLISHED 1
#define TCP_SYN_SENT 2
#define TCP_SYN_RECV 3
#define TCP_CLOSE 7
#define TCP_LISTEN 10

/* enum sock_flags: the peer's FIN has been received. */
#define SOCK_DONE 1

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
	SEEN_MID_LIFE, /* a connection older than the agent, or UDP traffic */
	SEEN_OPENING,  /* the connection's first state change */
};

/*
 * Inserts a new connection. Everything a poll may read is set in `info`
 * before: a poll between the insert and a later write would see the
 * connection with half its facts.
 */
static __always_inline struct conn_info *insert_conn(const struct conn_key *key,
						     const struct conn_info *info,
						     enum first_sight sight)
{
	long err = bpf_map_update_elem(&conns, key, info, BPF_NOEXIST);

	/* A hash map can refuse an update though it has room: its bucket
	 * lock busy or timing out (newer kernels' resilient spinlocks),
	 * seen on a one-CPU guest. Once more, then counted. */
	if (err && err != -EEXIST && err != -E2BIG)
		err = bpf_map_update_elem(&conns, key, info, BPF_NOEXIST);
	if (err == -E2BIG) {
		/* A connection's opening happens once, so it counts connections;
		 * anything else repeats per event of an untracked socket. */
		stat_inc(sight == SEEN_OPENING ? FT_STAT_MAP_FULL : FT_STAT_UNTRACKED);
		return 0;
	}
	if (err && err != -EEXIST /* another CPU won the race */) {
		stat_inc(FT_STAT_INSERT_FAILED);
		return 0;
	}
	return bpf_map_lookup_elem(&conns, key);
}

/*
 * Twins. The kernel does not run a tracing program on a CPU where a run of
 * the same program is under way: a state change in softirq that interrupts
 * one in process context, or (tracepoint programs are preemptible from
 * Linux 7.2) any event of a task that shares the CPU with one preempted
 * inside it. Such events are skipped (recursion_misses; seen on this
 * host: 10 state changes in 12 million). So each of those programs has a
 * twin on the same hook that takes the event only while the first's run is
 * under way on this CPU, i.e. when the kernel skips the first; at any
 * other time the first took it, so nothing counts twice. Still lost: an
 * event that comes while the first is at its edges, outside its body but
 * inside the kernel's run (the tracepoint's own entry and exit, which are
 * where a preemption is most likely): of the sends skipped on the 7.2
 * guest (send tracepoint, 48 datagrams a run), the twin took 1 of 1 in one
 * run and 1 of 3 in another.
 */
static __always_inline void set_busy(__u32 index, __u32 value)
{
	__u32 *busy_now = bpf_map_lookup_elem(&busy, &index);

	if (busy_now)
		*busy_now = value;
}

static __always_inline int is_busy(__u32 index)
{
	__u32 *busy_now = bpf_map_lookup_elem(&busy, &index);

	return busy_now && *busy_now;
}

/* A program and its twin on one hook: `name` runs `body` for the events
 * it `wants`, marked busy; `twin` runs it only while `name` is busy on
 * this CPU. (Busy is set after the cheap `wants` test: an event that lands
 * inside that test is lost, a window of a few instructions.) */
#define TWIN_PROGRAMS(section, name, twin, busy_index, wants, body, ...) \
	SEC(section)                                                      \
	int BPF_PROG(name, ##__VA_ARGS__)                                \
	{                                                                 \
		int twin_result;                                          \
		if (!(wants))                                             \
			return 0;                                         \
		set_busy(busy_index, 1);                                  \
		twin_result = body;                                       \
		set_busy(busy_index, 0);                                  \
		return twin_result;                                       \
	}                                                                 \
	SEC(section)                                                      \
	int BPF_PROG(twin, ##__VA_ARGS__)                                \
	{                                                                 \
		if (!(wants) || !is_busy(busy_index))                     \
			return 0;                                         \
		return body;                                              \
	}

static __always_inline __u32 setting(__u32 index)
{
	__u32 *value = bpf_map_lookup_elem(&settings, &index);

	return value ? *value : 0;
}

static __always_inline int same_ip6(const __u32 *a, const __u32 *b)
{
	return a[0] == b[0] && a[1] == b[1] && a[2] == b[2] && a[3] == b[3];
}

/* A datagram to or from the socket's connected peer: keyed by the socket
 * alone, as a send() without an address is. */
static __always_inline void forget_peer(struct conn_key *key)
{
	__builtin_memset(key->peer_addr, 0, sizeof(key->peer_addr));
	key->peer_port = 0;
	key->peer_family = 0;
}

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

static __always_inline void add_udp_datagrams(struct conn_info *info, __u32 bytes,
					       __u32 datagrams, int sending)
{
	if (sending) {
		__sync_fetch_and_add(&info->bytes_sent, bytes);
		__sync_fetch_and_add(&info->packets_sent, datagrams);
	} else {
		__sync_fetch_and_add(&info->bytes_received, bytes);
		__sync_fetch_and_add(&info->packets_received, datagrams);
	}
}

/* The socket and the peer a sendmsg or recvmsg hook names. */
static __always_inline void peer_of_sock_addr(struct bpf_sock_addr *ctx, __u16 family,
					      struct udp_peer *peer)
{
	peer->cookie = bpf_get_socket_cookie(ctx);
	peer->family = family;
	peer->port = bpf_ntohs((__u16)ctx->user_port);
	if (family == AF_INET) {
		*(__u32 *)peer->addr = ctx->user_ip4;
	} else {
		((__u32 *)peer->addr)[0] = ctx->user_ip6[0];
		((__u32 *)peer->addr)[1] = ctx->user_ip6[1];
		((__u32 *)peer->addr)[2] = ctx->user_ip6[2];
		((__u32 *)peer->addr)[3] = ctx->user_ip6[3];
	}
}

/* Wakes the ring's reader only when more than 1/share of it is queued:
 * user space drains it at every poll anyway, and a wakeup per record would
 * cost the agent a context switch each (thousands a second under churn). */
static __always_inline __u64 ring_wakeup(void *ring, __u64 share)
{
	__u64 queued = bpf_ringbuf_query(ring, BPF_RB_AVAIL_DATA);
	__u64 size = bpf_ringbuf_query(ring, BPF_RB_RING_SIZE);

	return queued > size / share ? BPF_RB_FORCE_WAKEUP : BPF_RB_NO_WAKEUP;
}

/*
 * Hands a closed connection to user space and forgets it. The entry is
 * flagged closed only when the ring buffer is full: user space then reaps
 * it at the next poll (delayed, never lost). Flagged any earlier, a poll
 * could reap it while this program still runs: the close reported twice
 * (taken, then the event), and the event copied from an entry already
 * reused by another connection.
 */
static __always_inline void hand_over_closed(const struct conn_key *key, struct conn_info *info)
{
	struct conn_event *event = bpf_ringbuf_reserve(&events, sizeof(*event), 0);

	if (!event) {
		stat_inc(FT_STAT_CLOSE_DEFERRED);
		/* The flag last (not moved before the final counters): what a
		 * poll reaps is complete. */
		asm volatile("" ::: "memory");
		info->flags |= FT_FLAG_CLOSED;
		return;
	}
	event->kind = FT_EVENT_CLOSED;
	event->_pad = 0;
	event->key = *key;
	event->info = *info;
	event->info.flags |= FT_FLAG_CLOSED;
	bpf_ringbuf_submit(event, ring_wakeup(&events, 2));
	bpf_map_delete_elem(&conns, key);
}

#endif /* FLOWTEL_COMMON_H */
