//! A classic BPF filter on each conntrack socket: the kernel drops the NEW
//! and DESTROY events of entries that no NAT rewrote (neither `IPS_SRC_NAT`
//! nor `IPS_DST_NAT` in their status) before it queues them, so that a
//! host's untranslated connections, nearly all of them, cost the reader
//! neither a wake-up nor a parse (the technique of libnetfilter_conntrack's
//! event filters). Dump answers (`NLM_F_MULTI`: an entry inserted by
//! `conntrack -I` with a reply of its own carries no NAT bit and is still
//! read), errors and anything else pass, and so does an event whose status
//! is not among its first attributes: the filter can only drop what is
//! certainly not translated.

use std::io;
use std::os::fd::RawFd;

use libc::sock_filter;
use libc::{
    BPF_ABS, BPF_ADD, BPF_ALU, BPF_AND, BPF_B, BPF_H, BPF_IMM, BPF_IND, BPF_JEQ, BPF_JGE, BPF_JMP,
    BPF_JSET, BPF_K, BPF_LD, BPF_LDX, BPF_LEN, BPF_LSH, BPF_MEM, BPF_MISC, BPF_OR, BPF_RET, BPF_ST,
    BPF_STX, BPF_SUB, BPF_TAX, BPF_W, BPF_X,
};

/// `(NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_NEW` and `_DELETE`.
const CT_NEW: u16 = 1 << 8;
const CT_DELETE: u16 = (1 << 8) | 2;

/// A netlink header field (host order, little-endian where the filter is
/// attached) as classic BPF's half-word load reads it: big-endian.
const fn as_loaded(field: u16) -> u32 {
    u16::from_be_bytes(field.to_le_bytes()) as u32
}
/// `NLM_F_MULTI`, in the low byte of the host-order flags.
const NLM_F_MULTI: u32 = 0x02;
/// The first attribute: after the netlink header (16) and nfgenmsg (4).
const ATTRIBUTES_AT: u32 = 20;
/// `CTA_STATUS`: an event carries it after its tuples (and zone and id,
/// where it has them), so within the first attributes searched.
const CTA_STATUS: u32 = 3;
/// `IPS_SRC_NAT | IPS_DST_NAT`.
const IPS_NAT_MASK: u32 = 0x30;
/// Attributes looked at for the status before the event is let through.
const ATTRIBUTES_SEARCHED: usize = 6;

const fn statement(code: u32, k: u32) -> sock_filter {
    sock_filter {
        code: code as u16,
        jt: 0,
        jf: 0,
        k,
    }
}

const fn jump(code: u32, k: u32, jt: u8, jf: u8) -> sock_filter {
    sock_filter {
        code: code as u16,
        jt,
        jf,
        k,
    }
}

/// One step of the search, X at an attribute: leave for the end when the
/// packet ends, decide on the status, else move X to the next attribute.
const STEP: usize = 21;

/// The filter's instructions.
fn program() -> Vec<sock_filter> {
    const HEADER: usize = 6;
    let accept = HEADER + STEP * ATTRIBUTES_SEARCHED;
    let drop = accept + 1;
    // A jump from instruction `at` to `to`.
    let to = |at: usize, to: usize| (to - at - 1) as u8;
    let mut p = vec![
        statement(BPF_LD | BPF_H | BPF_ABS, 4),
        jump(BPF_JMP | BPF_JEQ | BPF_K, as_loaded(CT_NEW), 1, 0),
        jump(
            BPF_JMP | BPF_JEQ | BPF_K,
            as_loaded(CT_DELETE),
            0,
            to(2, accept),
        ),
        statement(BPF_LD | BPF_B | BPF_ABS, 6),
        jump(BPF_JMP | BPF_JSET | BPF_K, NLM_F_MULTI, to(4, accept), 0),
        statement(BPF_LDX | BPF_W | BPF_IMM, ATTRIBUTES_AT),
    ];
    for step in 0..ATTRIBUTES_SEARCHED {
        let at = |i: usize| HEADER + step * STEP + i;
        p.extend([
            // A whole attribute header and a status value left?
            statement(BPF_LD | BPF_W | BPF_LEN, 0),
            statement(BPF_ALU | BPF_SUB | BPF_K, 8),
            jump(BPF_JMP | BPF_JGE | BPF_X, 0, 0, to(at(2), accept)),
            // Its type (host order, flags in the high byte).
            statement(BPF_LD | BPF_B | BPF_IND, 2),
            jump(BPF_JMP | BPF_JEQ | BPF_K, CTA_STATUS, 0, 4),
            statement(BPF_LD | BPF_B | BPF_IND, 3),
            jump(BPF_JMP | BPF_JEQ | BPF_K, 0, 0, 2),
            // The status, in network order as the load reads it.
            statement(BPF_LD | BPF_W | BPF_IND, 4),
            jump(
                BPF_JMP | BPF_JSET | BPF_K,
                IPS_NAT_MASK,
                to(at(8), accept),
                to(at(8), drop),
            ),
            // Not the status: X += its length (host order), aligned to 4.
            statement(BPF_LD | BPF_B | BPF_IND, 1),
            statement(BPF_ALU | BPF_LSH | BPF_K, 8),
            statement(BPF_ST, 1),
            statement(BPF_LD | BPF_B | BPF_IND, 0),
            statement(BPF_STX, 0),
            statement(BPF_LDX | BPF_W | BPF_MEM, 1),
            statement(BPF_ALU | BPF_OR | BPF_X, 0),
            statement(BPF_LDX | BPF_W | BPF_MEM, 0),
            statement(BPF_ALU | BPF_ADD | BPF_K, 3),
            statement(BPF_ALU | BPF_AND | BPF_K, !3),
            statement(BPF_ALU | BPF_ADD | BPF_X, 0),
            statement(BPF_MISC | BPF_TAX, 0),
        ]);
    }
    p.push(statement(BPF_RET | BPF_K, u32::MAX));
    p.push(statement(BPF_RET | BPF_K, 0));
    debug_assert_eq!(p.len(), drop + 1);
    p
}

/// Attaches the filter to the conntrack socket `fd`.
pub fn attach(fd: RawFd) -> io::Result<()> {
    if cfg!(target_endian = "big") {
        // Its offsets and constants read netlink's host-order fields as
        // little-endian.
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "the conntrack event filter is written for little-endian hosts",
        ));
    }
    let mut instructions = program();
    let program = libc::sock_fprog {
        len: instructions.len() as u16,
        filter: instructions.as_mut_ptr(),
    };
    // The kernel copies the program before this returns.
    super::socket::set_option(fd, libc::SO_ATTACH_FILTER, &program)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_jump_lands_inside_the_program() {
        let p = program();
        for (i, insn) in p.iter().enumerate() {
            if u32::from(insn.code) & 0x07 == BPF_JMP {
                assert!(i + 1 + (insn.jt as usize) < p.len(), "jt of {i}");
                assert!(i + 1 + (insn.jf as usize) < p.len(), "jf of {i}");
            }
        }
        assert!(p.len() <= 4096);
    }

    #[test]
    fn the_message_types_are_compared_as_the_load_reads_them() {
        // Bytes 00 01 and 02 01 of a little-endian header, read big-endian.
        assert_eq!(as_loaded(CT_NEW), 0x0001);
        assert_eq!(as_loaded(CT_DELETE), 0x0201);
    }
}
