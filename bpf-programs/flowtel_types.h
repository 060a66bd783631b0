/* SPDX-License-Identifier: GPL-2.0 OR Apache-2.0 */
/*
 * Structs shared by the eBPF programs and user space.
 * Keep in sync with receiver/src/kernel/abi.rs: fixed-width fields, explicit
 * padding, no bool; a test there checks sizes and offsets.
 */
#ifndef FLOWTEL_TYPES_H
#define FLOWTEL_TYPES_H

#include <linux/types.h>

#define FT_COMM_LEN 16

/* conn_info.flags */
#define FT_FLAG_SEEN_OPEN (1 << 0)   /* the agent saw the SYN (counts as opened) */
#define FT_FLAG_ESTABLISHED (1 << 1) /* the TCP handshake completed */
#define FT_FLAG_CLOSED (1 << 2)      /* TCP reached CLOSE */
#define FT_FLAG_TCP_BASELINE (1 << 3) /* tcp counters were not zero at first sight */

/* conn_info.direction */
#define FT_DIR_UNKNOWN 0
#define FT_DIR_OUTGOING 1
#define FT_DIR_INCOMING 2

/* conn_event.kind */
#define FT_EVENT_CLOSED 1   /* a TCP connection closed: final counters follow */
#define FT_EVENT_RELEASED 2 /* a UDP socket was released: key.cookie only */

/* stats index (per-CPU counters) */
#define FT_STAT_MAP_FULL 0        /* new TCP connection not tracked: map full */
#define FT_STAT_CLOSE_DEFERRED 1  /* ring buffer full: closed entry left in map */
#define FT_STAT_RELEASE_LOST 2    /* ring buffer full: UDP release not reported */
#define FT_STAT_UNTRACKED 3       /* other event on a socket not in the full map */
#define FT_STAT_INSERT_FAILED 4   /* a new entry refused though the map had room */
#define FT_STAT_CGROUP_LOST 5     /* ring buffer full: a cgroup made or removed not told */
#define FT_STAT_DNS_LOST 6        /* a DNS message not handed over: dns_events full, or an
				   * answer read where the receive program cannot see it
				   * (recvmmsg, io_uring) */
#define FT_STAT_COUNT 7

/* Indexes of the settings map (written by user space). */
#define FT_SETTING_SEND_PEERS 0 /* sends counted from packets keep their peer */
#define FT_SETTING_TEST_MISS_TCP_CLOSES 1 /* tests only: the state program skips closes */
#define FT_SETTING_DNS_IN_UDP 2 /* flowtel_udp_egress and flowtel_recv capture DNS too */
#define FT_SETTING_COUNT 3

/* cgroup_event.kind */
#define FT_CGROUP_MADE 1    /* a cgroup-v2 directory was made: its path follows */
#define FT_CGROUP_REMOVED 2 /* a cgroup-v2 directory was removed */
/* Longest cgroup path told, with its NUL; a longer one is cut. */
#define FT_CGROUP_PATH_LEN 512

/* Indexes of the busy map: one per tracing program with a twin. */
#define FT_BUSY_STATE 0
#define FT_BUSY_STATE_BY_ADDR 1
#define FT_BUSY_SEND 2
#define FT_BUSY_RECV 3
#define FT_BUSY_DNS_RECV 4
#define FT_BUSY_COUNT 5

/*
 * One tracked connection. For TCP and connected UDP the peer is the
 * socket's own (peer_family 0); an unconnected UDP socket gets one key per
 * peer it talks to.
 */
struct conn_key {
	__u64 cookie;
	__u8 peer_addr[16];
	__u16 peer_port; /* host byte order */
	__u16 peer_family;
	__u32 _pad;
};

