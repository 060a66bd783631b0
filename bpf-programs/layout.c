// SPDX-License-Identifier: GPL-2.0 OR Apache-2.0
/* Prints the layout of the shared structs and the shared constants;
 * receiver/build.rs runs it and a test compares it with
 * receiver/src/kernel/abi.rs. */
#include <stddef.h>
#include <stdio.h>

#include "flowtel_types.h"

#define SIZE(type) printf("%s %zu\n", #type, sizeof(struct type))
#define FIELD(type, field) printf("%s.%s %zu\n", #type, #field, offsetof(struct type, field))
#define CONSTANT(name) printf("%s %d\n", #name, name)

int main(void)
{
	SIZE(conn_key);
	FIELD(conn_key, cookie);
	FIELD(conn_key, peer_addr);
	FIELD(conn_key, peer_port);
	FIELD(conn_key, peer_family);
	SIZE(conn_info);
	FIELD(conn_info, first_seen_ns);
	FIELD(conn_info, cgroup_id);
	FIELD(conn_info, bytes_sent);
	FIELD(conn_info, bytes_received);
	FIELD(conn_info, packets_sent);
	FIELD(conn_info, packets_received);
	FIELD(conn_info, base_bytes_sent);
	FIELD(conn_info, base_bytes_received);
	FIELD(conn_info, tcp_segs_out);
	FIELD(conn_info, tcp_segs_in);
	FIELD(conn_info, tcp_total_retrans);
	FIELD(conn_info, base_segs_out);
	FIELD(conn_info, base_segs_in);
	FIELD(conn_info, base_total_retrans);
	FIELD(conn_info, srtt_us);
	FIELD(conn_info, rttvar_us);
	FIELD(conn_info, netns);
	FIELD(conn_info, pid);
	FIELD(conn_info, close_err);
	FIELD(conn_info, family);
	FIELD(conn_info, local_port);
	FIELD(conn_info, remote_port);
	FIELD(conn_info, protocol);
	FIELD(conn_info, tcp_state);
	FIELD(conn_info, direction);
	FIELD(conn_info, flags);
	FIELD(conn_info, alive_ns);
	FIELD(conn_info, moved_ns);
	FIELD(conn_info, local_addr);
	FIELD(conn_info, remote_addr);
	FIELD(conn_info, comm);
	SIZE(conn_event);
	FIELD(conn_event, kind);
	FIELD(conn_event, key);
	FIELD(conn_event, info);
	SIZE(udp_peer);
	CONSTANT(FT_FLAG_SEEN_OPEN);
	CONSTANT(FT_FLAG_ESTABLISHED);
	CONSTANT(FT_FLAG_CLOSED);
	CONSTANT(FT_DIR_OUTGOING);
	CONSTANT(FT_DIR_INCOMING);
	CONSTANT(FT_EVENT_CLOSED);
	CONSTANT(FT_EVENT_RELEASED);
	CONSTANT(FT_STAT_MAP_FULL);
	CONSTANT(FT_STAT_CLOSE_DEFERRED);
	CONSTANT(FT_STAT_RELEASE_LOST);
	CONSTANT(FT_STAT_UNTRACKED);
	CONSTANT(FT_STAT_INSERT_FAILED);
	CONSTANT(FT_STAT_CGROUP_LOST);
	CONSTANT(FT_STAT_COUNT);
	CONSTANT(FT_SETTING_SEND_PEERS);
	CONSTANT(FT_SETTING_TEST_MISS_TCP_CLOSES);
	CONSTANT(FT_SETTING_DNS_IN_UDP);
	CONSTANT(FT_SETTING_COUNT);
	CONSTANT(FT_CGROUP_MADE);
	CONSTANT(FT_CGROUP_REMOVED);
	CONSTANT(FT_CGROUP_PATH_LEN);
	SIZE(cgroup_event);
	FIELD(cgroup_event, id);
	FIELD(cgroup_event, kind);
	FIELD(cgroup_event, path);
	SIZE(dns_event);
	FIELD(dns_event, ktime_ns);
	FIELD(dns_event, cookie);
	FIELD(dns_event, netns);
	FIELD(dns_event, pid);
	FIELD(dns_event, length);
	FIELD(dns_event, captured);
	FIELD(dns_event, family);
	FIELD(dns_event, client_port);
	FIELD(dns_event, server_port);
	FIELD(dns_event, protocol);
	FIELD(dns_event, direction);
	FIELD(dns_event, client_addr);
	FIELD(dns_event, server_addr);
	FIELD(dns_event, comm);
	FIELD(dns_event, message);
	CONSTANT(FT_DNS_QUERY);
	CONSTANT(FT_DNS_ANSWER);
	CONSTANT(FT_DNS_CAPTURE);
	CONSTANT(FT_STAT_DNS_LOST);
	SIZE(netns_seen);
	FIELD(netns_seen, last_ns);
	FIELD(netns_seen, pid);
	return 0;
}
