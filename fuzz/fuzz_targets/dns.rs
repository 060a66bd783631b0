//! Whatever bytes a packet to or from the DNS port carries (cut copies,
//! compression-pointer loops, counts that lie), parsing them never panics:
//! it gives a message or a reason it is malformed.
#![no_main]

use libfuzzer_sys::fuzz_target;
use receiver::dns::parse;
use receiver::Transport;

fuzz_target!(|data: &[u8]| {
    // The first byte chooses the transport and how much longer than the
    // copy the packet claims to be.
    let Some((&choice, message)) = data.split_first() else {
        return;
    };
    let transport = if choice & 1 == 0 {
        Transport::Udp
    } else {
        Transport::Tcp
    };
    let length = message.len() + usize::from(choice >> 1);
    if let Ok(content) = parse(message, length, transport) {
        assert!(!content.cut || content.answers.is_empty());
    }
});
