//! A conntrack netlink socket of one network namespace: the namespace of
//! the thread that opens it, for as long as it is open.

use std::io;
use std::os::fd::{AsRawFd, RawFd};

use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_DUMP, NLM_F_REQUEST,
};
use netlink_packet_netfilter::conntrack::ConntrackMessage;
use netlink_packet_netfilter::{
    NetfilterHeader, NetfilterMessage, NetfilterMessageInner, NetfilterProtoFamily,
};
use netlink_sys::{protocols::NETLINK_NETFILTER, Socket};

use super::entry::{change_of, Change};

/// The conntrack event groups (linux/netfilter/nfnetlink.h). Not UPDATE:
/// a translation is fixed when the entry is created, and the updates
/// (each TCP state change) would multiply the events read.
const NFNLGRP_CONNTRACK_NEW: u32 = 1;
const NFNLGRP_CONNTRACK_DESTROY: u32 = 3;

/// Room for the events that arrive between two reads: the kernel drops
/// the overflow and says so (ENOBUFS), which costs a dump.
const RECEIVE_BUFFER: usize = 8 << 20;

/// A smaller room, in bytes, for a test that makes the events overflow;
/// never needed in production.
const BUFFER_FOR_TEST: &str = "FLOWTEL_TEST_CONNTRACK_BUFFER";

fn receive_buffer() -> usize {
    std::env::var(BUFFER_FOR_TEST)
        .ok()
        .and_then(|bytes| bytes.parse().ok())
        .unwrap_or(RECEIVE_BUFFER)
}

/// What one read of the socket found.
#[derive(Debug)]
pub enum Message {
    Change(Change),
    /// The dump asked for is complete.
    DumpDone,
    /// The kernel refused the request (no nf_conntrack_netlink, no
    /// privilege).
    Refused(io::Error),
}

pub struct ConntrackSocket {
    socket: Socket,
    buffer: Vec<u8>,
}

impl ConntrackSocket {
    /// Opens a socket in the calling thread's namespace, subscribed to new
    /// and destroyed entries; reads do not block.
    pub fn open() -> io::Result<ConntrackSocket> {
        let mut socket = Socket::new(NETLINK_NETFILTER)?;
        socket.bind_auto()?;
        // Past the system's rmem_max with CAP_NET_ADMIN; else as large as
        // it allows.
        let room = receive_buffer();
        if force_receive_buffer(socket.as_raw_fd(), room).is_err() {
            let _ = socket.set_rx_buf_sz(room);
        }
        // Before the subscriptions, so that no untranslated event is
        // queued; without it (refused) every event is read and parsed.
        if let Err(e) = super::filter::attach(socket.as_raw_fd()) {
            tracing::debug!("conntrack: the event filter was refused, reading every event: {e}");
        }
        socket.add_membership(NFNLGRP_CONNTRACK_NEW)?;
        socket.add_membership(NFNLGRP_CONNTRACK_DESTROY)?;
        socket.set_non_blocking(true)?;
        Ok(ConntrackSocket {
            socket,
            buffer: vec![0; 1 << 16],
        })
    }

    pub fn fd(&self) -> RawFd {
        self.socket.as_raw_fd()
    }

    /// Asks for every entry of the namespace (IPv4 and IPv6); the answers
    /// come with the events, then [`Message::DumpDone`].
    pub fn request_dump(&self) -> io::Result<()> {
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | NLM_F_DUMP;
        let mut request = NetlinkMessage::new(
            header,
            NetlinkPayload::from(NetfilterMessage::new(
                NetfilterHeader::new(NetfilterProtoFamily::Unspec, 0, 0),
                ConntrackMessage::Get(vec![]),
            )),
        );
        request.finalize();
        let mut bytes = vec![0; request.buffer_len()];
        request.serialize(&mut bytes);
        self.socket.send(&bytes, 0)?;
        Ok(())
    }

    /// Reads every message waiting. `Ok(false)` when the kernel dropped
    /// events because the socket's buffer was full.
    pub fn read(&mut self, mut each: impl FnMut(Message)) -> io::Result<bool> {
        let mut complete = true;
        loop {
            let mut room = &mut self.buffer[..];
            let size = match self.socket.recv(&mut room, 0) {
                Ok(size) => size,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(complete),
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                    complete = false;
                    continue;
                }
                Err(e) => return Err(e),
            };
            parse_datagram(&self.buffer[..size.min(self.buffer.len())], &mut each);
        }
    }
}

/// One datagram holds one or more netlink messages.
fn parse_datagram(mut bytes: &[u8], each: &mut impl FnMut(Message)) {
    while !bytes.is_empty() {
        let Ok(message) = NetlinkMessage::<NetfilterMessage>::deserialize(bytes) else {
            return; // not a conntrack message this version can read
        };
        let length = (message.header.length as usize).next_multiple_of(4);
        match message.payload {
            NetlinkPayload::Done(_) => each(Message::DumpDone),
            NetlinkPayload::Error(error) => {
                if let Some(code) = error.code {
                    each(Message::Refused(io::Error::from_raw_os_error(-code.get())));
                }
            }
            NetlinkPayload::InnerMessage(NetfilterMessage {
                inner: NetfilterMessageInner::Conntrack(conntrack),
                ..
            }) => {
                if let Some(change) = change_of(&conntrack) {
                    each(Message::Change(change));
                }
            }
            _ => {}
        }
        if length == 0 || length >= bytes.len() {
            return;
        }
        bytes = &bytes[length..];
    }
}

fn force_receive_buffer(fd: RawFd, size: usize) -> io::Result<()> {
    let size = libc::c_int::try_from(size).unwrap_or(libc::c_int::MAX);
    set_option(fd, libc::SO_RCVBUFFORCE, &size)
}

/// `setsockopt(fd, SOL_SOCKET, name, value)`.
pub(super) fn set_option<T>(fd: RawFd, name: libc::c_int, value: &T) -> io::Result<()> {
    // SAFETY: a descriptor and an option value of its own size; the kernel
    // copies the value.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            name,
            (value as *const T).cast(),
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}
