//! Every address control can enter other than by falling through: targets
//! of direct branches and calls anywhere in the image (a function's cold
//! part jumps back into its hot part), jump-table entries, and exception
//! landing pads. Code may be moved only from between such addresses.

use std::collections::BTreeSet;

use iced_x86::{Decoder, DecoderOptions, FlowControl, Instruction, OpKind};

use super::landing_pads;
use crate::analyze::retpoline::Thunks;
use crate::elf::Image;

/// Most entries one jump table is read for.
const MAX_TABLE: u64 = 4096;

pub struct BranchTargets {
    pub targets: BTreeSet<u64>,
    /// Functions (by start address) with an indirect jump whose targets
    /// were not found: nothing inside them may move.
    pub unresolved: BTreeSet<u64>,
}

/// Decode every function of `image` and collect what enters code.
pub fn collect(image: &Image) -> BranchTargets {
    let code: Vec<(u64, u64)> = image
        .code_ranges()
        .iter()
        .map(|r| (r.vaddr, r.vaddr + r.bytes.len() as u64))
        .collect();
    let in_code = |a: u64| code.iter().any(|&(lo, hi)| a >= lo && a < hi);
    let mut targets = BTreeSet::new();
    let mut unresolved = BTreeSet::new();
    let thunks = Thunks::new(image);
    // Each function's candidate jump tables, if it jumps indirectly.
    let mut jumping: Vec<(u64, Vec<u64>)> = Vec::new();
    let mut bases = BTreeSet::new();
    for f in image.info.functions.iter().filter(|f| f.size > 0) {
        let Some(bytes) = image.read_vaddr(f.address, f.size as usize) else {
            continue;
        };
        targets.insert(f.address);
        let mut dec = Decoder::with_ip(64, bytes, f.address, DecoderOptions::NONE);
        let mut x = Instruction::default();
        let mut tables = Vec::new();
        let mut indirect_jump = false;
        while dec.can_decode() {
            dec.decode_out(&mut x);
            match x.flow_control() {
                // A jump through a retpoline thunk is an indirect jump.
                FlowControl::UnconditionalBranch if thunks.register_of(&x).is_some() => {
                    indirect_jump = true;
                }
                FlowControl::ConditionalBranch
                | FlowControl::UnconditionalBranch
                | FlowControl::Call => {
                    targets.insert(x.near_branch_target());
                }
                // A jump through a GOT slot is a tail call of an import.
                FlowControl::IndirectBranch
                    if !(x.op0_kind() == OpKind::Memory && x.is_ip_rel_memory_operand()) =>
                {
                    indirect_jump = true;
                }
                _ => {}
            }
            // Jump tables are addressed PC-relatively outside the code.
            if x.is_ip_rel_memory_operand() && !in_code(x.ip_rel_memory_address()) {
                tables.push(x.ip_rel_memory_address());
            }
        }
        bases.extend(tables.iter().copied());
        if indirect_jump {
            jumping.push((f.address, tables));
        }
    }
    // Read each candidate table as `int32` offsets from its base while they
    // land in code, up to the next address code refers to (where another
    // table or object starts; tables of consecutive functions lie side by
    // side, and their offsets land in code from any of their bases): more
    // targets than real only makes moving code rarer, never wrong.
    for (function, tables) in jumping {
        let mut found = false;
        for base in tables {
            let end = bases
                .range(base + 1..)
                .next()
                .map_or(MAX_TABLE, |next| ((next - base) / 4).min(MAX_TABLE));
            for i in 0..end {
                let Some(b) = image.read_vaddr(base + 4 * i, 4) else {
                    break;
                };
                let e = i32::from_le_bytes(b.try_into().expect("4 bytes"));
                let t = base.wrapping_add_signed(i64::from(e));
                if !in_code(t) {
                    break;
                }
                targets.insert(t);
                found = true;
            }
        }
        if !found {
            unresolved.insert(function);
        }
    }
    let (pads, unknown) = landing_pads::collect(image);
    targets.extend(pads);
    for start in unknown {
        if let Some(f) = image.function_at(start) {
            unresolved.insert(f.address);
        }
    }
    BranchTargets {
        targets,
        unresolved,
    }
}
