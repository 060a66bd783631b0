//! UDP traffic: one server on an unconnected socket (`recv_from`/`send_to`,
//! as a DNS server works) answering several clients on connected sockets.
//! On IPv4 loopback each client has an address of its own (127.0.0.2, .3
//! ...), as clients on other hosts would: flowtel collapses client ports,
//! so clients are told apart by address.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::thread;

use super::{pattern, IO_TIMEOUT};

/// What one client exchanged with the server, counted on both ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientExchange {
    /// The client's address: the server-side flow's `destination.address`.
    pub address: IpAddr,
    /// The client's port (an ephemeral one, collapsed in flows).
    pub port: u16,
    /// Datagrams the client sent (and the server answered).
    pub datagrams: u64,
    /// Bytes the client sent.
    pub client_sent: u64,
    /// Bytes the client received.
    pub client_received: u64,
    /// Bytes the server received from this client.
    pub server_received: u64,
    /// Bytes the server sent to this client.
    pub server_sent: u64,
}

/// What a UDP exchange really moved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exchange {
    /// The server's port.
    pub server_port: u16,
    /// One entry per client.
    pub clients: Vec<ClientExchange>,
}

/// The size of client `client`'s `n`th request: every client and every
/// datagram differ, so a byte attributed to the wrong peer shows.
pub fn request_size(client: usize, n: usize) -> usize {
    100 * (client + 1) + 7 * n
}

/// The size of the server's answer to a request of `len` bytes.
pub fn reply_size(len: usize) -> usize {
    2 * len + 1
}

/// Starts a server on an unconnected socket on `ip`, and `clients` clients
/// (connected sockets, on threads, at once) that each send `datagrams`
/// requests and wait for each answer. Panics if a datagram is lost or a
/// socket call fails.
pub fn serve_clients(ip: IpAddr, clients: usize, datagrams: usize) -> Exchange {
    let server = UdpSocket::bind((ip, 0)).unwrap_or_else(|e| panic!("cannot bind on {ip}: {e}"));
    server
        .set_read_timeout(Some(IO_TIMEOUT))
        .expect("set a read timeout");
    let server_addr = server.local_addr().expect("bound");

    let serving = thread::spawn(move || {
        // Per peer: (bytes received, bytes sent).
        let mut seen: BTreeMap<SocketAddr, (u64, u64)> = BTreeMap::new();
        let mut buf = vec![0; 65536];
        let reply = pattern(reply_size(request_size(clients, datagrams)));
        for _ in 0..clients * datagrams {
            let (len, peer) = server.recv_from(&mut buf).expect("recv_from");
            let sent = server
                .send_to(&reply[..reply_size(len)], peer)
                .expect("send_to");
            let entry = seen.entry(peer).or_default();
            entry.0 += len as u64;
            entry.1 += sent as u64;
        }
        seen
    });

    let talking: Vec<_> = (0..clients)
        .map(|client| thread::spawn(move || talk(client, server_addr, datagrams)))
        .collect();
    let mut exchanges: Vec<ClientExchange> = talking
        .into_iter()
        .map(|t| t.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
        .collect();
    let seen = serving
        .join()
        .unwrap_or_else(|p| std::panic::resume_unwind(p));
    for exchange in &mut exchanges {
        let (received, sent) = seen[&SocketAddr::new(exchange.address, exchange.port)];
        exchange.server_received = received;
        exchange.server_sent = sent;
    }
    Exchange {
        server_port: server_addr.port(),
        clients: exchanges,
    }
}

/// The address client `client` sends from: on IPv4 loopback one of its
/// own, else the server's.
pub fn client_address(server: IpAddr, client: usize) -> IpAddr {
    match server {
        IpAddr::V4(v4) if v4.is_loopback() => {
            IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 2 + client as u8))
        }
        other => other,
    }
}

/// One client's side: send each request, wait for its answer.
fn talk(client: usize, server: SocketAddr, datagrams: usize) -> ClientExchange {
    let ip = client_address(server.ip(), client);
    let socket = UdpSocket::bind((ip, 0)).unwrap_or_else(|e| panic!("cannot bind on {ip}: {e}"));
    socket.connect(server).expect("connect");
    socket
        .set_read_timeout(Some(IO_TIMEOUT))
        .expect("set a read timeout");
    let port = socket.local_addr().expect("bound").port();
    let mut buf = vec![0; 65536];
    let (mut sent, mut received) = (0, 0);
    for n in 0..datagrams {
        let request = pattern(request_size(client, n));
        sent += socket.send(&request).expect("send") as u64;
        let len = socket.recv(&mut buf).expect("recv an answer");
        assert_eq!(len, reply_size(request.len()), "answer size");
        received += len as u64;
    }
    ClientExchange {
        address: ip,
        port,
        datagrams: datagrams as u64,
        client_sent: sent,
        client_received: received,
        server_received: 0,
        server_sent: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_client_is_counted_on_both_ends() {
        let exchange = serve_clients("127.0.0.1".parse().unwrap(), 3, 4);
        assert_eq!(exchange.clients.len(), 3);
        for (i, c) in exchange.clients.iter().enumerate() {
            let expected_sent: usize = (0..4).map(|n| request_size(i, n)).sum();
            let expected_received: usize = (0..4).map(|n| reply_size(request_size(i, n))).sum();
            assert_eq!(c.client_sent, expected_sent as u64);
            assert_eq!(c.server_received, c.client_sent);
            assert_eq!(c.client_received, expected_received as u64);
            assert_eq!(c.server_sent, c.client_received);
            assert_ne!(c.port, exchange.server_port);
        }
    }
}
