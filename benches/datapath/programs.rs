//! The bench's own eBPF objects (benches/*.bpf.c), built with clang at
//! run time: the empty floor programs and the map-choice candidates.

pub use crate::shared::bpf_object::build;

/// Empty programs on flowtel's egress hook and receive tracepoint
/// (benches/floor.bpf.c): the floor any program there pays.
pub fn attach_floor() -> aya::Ebpf {
    let mut ebpf = attach(&build("floor.bpf.c"), &[("floor_recv", "sock_recv_length")]);
    let egress: &mut aya::programs::CgroupSkb = ebpf
        .program_mut("floor_egress")
        .expect("floor_egress")
        .try_into()
        .expect("a cgroup_skb program");
    egress.load().expect("load floor_egress");
    // Where flowtel attaches its own egress hook.
    let root = receiver::cgroup_v2_root(None).expect("a cgroup-v2 root");
    let cgroup = std::fs::File::open(root).expect("open the cgroup-v2 root");
    egress
        .attach(
            cgroup,
            aya::programs::CgroupSkbAttachType::Egress,
            aya::programs::CgroupAttachMode::Single,
        )
        .expect("attach floor_egress");
    ebpf
}

/// Loads `object` and attaches the named tp_btf programs, in order.
pub fn attach(object: &[u8], programs: &[(&str, &str)]) -> aya::Ebpf {
    let btf = aya::Btf::from_sys_fs().expect("kernel BTF");
    let mut ebpf = aya::Ebpf::load(object).expect("load a bench object");
    for (name, tracepoint) in programs {
        let program: &mut aya::programs::BtfTracePoint = ebpf
            .program_mut(name)
            .unwrap_or_else(|| panic!("no program {name}"))
            .try_into()
            .expect("a tp_btf program");
        program
            .load(tracepoint, &btf)
            .unwrap_or_else(|e| panic!("load {name}: {e}"));
        program
            .attach()
            .unwrap_or_else(|e| panic!("attach {name}: {e}"));
    }
    ebpf
}

/// A program's mean run time so far (bpf_stats must be on).
pub fn mean_run_ns(ebpf: &aya::Ebpf, name: &str) -> f64 {
    let info = ebpf
        .program(name)
        .and_then(|p| p.info().ok())
        .unwrap_or_else(|| panic!("no info for {name}"));
    info.run_time().as_nanos() as f64 / info.run_count().max(1) as f64
}
