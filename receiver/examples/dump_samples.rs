//! Prints the raw connection samples of each poll: a debugging aid.
//! `cargo run -p receiver --example dump_samples -- 3` polls three times.

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let polls: u32 = std::env::args()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(2);
    let mut receiver = receiver::Receiver::start(&receiver::Config::default())?;
    for _ in 0..polls {
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        let poll = receiver.poll()?;
        println!(
            "--- {} samples, {} quiet, {:?}",
            poll.samples.len(),
            poll.quiet.len(),
            poll.health
        );
        for s in &poll.samples {
            println!(
                "{:?} {} {} -> {} {:?} pid={} {} sent={} recv={} pkts={}/{} retrans={} rtt={:?} open={} est={} {:?}",
                s.transport, s.netns, s.local, s.remote, s.direction, s.process.pid, s.process.name,
                s.counters.bytes_sent, s.counters.bytes_received, s.counters.packets_sent,
                s.counters.packets_received, s.counters.retransmits, s.rtt.map(|r| r.smoothed()),
                s.seen_opening, s.established, s.state
            );
        }
    }
    Ok(())
}
