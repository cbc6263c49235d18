//! Byte scans that rule code out of decoding: without decoding, instruction
//! boundaries are unknown, so every scan reads the bytes at *every* offset
//! as if an instruction's opcode started there. A kind of instruction the
//! decoder can find in some code always has its opcode bytes in that code,
//! so code in which no offset matches holds no such instruction: the scans
//! fail closed (a match only means "decode this to know").
//!
//! What the decoder (iced-x86, 64-bit mode, Intel rules: an operand-size
//! prefix does not shorten a near branch) can find, by opcode:
//! - an indirect call (`FlowControl::IndirectCall`): `FF /2`, `FF /3`;
//! - an indirect jump (`FlowControl::IndirectBranch`): `FF /4`, `FF /5`;
//! - a direct call or jump (of a retpoline thunk, too): `E8`/`E9` with a
//!   32-bit offset, `EB` with an 8-bit one;
//! - a direct branch with a target: `70`–`7F`, `E0`–`E3`, `EB` (8-bit
//!   offset), `E8`, `E9`, `0F 80`–`0F 8F` (32-bit offset); the target is the
//!   end of the opcode and offset plus the offset, whatever prefixes stand
//!   before the opcode (other `Call`s, `syscall` and the like, have no
//!   target: the decoder reports 0);
//! - a RIP-relative memory operand: a ModRM byte with mod 00 and r/m 101,
//!   then a 32-bit displacement, then 0, 1, 2 or 4 bytes of immediate; the
//!   address is the instruction's end plus the displacement (truncated to
//!   32 bits under an address-size prefix).

/// Bytes per block tested at once (a test the compiler vectorises).
const BLOCK: usize = 32;

/// Call `visit` with every offset of `code` whose byte passes `wanted`,
/// in order, until it returns `true`; whether one did.
#[inline(always)]
fn any_offset(
    code: &[u8],
    wanted: impl Fn(u8) -> bool,
    mut visit: impl FnMut(usize) -> bool,
) -> bool {
    let mut blocks = code.chunks_exact(BLOCK);
    let mut at = 0;
    for block in blocks.by_ref() {
        let block: &[u8; BLOCK] = block.try_into().expect("a whole block");
        // No early exit inside a block, so the test is vectorised.
        let mut hit = 0u8;
        for &b in block {
            hit |= u8::from(wanted(b));
        }
        if hit != 0 {
            for (i, &b) in block.iter().enumerate() {
                if wanted(b) && visit(at + i) {
                    return true;
                }
            }
        }
        at += BLOCK;
    }
    for (i, &b) in blocks.remainder().iter().enumerate() {
        if wanted(b) && visit(at + i) {
            return true;
        }
    }
    false
}

fn rel8(code: &[u8], at: usize) -> Option<i64> {
    code.get(at).map(|&b| i64::from(b as i8))
}

fn rel32(code: &[u8], at: usize) -> Option<i64> {
    let b = code.get(at..at.checked_add(4)?)?;
    Some(i64::from(i32::from_le_bytes(b.try_into().ok()?)))
}

/// The target of a relative branch whose offset of `len` bytes ends at
/// offset `end` of code starting at `ip`.
fn target(ip: u64, end: usize, offset: i64) -> u64 {
    ip.wrapping_add(end as u64).wrapping_add(offset as u64)
}

/// The `/digit` (ModRM reg field) of an `FF` opcode at `at`, if the code
/// holds its ModRM byte.
fn ff_digit(code: &[u8], at: usize) -> Option<u8> {
    code.get(at + 1).map(|m| (m >> 3) & 7)
}

/// Whether `code` (at `ip`) may hold an indirect call: `FF /2`, `FF /3`, or
/// a direct `call` whose target `thunk` says is a retpoline thunk. `false`
/// proves the decoder finds none.
pub fn may_call_indirectly(code: &[u8], ip: u64, thunk: impl Fn(u64) -> bool) -> bool {
    any_offset(
        code,
        |b| (b == 0xff) | (b == 0xe8),
        |at| match code[at] {
            0xff => matches!(ff_digit(code, at), Some(2 | 3)),
            _ => rel32(code, at + 1).is_some_and(|r| thunk(target(ip, at + 5, r))),
        },
    )
}

