/* SPDX-License-Identifier: GPL-2.0 OR Apache-2.0 */
/*
 * cgroup-v2 directories as they are made and removed. A connection keeps
 * only its task's cgroup id; the path, which names the container and the
 * pod, is told here when the cgroup is made, before any task runs in it.
 * So a container that lives 50 ms is still named after it is gone.
 *
 *   tp_btf/cgroup_mkdir   FT_CGROUP_MADE, with the path
 *   tp_btf/cgroup_rmdir   FT_CGROUP_REMOVED
 *
 * Only the unified hierarchy: it is the one whose ids tasks carry
 * (bpf_get_current_cgroup_id()). On a hybrid host the runtimes make the
 * container's cgroup there too.
 */
#ifndef FLOWTEL_CGROUPS_H
#define FLOWTEL_CGROUPS_H

static __always_inline int tell_cgroup(struct cgroup *cgrp, const char *path, __u32 kind)
{
	struct cgroup_event *event;

	if (cgrp->root->hierarchy_id != 0)
		return 0;
	event = bpf_ringbuf_reserve(&cgroup_events, sizeof(*event), 0);
	if (!event) {
		stat_inc(FT_STAT_CGROUP_LOST);
		return 0;
	}
	event->id = cgrp->kn->id;
	event->kind = kind;
	event->_pad = 0;
	event->path[0] = 0;
	if (kind == FT_CGROUP_MADE)
		bpf_probe_read_kernel_str(event->path, sizeof(event->path), path);
	bpf_ringbuf_submit(event, 0);
	return 0;
}

SEC("tp_btf/cgroup_mkdir")
int BPF_PROG(flowtel_cgroup_mkdir, struct cgroup *cgrp, const char *path)
{
	return tell_cgroup(cgrp, path, FT_CGROUP_MADE);
}

SEC("tp_btf/cgroup_rmdir")
int BPF_PROG(flowtel_cgroup_rmdir, struct cgroup *cgrp, const char *path)
{
	return tell_cgroup(cgrp, path, FT_CGROUP_REMOVED);
}

#endif /* FLOWTEL_CGROUPS_H */
