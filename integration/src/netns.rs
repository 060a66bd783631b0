//! Network namespaces made for one test, joined by a veth pair, with an
//! optional nftables rule that drops a share of the packets.
//!
//! Namespaces are named `flowtel-<role>-<pid>` so concurrent runs cannot
//! collide, and are deleted on drop (which also removes the veth pair and the
//! nftables table inside). All traffic stays between the two namespaces.
//!
//! Socket code runs inside a namespace on a thread of its own that joins it
//! with `setns(2)`: a network namespace is per thread, so the rest of the
//! test process (and the agent) stays in the host namespace.

use std::fs::File;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::process::Command;
use std::thread::{self, JoinHandle};

/// A named network namespace (`ip netns add`), deleted on drop.
#[derive(Debug)]
pub struct NetNs {
    name: String,
}

impl NetNs {
    /// Creates `flowtel-<role>-<pid>` with its loopback up, replacing a
    /// leftover of the same name. Panics if `ip` fails.
    pub fn create(role: &str) -> NetNs {
        let name = format!("flowtel-{role}-{}", std::process::id());
        if NetNs::path_of(&name).exists() {
            // A namespace left by an earlier run of a process with our pid.
            let _ = Command::new("ip").args(["netns", "del", &name]).status();
        }
        run("ip", &["netns", "add", &name]);
        let ns = NetNs { name };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    /// The namespace's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The namespace's inode, as flowtel reports it in `network.namespace`.
    pub fn inode(&self) -> u64 {
        let path = NetNs::path_of(&self.name);
        std::fs::metadata(&path)
            .unwrap_or_else(|e| panic!("cannot stat {}: {e}", path.display()))
            .ino()
    }

    /// Runs `ip -n <name> <args>`. Panics if it fails.
    pub fn ip(&self, args: &[&str]) {
        let mut all = vec!["-n", &self.name];
        all.extend_from_slice(args);
        run("ip", &all);
    }

    /// Runs `<program> <args>` inside the namespace (`ip netns exec`).
    /// Panics if it fails.
    pub fn exec(&self, program: &str, args: &[&str]) {
        let mut all = vec!["netns", "exec", &self.name, program];
        all.extend_from_slice(args);
        run("ip", &all);
    }

    /// Runs `f` on a new thread that has joined this namespace; sockets it
    /// makes live there. Panics (on that thread) if the namespace cannot be
    /// joined.
    pub fn spawn<T, F>(&self, f: F) -> JoinHandle<T>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        let path = NetNs::path_of(&self.name);
        let file =
            File::open(&path).unwrap_or_else(|e| panic!("cannot open {}: {e}", path.display()));
        thread::spawn(move || {
            // SAFETY: the descriptor is open for the duration of the call;
            // setns changes only this thread's network namespace.
            let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            if rc != 0 {
                panic!(
                    "cannot join the network namespace {}: {}",
                    path.display(),
                    std::io::Error::last_os_error()
                );
            }
            drop(file);
            f()
        })
    }

    /// Drops about `percent` % of the TCP packets arriving in this namespace,
    /// at random, with an nftables rule in a table of its own.
    pub fn drop_incoming_tcp(&self, percent: u32) {
        self.exec("nft", &["add", "table", "inet", "flowtel_test"]);
        self.exec(
            "nft",
            &[
                "add",
                "chain",
                "inet",
                "flowtel_test",
                "input",
                "{ type filter hook input priority 0; }",
            ],
        );
        let below = percent.to_string();
        self.exec(
            "nft",
            &[
                "add",
                "rule",
                "inet",
                "flowtel_test",
                "input",
                "meta",
                "l4proto",
                "tcp",
                "numgen",
                "random",
                "mod",
                "100",
                "<",
                &below,
                "drop",
            ],
        );
    }

    fn path_of(name: &str) -> PathBuf {
        PathBuf::from("/var/run/netns").join(name)
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// Two namespaces, a sender and a receiver, joined by a veth pair:
/// `10.77.<n>.1/24` in the sender, `10.77.<n>.2/24` in the receiver.
#[derive(Debug)]
pub struct VethPair {
    /// Where the traffic comes from.
    pub sender: NetNs,
    /// Where the traffic goes.
    pub receiver: NetNs,
    /// The sender's address.
    pub sender_addr: Ipv4Addr,
    /// The receiver's address.
    pub receiver_addr: Ipv4Addr,
}

impl VethPair {
    /// Makes both namespaces and the link between them, up and addressed.
    /// Panics if `ip` fails.
    pub fn create() -> VethPair {
        let sender = NetNs::create("snd");
        let receiver = NetNs::create("rcv");
        // The subnet only needs to be the same on both ends; varying it with
        // the pid keeps the addresses of concurrent runs apart in logs.
        let subnet = (std::process::id() % 250 + 1) as u8;
        let sender_addr = Ipv4Addr::new(10, 77, subnet, 1);
        let receiver_addr = Ipv4Addr::new(10, 77, subnet, 2);
        // Created inside the sender namespace with its peer inside the
        // receiver's, so the names never meet in the host namespace.
        sender.ip(&[
            "link",
            "add",
            "veth0",
            "type",
            "veth",
            "peer",
            "name",
            "veth0",
            "netns",
            receiver.name(),
        ]);
        for (ns, addr) in [(&sender, sender_addr), (&receiver, receiver_addr)] {
            ns.ip(&["addr", "add", &format!("{addr}/24"), "dev", "veth0"]);
            ns.ip(&["link", "set", "veth0", "up"]);
        }
        VethPair {
            sender,
            receiver,
            sender_addr,
            receiver_addr,
        }
    }
}

/// Runs a command and panics with its stderr if it fails.
fn run(program: &str, args: &[&str]) {
    let output = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    if !output.status.success() {
        panic!(
            "`{program} {}` failed ({}): {}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::traffic::tcp;

    #[test]
    fn a_transfer_across_a_lossy_veth_pair_retransmits_and_arrives_whole() {
        crate::privilege::require_root();
        let pair = VethPair::create();
        // Enough packets that a 5 % drop cannot miss them all: 16 MiB is
        // at least 256 segments even at 64 KiB offload sizes.
        pair.receiver.drop_incoming_tcp(5);
        let host = std::fs::metadata("/proc/self/ns/net").unwrap().ino();
        assert_ne!(pair.sender.inode(), host);
        assert_ne!(pair.sender.inode(), pair.receiver.inode());

        let t = tcp::transfer_between(
            Some(&pair.sender),
            Some(&pair.receiver),
            pair.receiver_addr.into(),
            16 << 20,
            0,
        );
        assert_eq!((t.client_sent, t.server_received), (16 << 20, 16 << 20));
        assert_eq!(t.client_received, 0);
        eprintln!("{t:?}");
        assert!(t.client_total_retrans > 0, "{t:?}");

        let names = (
            pair.sender.name().to_owned(),
            pair.receiver.name().to_owned(),
        );
        drop(pair);
        assert!(!NetNs::path_of(&names.0).exists());
        assert!(!NetNs::path_of(&names.1).exists());
    }
}
