//! What the Kubernetes index costs with a cluster of 10,000 pods (owned by
//! 2,000 ReplicaSets), 1,000 Services and 100 nodes known: the heap it
//! holds (counted by this binary's allocator) and the cost of one lookup,
//! the local end by pod UID (with its workload resolved) and the remote end
//! by IP.
//!
//! `cargo bench -p kubernetes --bench index` (see BENCHMARKS.md).

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use kubernetes::{Index, NodeFacts, PodFacts, ServiceFacts, Workload};

/// The system allocator, counting the bytes held.
struct Counting;

static HELD: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is passed on to the system allocator unchanged; only
// the count of bytes held is kept beside it.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        HELD.fetch_add(layout.size(), Ordering::Relaxed);
        // SAFETY: the caller's layout contract is System's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        HELD.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: `ptr` came from `alloc` above with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const PODS: u32 = 10_000;

fn pod_ip(n: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(0x0a01_0000 + n))
}

fn cluster() -> Index {
    let index = Index::new(Duration::from_secs(300));
    for rs in 0..PODS / 5 {
        index.apply_replica_set(
            "shop",
            &format!("app-{rs}-7d9f8c6b5"),
            Some(&format!("app-{rs}")),
        );
    }
    for n in 0..PODS {
        index.apply_pod(PodFacts {
            uid: format!("{n:08x}-5b6d-4e7f-8a9b-0c1d2e3f4a5b").into(),
            namespace: "shop".into(),
            name: format!("app-{}-7d9f8c6b5-{n:05}", n / 5).into(),
            node: Some(format!("node-{}", n % 100).into()),
            owner: Some(Workload::ReplicaSet(
                format!("app-{}-7d9f8c6b5", n / 5).into(),
            )),
            host_network: false,
            ips: vec![pod_ip(n)],
        });
    }
    for s in 0..1_000_u32 {
        index.apply_service(ServiceFacts {
            namespace: "shop".into(),
            name: format!("service-{s}").into(),
            ips: vec![IpAddr::V4(Ipv4Addr::from(0x0a60_0000 + s))],
        });
    }
    for n in 0..100_u32 {
        index.apply_node(NodeFacts {
            name: format!("node-{n}").into(),
            ips: vec![IpAddr::V4(Ipv4Addr::from(0xc0a8_0000 + n))],
        });
    }
    index
}

fn lookups(c: &mut Criterion) {
    let before = HELD.load(Ordering::Relaxed);
    let index = cluster();
    let held = HELD.load(Ordering::Relaxed) - before;
    eprintln!(
        "index of {PODS} pods, 2,000 replica sets, 1,000 services, 100 nodes: {:.1} MiB held, {} B per pod",
        held as f64 / (1 << 20) as f64,
        held / PODS as usize,
    );
    let uid = "00001234-5b6d-4e7f-8a9b-0c1d2e3f4a5b";
    c.bench_function("local end: pod by UID, workload resolved", |b| {
        b.iter(|| {
            let pod = index.pod(black_box(uid)).unwrap();
            black_box(index.workload(&pod))
        })
    });
    c.bench_function("remote end: pod by IP", |b| {
        b.iter(|| black_box(index.remote(black_box(pod_ip(4321)))))
    });
    c.bench_function("remote end: an address nobody has", |b| {
        b.iter(|| black_box(index.remote(black_box(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1))))))
    });
}

criterion_group!(benches, lookups);
criterion_main!(benches);
