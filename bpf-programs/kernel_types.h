/* SPDX-License-Identifier: GPL-2.0 OR Apache-2.0 */
/*
 * The few kernel struct fields flowtel reads, declared with
 * preserve_access_index so that clang emits CO-RE relocations: the loader
 * finds each field's real offset in the running kernel's BTF. Field names
 * must match the kernel's; the layout here does not matter.
 */
#ifndef FLOWTEL_KERNEL_TYPES_H
#define FLOWTEL_KERNEL_TYPES_H

/* These are the kernel's own types (as vmlinux.h would give them): tells
 * bpf_tracing.h to use the kernel's pt_regs names (di, not rdi). Include
 * this before the libbpf headers. */
#define __VMLINUX_H__

#include <linux/types.h>

#pragma clang attribute push(__attribute__((preserve_access_index)), apply_to = record)

struct in6_addr {
	union {
		__u8 u6_addr8[16];
		__be32 u6_addr32[4];
	} in6_u;
};

struct ns_common {
	unsigned int inum;
};

struct net {
	struct ns_common ns;
};

typedef struct {
	struct net *net;
} possible_net_t;

typedef struct {
	__s64 counter;
} atomic64_t;

struct sock_common {
	__be32 skc_daddr;
	__be32 skc_rcv_saddr;
	__be16 skc_dport;
	__u16 skc_num;
	unsigned short skc_family;
	volatile unsigned char skc_state;
	possible_net_t skc_net;
	struct in6_addr skc_v6_daddr;
	struct in6_addr skc_v6_rcv_saddr;
	atomic64_t skc_cookie;
	unsigned long skc_flags; /* Linux 6.13+; sock.sk_flags before */
};

struct sock {
	struct sock_common __sk_common;
	unsigned long sk_flags;
	__u16 sk_protocol;
	int sk_err;
};

struct inet_sock {
	__be16 inet_sport;
};

struct inet_connection_sock {
	struct inet_sock icsk_inet;
};

struct tcp_sock {
	struct inet_connection_sock inet_conn;
	__u32 srtt_us;
	__u32 mdev_us;
	__u32 segs_in;
	__u32 segs_out;
	__u32 total_retrans;
	/* RFC 4898 byte counters (tcp_info's tcpi_bytes_*), Linux 4.19+. */
	__u64 bytes_sent;
	__u64 bytes_retrans;
	__u64 bytes_received;
};

/* A task's process and cgroup, for sockets found by the task_file iterator. */
struct kernfs_node {
	__u64 id;
};

struct cgroup_root {
	int hierarchy_id; /* 0: the unified (v2) hierarchy */
};

struct cgroup {
	struct kernfs_node *kn;
	struct cgroup_root *root;
};

struct css_set {
	struct cgroup *dfl_cgrp;
};

struct nsproxy {
	struct net *net_ns;
};

struct task_struct {
	int tgid;
	char comm[16];
	struct task_struct *group_leader;
	struct css_set *cgroups;
	struct nsproxy *nsproxy;
};

struct socket {
	struct sock *sk;
};

struct file;

/* The iterators' common context. */
struct bpf_iter_meta {
	void *seq;
};

/* The context of an iterator over one network namespace's TCP sockets. */
struct bpf_iter__tcp {
	struct bpf_iter_meta *meta;
	struct sock_common *sk_common;
	__u32 uid;
};

/* The context of an iterator over every task's open files. */
struct bpf_iter__task_file {
	struct bpf_iter_meta *meta;
	struct task_struct *task;
	__u32 fd;
	struct file *file;
};

/* x86-64 registers at a kprobe, as BPF_KPROBE reads arguments from them. */
struct pt_regs {
	unsigned long r15, r14, r13, r12, bp, bx, r11, r10, r9, r8;
	unsigned long ax, cx, dx, si, di, orig_ax, ip, cs, flags, sp, ss;
};

#pragma clang attribute pop

#endif /* FLOWTEL_KERNEL_TYPES_H */