struct conn_info {
	__u64 first_seen_ns; /* CLOCK_MONOTONIC */
	__u64 cgroup_id;
	__u64 bytes_sent;
	__u64 bytes_received;
	__u64 packets_sent;     /* UDP datagrams (TCP uses the snapshot below) */
	__u64 packets_received;
	/* TCP: the socket's byte counters (sent once, received in order) when
	 * the agent first saw it; zero for a connection seen opening. */
	__u64 base_bytes_sent;
	__u64 base_bytes_received;
	/* TCP: the kernel's own counters (as tcp_info shows them), refreshed at
	 * each poll, each retransmit and at close; base_* is their value at
	 * first sight when the agent did not see the connection open. */
	__u32 tcp_segs_out;
	__u32 tcp_segs_in;
	__u32 tcp_total_retrans;
	__u32 base_segs_out;
	__u32 base_segs_in;
	__u32 base_total_retrans;
	__u32 srtt_us;   /* smoothed RTT, microseconds */
	__u32 rttvar_us; /* RTT mean deviation, microseconds */
	__u32 netns;
	__u32 pid;
	__s32 close_err; /* sk_err at close */
	__u16 family;    /* AF_INET / AF_INET6 */
	__u16 local_port;
	__u16 remote_port;
	__u8 protocol;   /* IPPROTO_TCP / IPPROTO_UDP */
	__u8 tcp_state;
	__u8 direction;
	__u8 flags;
	__u8 _pad[2];
	/* TCP: CLOCK_MONOTONIC when the connection was last seen alive, by the
	 * refresh or discovery walk or its handshake: an established entry a
	 * walk of its namespace did not see has a socket that is gone, whose
	 * close the state program missed. */
	__u64 alive_ns;
	/* TCP: CLOCK_MONOTONIC when a program last saw the connection's
	 * counters grow (its first sight included). An open entry that has
	 * not moved since the last poll read it has nothing new, and user
	 * space passes over it. UDP entries are not stamped: always read. */
	__u64 moved_ns;
	__u8 local_addr[16];
	__u8 remote_addr[16];
	char comm[FT_COMM_LEN];
};

struct conn_event {
	__u32 kind;
	__u32 _pad;
	struct conn_key key;
	struct conn_info info;
};

/* The peer of one unconnected UDP datagram, from the cgroup sock_addr hook to
 * the send/recv tracepoint of the same syscall (keyed by thread). */
struct udp_peer {
	__u64 cookie;
	__u8 addr[16];
	__u16 port; /* host byte order */
	__u16 family;
	__u32 _pad;
};

/* A network namespace that holds tracked TCP connections (map tcp_netns,
 * keyed by the namespace's inode). */
struct netns_seen {
	__u64 last_ns; /* CLOCK_MONOTONIC of the last connection tracked there */
	__u32 pid;     /* a process that made one there (0: none at hand) */
	__u32 _pad;
};

/* A cgroup-v2 directory made or removed (ring buffer cgroup_events): the
 * container a connection's cgroup id names is known even when the cgroup
 * is gone by the time user space looks. */
struct cgroup_event {
	__u64 id; /* what bpf_get_current_cgroup_id() gives its tasks */
	__u32 kind;
	__u32 _pad;
	char path[FT_CGROUP_PATH_LEN]; /* from the hierarchy's root; FT_CGROUP_MADE only */
};

/* dns_event.direction */
#define FT_DNS_QUERY 1  /* leaving a client for the DNS port (egress) */
#define FT_DNS_ANSWER 2 /* reaching a client from the DNS port (ingress), or read by
			 * it (the receive tracepoint: for TCP, what one read
			 * returned, which may be the length prefix alone) */

/* The most of a DNS message copied (UDP payload; for TCP the 2-byte length
 * and the message in the segment). Longer messages are cut. */
#define FT_DNS_CAPTURE 512

/* A DNS message seen by the client's socket (ring buffer dns_events). */
struct dns_event {
	__u64 ktime_ns;  /* CLOCK_MONOTONIC when the packet passed, or was read */
	__u64 cookie;    /* the client socket's cookie */
	__u32 netns;     /* queries: the sender's network namespace; answers: 0 */
	__u32 pid;       /* queries: the sending process; answers: 0 */
	__u32 length;    /* bytes of the transport payload in the packet */
	__u32 captured;  /* bytes of it in message[] */
	__u16 family;    /* AF_INET / AF_INET6 */
	__u16 client_port; /* host byte order */
	__u16 server_port; /* host byte order */
	__u8 protocol;   /* IPPROTO_UDP / IPPROTO_TCP */
	__u8 direction;  /* FT_DNS_QUERY / FT_DNS_ANSWER */
	__u8 client_addr[16];
	__u8 server_addr[16];
	char comm[FT_COMM_LEN]; /* queries: the sending process's name */
	__u8 message[FT_DNS_CAPTURE];
};

#endif /* FLOWTEL_TYPES_H */