/// What the branch scan looks for in a function.
pub struct BranchScan<'a> {
    /// Whether a direct branch target matters (lies in a window).
    pub wanted: &'a dyn Fn(u64) -> bool,
    /// Whether an address is a retpoline thunk.
    pub thunk: &'a dyn Fn(u64) -> bool,
}

/// Whether `code` (at `ip`) may hold a direct branch, jump or call whose
/// target is `wanted`, an indirect jump (`FF /4`, `FF /5`), or a direct
/// jump to a retpoline thunk. `false` proves the decoder finds none.
pub fn may_branch_to_or_jump_indirectly(code: &[u8], ip: u64, scan: &BranchScan) -> bool {
    let opcode = |b: u8| (b & 0xf0 == 0x70) | (b & 0xf0 == 0xe0) | (b == 0x0f) | (b == 0xff);
    any_offset(code, opcode, |at| {
        let b = code[at];
        let near = |len: usize, offset: Option<i64>| {
            offset.is_some_and(|r| (scan.wanted)(target(ip, at + len, r)))
        };
        match b {
            0x70..=0x7f | 0xe0..=0xe3 => near(2, rel8(code, at + 1)),
            0xe8 => near(5, rel32(code, at + 1)),
            0xe9 => rel32(code, at + 1).is_some_and(|r| {
                let t = target(ip, at + 5, r);
                (scan.wanted)(t) || (scan.thunk)(t)
            }),
            0xeb => rel8(code, at + 1).is_some_and(|r| {
                let t = target(ip, at + 2, r);
                (scan.wanted)(t) || (scan.thunk)(t)
            }),
            0x0f => matches!(code.get(at + 1), Some(0x80..=0x8f)) && near(6, rel32(code, at + 2)),
            0xff => matches!(ff_digit(code, at), Some(4 | 5)),
            _ => false,
        }
    })
}

