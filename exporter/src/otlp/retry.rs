//! Which failures are worth another try, and how long to wait before it:
//! exponential backoff with jitter, or the delay the server asked for.

use std::time::Duration;

/// How one attempt to send a request ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempt {
    /// Accepted; `rejected` points were refused by a partial success.
    Accepted {
        /// Data points the backend rejected (0 for a full success).
        rejected: i64,
        /// The backend's reason, when it gave one.
        message: String,
    },
    /// Worth another try, after `retry_after` if the server named a delay.
    Retryable {
        /// What went wrong, one line, never a header value.
        reason: String,
        /// The server's `Retry-After` / `RetryInfo`.
        retry_after: Option<Duration>,
    },
    /// Will fail again: the request or the credentials are wrong.
    Permanent {
        /// What went wrong, one line, never a header value.
        reason: String,
    },
    /// A 2xx that is not an OTLP answer (an HTML page, garbage, a cut
    /// protobuf): some other service took the request, so the data is not
    /// known to be delivered. Retried like an outage.
    NotOtlp {
        /// What the answer was, one line.
        reason: String,
    },
}

/// The line that names an answer that is not OTLP's.
pub fn not_otlp_line(reason: &str) -> String {
    format!("the endpoint answered 200 but is not an OTLP receiver: {reason}")
}

/// Classifies an OTLP/HTTP status, as the specification lists them.
pub fn http_status(status: u16, retry_after: Option<Duration>) -> Option<Attempt> {
    match status {
        200..=299 => None,
        429 | 502 | 503 | 504 => Some(Attempt::Retryable {
            reason: format!("HTTP status {status}"),
            retry_after,
        }),
        _ => Some(Attempt::Permanent {
            reason: format!("HTTP status {status}"),
        }),
    }
}

/// Classifies a gRPC status code, as the specification lists them.
/// RESOURCE_EXHAUSTED is retried only when the server sent RetryInfo.
pub fn grpc_code(code: tonic::Code, message: &str, retry_after: Option<Duration>) -> Attempt {
    use tonic::Code;
    let reason = if message.is_empty() {
        format!("gRPC status {code:?}")
    } else {
        format!("gRPC status {code:?}: {message}")
    };
    match code {
        Code::Cancelled
        | Code::DeadlineExceeded
        | Code::Aborted
        | Code::OutOfRange
        | Code::Unavailable
        | Code::DataLoss => Attempt::Retryable {
            reason,
            retry_after,
        },
        Code::ResourceExhausted if retry_after.is_some() => Attempt::Retryable {
            reason,
            retry_after,
        },
        _ => Attempt::Permanent { reason },
    }
}

/// Parses a `Retry-After` header given in seconds (the HTTP-date form is
/// rare for OTLP and is ignored: backoff applies).
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    value.trim().parse::<u64>().ok().map(Duration::from_secs)
}

/// Exponential backoff: 1s, 2s, 4s ... capped at 30s, each with up to ±20%
/// jitter so that many agents do not retry in step.
#[derive(Debug, Clone)]
pub struct Backoff {
    next: Duration,
}

/// The first wait.
pub const INITIAL_BACKOFF: Duration = Duration::from_secs(1);
/// The longest wait, also for a server's `Retry-After`.
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);

impl Default for Backoff {
    fn default() -> Backoff {
        Backoff {
            next: INITIAL_BACKOFF,
        }
    }
}

impl Backoff {
    /// The wait before the next try; the server's delay wins when it gave
    /// one (capped at [`MAX_BACKOFF`]).
    pub fn next_wait(&mut self, retry_after: Option<Duration>) -> Duration {
        let base = self.next;
        self.next = (self.next * 2).min(MAX_BACKOFF);
        if let Some(asked) = retry_after {
            return asked.min(MAX_BACKOFF);
        }
        let jitter = 0.8 + fastrand::f64() * 0.4;
        base.mul_f64(jitter)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_statuses_the_specification_retries_are_retried() {
        for status in [429, 502, 503, 504] {
            assert!(
                matches!(http_status(status, None), Some(Attempt::Retryable { .. })),
                "{status}"
            );
        }
        for status in [400, 401, 403, 404, 500] {
            assert!(
                matches!(http_status(status, None), Some(Attempt::Permanent { .. })),
                "{status}"
            );
        }
        assert_eq!(http_status(200, None), None);
    }

    #[test]
    fn grpc_resource_exhausted_is_retried_only_with_retry_info() {
        assert!(matches!(
            grpc_code(tonic::Code::Unavailable, "", None),
            Attempt::Retryable { .. }
        ));
        assert!(matches!(
            grpc_code(tonic::Code::ResourceExhausted, "", None),
            Attempt::Permanent { .. }
        ));
        let delay = Some(Duration::from_secs(2));
        assert_eq!(
            grpc_code(tonic::Code::ResourceExhausted, "slow down", delay),
            Attempt::Retryable {
                reason: "gRPC status ResourceExhausted: slow down".into(),
                retry_after: delay
            }
        );
        assert!(matches!(
            grpc_code(tonic::Code::Unauthenticated, "", None),
            Attempt::Permanent { .. }
        ));
        assert!(matches!(
            grpc_code(tonic::Code::InvalidArgument, "", None),
            Attempt::Permanent { .. }
        ));
    }

    #[test]
    fn backoff_doubles_with_jitter_up_to_the_cap_and_honours_the_server() {
        let mut backoff = Backoff::default();
        for expected in [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0] {
            let wait = backoff.next_wait(None).as_secs_f64();
            assert!(
                wait >= expected * 0.8 && wait <= expected * 1.2,
                "{wait} vs {expected}"
            );
        }
        let mut backoff = Backoff::default();
        assert_eq!(
            backoff.next_wait(Some(Duration::from_secs(5))),
            Duration::from_secs(5)
        );
        assert_eq!(
            backoff.next_wait(Some(Duration::from_secs(600))),
            MAX_BACKOFF
        );
        assert_eq!(parse_retry_after(" 7 "), Some(Duration::from_secs(7)));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), None);
    }
}
