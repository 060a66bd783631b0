//! How numbers, times and endpoints read on the console.

use std::fmt::Write as _;
use std::net::IpAddr;
use std::time::{Duration, SystemTime};

/// RFC 3339 UTC with milliseconds: `2024-01-01T12:00:00.000Z`.
pub fn timestamp(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

/// A period's length for people: `10s`, `5m`, `1m 30s 250ms`.
pub fn duration(d: Duration) -> String {
    // Below milliseconds is noise for a poll period.
    let d = Duration::from_millis(d.as_millis().try_into().unwrap_or(u64::MAX));
    if d.is_zero() {
        return "0s".to_owned();
    }
    humantime::format_duration(d).to_string()
}

/// Bytes in binary units: `512 B`, `1.5 KiB`, `12.0 MiB`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// A bit rate in decimal units, as networks count: `800 bit/s`,
/// `1.2 Mbit/s`.
pub fn bits_per_second(bps: f64) -> String {
    const UNITS: [&str; 5] = ["bit/s", "kbit/s", "Mbit/s", "Gbit/s", "Tbit/s"];
    if bps < 1000.0 {
        return format!("{bps:.0} {}", UNITS[0]);
    }
    let mut value = bps;
    let mut unit = 0;
    while value >= 1000.0 && unit < UNITS.len() - 1 {
        value /= 1000.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// A round-trip time: `87us`, `1.2ms`, `310ms`.
pub fn rtt_text(rtt: Duration) -> String {
    let us = rtt.as_micros();
    if us < 1000 {
        format!("{us}us")
    } else if us < 10_000 {
        format!("{:.1}ms", us as f64 / 1000.0)
    } else {
        format!("{}ms", rtt.as_millis())
    }
}

/// `addr:port`, `[v6addr]:port`, with `*` for a collapsed port.
pub fn endpoint(address: IpAddr, port: Option<u16>) -> String {
    let mut out = String::with_capacity(24);
    match address {
        IpAddr::V4(a) => write!(out, "{a}"),
        IpAddr::V6(a) => write!(out, "[{a}]"),
    }
    .expect("writing to a String");
    match port {
        Some(p) => write!(out, ":{p}").expect("writing to a String"),
        None => out.push_str(":*"),
    }
    out
}

/// One end of a row, from the attributes under `prefix` (`source` or
/// `destination`): its names (service first) and its address and port,
/// like `consul 10.1.2.3:8500`; `*` when everything was summed away.
pub fn end_label(attributes: &processor::Attributes, prefix: &str) -> String {
    let own = |suffix: &str| attributes.get(&format!("{prefix}.{suffix}"));
    let mut names: Vec<String> = own("service").map(|s| s.to_string()).into_iter().collect();
    for (name, value) in attributes.iter() {
        let Some(rest) = name.strip_prefix(prefix).and_then(|r| r.strip_prefix('.')) else {
            continue;
        };
        let shown_elsewhere = rest == "service"
            || rest == "address"
            || rest == "port"
            || rest.starts_with("process.")
            || rest == "container.id";
        if !shown_elsewhere {
            names.push(format!("{rest}={value}"));
        }
    }
    let address = own("address").and_then(|a| a.to_string().parse::<IpAddr>().ok());
    let port = match own("port") {
        Some(processor::AttributeValue::Int(p)) => u16::try_from(*p).ok(),
        _ => None,
    };
    match address {
        Some(address) => names.push(endpoint(address, port)),
        None => {
            if let Some(port) = port {
                names.push(format!("*:{port}"));
            }
        }
    }
    if names.is_empty() {
        "*".to_owned()
    } else {
        names.join(" ")
    }
}

#[cfg(test)]
mod tests {
    use std::time::UNIX_EPOCH;

    use super::*;

    #[test]
    fn timestamps_are_rfc3339_utc() {
        let t = UNIX_EPOCH + Duration::from_millis(1_704_110_400_250);
        assert_eq!(timestamp(t), "2024-01-01T12:00:00.250Z");
    }

    #[test]
    fn bytes_use_binary_units() {
        assert_eq!(bytes(0), "0 B");
        assert_eq!(bytes(1023), "1023 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(12 * 1024 * 1024), "12.0 MiB");
        assert_eq!(bytes(3 << 30), "3.0 GiB");
    }

    #[test]
    fn bandwidth_uses_decimal_bit_units() {
        assert_eq!(bits_per_second(0.0), "0 bit/s");
        assert_eq!(bits_per_second(800.0), "800 bit/s");
        assert_eq!(bits_per_second(1_250_000.0), "1.2 Mbit/s");
        assert_eq!(bits_per_second(10e9), "10.0 Gbit/s");
    }

    #[test]
    fn endpoints_show_collapsed_ports_as_a_star() {
        assert_eq!(
            endpoint("10.0.0.1".parse().unwrap(), Some(80)),
            "10.0.0.1:80"
        );
        assert_eq!(endpoint("10.0.0.1".parse().unwrap(), None), "10.0.0.1:*");
        assert_eq!(endpoint("::1".parse().unwrap(), Some(443)), "[::1]:443");
    }

    #[test]
    fn durations_read_as_people_write_them() {
        assert_eq!(duration(Duration::from_secs(300)), "5m");
        assert_eq!(duration(Duration::from_millis(10_004)), "10s 4ms");
        assert_eq!(duration(Duration::from_nanos(10)), "0s");
    }
}