/// Whether `code` (at `ip`) may hold a RIP-relative memory operand whose
/// address is `wanted`. `false` proves the decoder finds none.
pub fn may_refer_to(code: &[u8], ip: u64, wanted: impl Fn(u64) -> bool) -> bool {
    any_offset(
        code,
        |b| b & 0xc7 == 0x05,
        |at| {
            let Some(disp) = rel32(code, at + 1) else {
                return false;
            };
            // The immediate that may follow the displacement, if the code
            // holds it.
            (0..=4).any(|imm| {
                let end = at + 5 + imm;
                end <= code.len() && {
                    let a = target(ip, end, disp);
                    wanted(a) || wanted(a & 0xffff_ffff)
                }
            })
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use iced_x86::{Decoder, DecoderOptions, FlowControl, Instruction};

    const IP: u64 = 0x7000;

    /// Every instruction the decoder finds at any offset of `code`.
    fn decodings(code: &[u8]) -> Vec<Instruction> {
        (0..code.len())
            .map(|o| {
                let mut d = Decoder::with_ip(64, &code[o..], IP + o as u64, DecoderOptions::NONE);
                d.decode()
            })
            .collect()
    }

    /// The scans never miss what decoding (at any offset, so whatever the
    /// instruction boundaries) finds: random bytes, and bytes dense in the
    /// opcodes that matter and in prefixes.
    #[test]
    fn scans_find_a_superset_of_what_decoding_finds() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let alphabet = [
            0xff, 0xe8, 0xe9, 0xeb, 0x0f, 0x84, 0x74, 0xe3, 0x66, 0x67, 0x48, 0x41, 0xf2, 0x3e,
            0x2e, 0x15, 0x25, 0x05, 0x14, 0x1d, 0xd0, 0xe0, 0x10, 0x00, 0x01, 0xc7, 0x80, 0x81,
            0x8b, 0x8d, 0xc4, 0xc5, 0x62,
        ];
        for round in 0..4000 {
            let len = 1 + (next() % 40) as usize;
            let code: Vec<u8> = (0..len)
                .map(|_| {
                    let r = next();
                    if round % 2 == 0 {
                        r as u8
                    } else {
                        alphabet[(r % alphabet.len() as u64) as usize]
                    }
                })
                .collect();
            let found = decodings(&code);
            // Every target as "wanted" (a thunk everywhere, too).
            let any_target = found.iter().any(|x| {
                matches!(
                    x.flow_control(),
                    FlowControl::ConditionalBranch
                        | FlowControl::UnconditionalBranch
                        | FlowControl::Call
                ) && x.near_branch_target() != 0
            });
            let indirect_call = found
                .iter()
                .any(|x| x.flow_control() == FlowControl::IndirectCall);
            let direct_call = found
                .iter()
                .any(|x| x.flow_control() == FlowControl::Call && x.near_branch_target() != 0);
            let indirect_jump = found
                .iter()
                .any(|x| x.flow_control() == FlowControl::IndirectBranch);
            let rip_rel: Vec<u64> = found
                .iter()
                .filter(|x| x.is_ip_rel_memory_operand())
                .map(|x| x.ip_rel_memory_address())
                .collect();
            if indirect_call {
                assert!(may_call_indirectly(&code, IP, |_| false), "{code:02x?}");
            }
            if direct_call {
                assert!(may_call_indirectly(&code, IP, |_| true), "{code:02x?}");
            }
            for x in &found {
                if matches!(
                    x.flow_control(),
                    FlowControl::ConditionalBranch
                        | FlowControl::UnconditionalBranch
                        | FlowControl::Call
                ) && x.near_branch_target() != 0
                {
                    let t = x.near_branch_target();
                    let only = |a: u64| a == t;
                    let never = |_: u64| false;
                    let scan = BranchScan {
                        wanted: &only,
                        thunk: &never,
                    };
                    assert!(
                        may_branch_to_or_jump_indirectly(&code, IP, &scan),
                        "{x} in {code:02x?}"
                    );
                }
                if x.flow_control() == FlowControl::UnconditionalBranch {
                    let t = x.near_branch_target();
                    let never = |_: u64| false;
                    let only = |a: u64| a == t;
                    let scan = BranchScan {
                        wanted: &never,
                        thunk: &only,
                    };
                    assert!(
                        may_branch_to_or_jump_indirectly(&code, IP, &scan),
                        "{x} in {code:02x?}"
                    );
                }
            }
            let _ = any_target;
            if indirect_jump {
                let never = |_: u64| false;
                let scan = BranchScan {
                    wanted: &never,
                    thunk: &never,
                };
                assert!(
                    may_branch_to_or_jump_indirectly(&code, IP, &scan),
                    "{code:02x?}"
                );
            }
            for a in rip_rel {
                assert!(may_refer_to(&code, IP, |w| w == a), "{a:#x} in {code:02x?}");
            }
        }
    }

    #[test]
    fn code_without_the_opcodes_is_ruled_out() {
        // `add rax, 1` again and again, then `ret`.
        let mut code: Vec<u8> = [0x48, 0x83, 0xc0, 0x01].repeat(300);
        code.push(0xc3);
        let yes = |_: u64| true;
        assert!(!may_call_indirectly(&code, IP, yes));
        let scan = BranchScan {
            wanted: &yes,
            thunk: &yes,
        };
        assert!(!may_branch_to_or_jump_indirectly(&code, IP, &scan));
        assert!(!may_refer_to(&code, IP, yes));
        // `call [rbx+8]` at the very end, then `call rax` alone.
        code.extend([0xff, 0x53, 0x08]);
        assert!(may_call_indirectly(&code, IP, |_| false));
        assert!(may_call_indirectly(&[0xff, 0xd0], IP, |_| false));
        // `jmp rax` is no call; `FF` as the last byte is no instruction.
        assert!(!may_call_indirectly(&[0xff, 0xe0], IP, |_| false));
        assert!(!may_call_indirectly(&[0x90, 0xff], IP, |_| false));
    }
}
