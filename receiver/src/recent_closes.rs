//! What the receiver remembers of TCP connections that closed recently.
//!
//! A socket can still hold unread data when the kernel moves it to CLOSE (a
//! client that shut down writing and reads the server's last reply after the
//! FIN exchange). Those late reads reach the kernel side after the
//! connection's record was handed over, so they land in a fresh "residue"
//! record that knows the tuple but not who connected. The direction is
//! remembered here so the late bytes join their connection's flow.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, SystemTime};

use crate::{ConnectionSample, ConnectionState, Direction, Transport};

/// How long a closed connection's direction is kept. Late reads come when
/// the application gets to its socket, normally within one poll.
const RETENTION: Duration = Duration::from_secs(120);

/// Directions of recently closed TCP connections, by socket cookie. Bounded
/// in time ([`RETENTION`]) and in size (the connection map's capacity).
#[derive(Debug)]
pub struct RecentCloses {
    direction_by_cookie: HashMap<u64, Direction>,
    /// Cookies in the order they closed, for eviction.
    closed_order: VecDeque<(SystemTime, u64)>,
    capacity: usize,
}

impl RecentCloses {
    pub fn new(capacity: usize) -> RecentCloses {
        RecentCloses {
            direction_by_cookie: HashMap::new(),
            closed_order: VecDeque::new(),
            capacity: capacity.max(1),
        }
    }

    /// Remembers the direction of a TCP connection's final sample, or gives
    /// a residue sample the direction of the connection it belongs to.
    pub fn complete(&mut self, sample: &mut ConnectionSample, now: SystemTime) {
        if sample.transport != Transport::Tcp {
            return;
        }
        let cookie = sample.id.socket_cookie;
        if sample.residue {
            if sample.direction == Direction::Unknown {
                if let Some(&direction) = self.direction_by_cookie.get(&cookie) {
                    sample.direction = direction;
                }
            }
        } else if matches!(sample.state, ConnectionState::Closed { .. })
            && sample.direction != Direction::Unknown
        {
            self.remember(cookie, sample.direction, now);
        }
    }

    fn remember(&mut self, cookie: u64, direction: Direction, now: SystemTime) {
        if self.direction_by_cookie.insert(cookie, direction).is_none() {
            self.closed_order.push_back((now, cookie));
        }
        while self.closed_order.len() > self.capacity {
            self.forget_oldest();
        }
    }

    /// Forgets connections closed longer ago than the retention.
    pub fn expire(&mut self, now: SystemTime) {
        while let Some(&(closed_at, _)) = self.closed_order.front() {
            let age = now.duration_since(closed_at).unwrap_or_default();
            if age <= RETENTION {
                break;
            }
            self.forget_oldest();
        }
    }

    fn forget_oldest(&mut self) {
        if let Some((_, cookie)) = self.closed_order.pop_front() {
            self.direction_by_cookie.remove(&cookie);
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.direction_by_cookie.len()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::{CloseError, ConnectionId, Counters, ProcessInfo};

    fn sample(cookie: u64, direction: Direction, state: ConnectionState) -> ConnectionSample {
        ConnectionSample {
            id: ConnectionId {
                socket_cookie: cookie,
                peer: None,
                first_seen_ns: 1,
            },
            netns: 1,
            transport: Transport::Tcp,
            local: "[::1]:40000".parse().unwrap(),
            remote: "[::1]:8080".parse().unwrap(),
            direction,
            process: Arc::new(ProcessInfo::default()),
            counters: Counters::default(),
            rtt: None,
            seen_opening: true,
            established: true,
            residue: false,
            state,
        }
    }

    const CLOSED: ConnectionState = ConnectionState::Closed { error: None };

    #[test]
    fn a_residue_takes_the_direction_of_its_closed_connection() {
        let mut recent = RecentCloses::new(16);
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1000);
        recent.complete(&mut sample(7, Direction::Outgoing, CLOSED), now);
        let mut late = sample(7, Direction::Unknown, CLOSED);
        late.residue = true;
        recent.complete(&mut late, now);
        assert_eq!(late.direction, Direction::Outgoing);
    }

    #[test]
    fn open_connections_and_other_sockets_are_not_remembered() {
        let mut recent = RecentCloses::new(16);
        let now = SystemTime::UNIX_EPOCH;
        recent.complete(
            &mut sample(1, Direction::Incoming, ConnectionState::Open),
            now,
        );
        let refused = ConnectionState::Closed {
            error: Some(CloseError::Refused),
        };
        recent.complete(&mut sample(2, Direction::Outgoing, refused), now);
        let mut late = sample(1, Direction::Unknown, CLOSED);
        late.residue = true;
        recent.complete(&mut late, now);
        assert_eq!(late.direction, Direction::Unknown);
        assert_eq!(recent.len(), 1);
    }

    #[test]
    fn forgets_by_age_and_by_capacity() {
        let mut recent = RecentCloses::new(2);
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1000);
        for cookie in 1..=3 {
            recent.complete(&mut sample(cookie, Direction::Outgoing, CLOSED), start);
        }
        assert_eq!(recent.len(), 2, "the oldest went when the third came");
        recent.expire(start + RETENTION);
        assert_eq!(recent.len(), 2);
        recent.expire(start + RETENTION + Duration::from_secs(1));
        assert_eq!(recent.len(), 0);
    }
}
