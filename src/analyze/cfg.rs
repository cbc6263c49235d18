//! Decoded functions as basic blocks, and the backward reaching-definition
//! search that call-site analysis is built on.

use std::collections::{BTreeSet, HashMap};

use iced_x86::{
    Decoder, DecoderOptions, FlowControl, Instruction, InstructionInfoFactory, OpAccess, Register,
};

/// A function's decoded instructions and their control flow.
pub struct FunctionCfg {
    pub insns: Vec<Instruction>,
    /// Block index of every instruction.
    block_of: Vec<usize>,
    /// First instruction index of every block.
    starts: Vec<usize>,
    /// Predecessor blocks; `None` when control can reach the block in a way
    /// the analysis cannot see (it is only reached through an indirect jump
    /// that was not resolved).
    preds: Vec<Option<Vec<usize>>>,
    /// Registers each instruction writes (full 64-bit registers).
    writes: Vec<Vec<Register>>,
}

/// Where a register's value at some point came from, on one path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Origin {
    /// Written by the instruction with this index.
    Def(usize),
    /// Not written since the function's entry: the caller's value.
    Entry,
    /// Clobbered by a call in between (caller-saved register).
    Clobbered,
    /// Reached a block whose predecessors are not known.
    Unknown,
}

/// Caller-saved general-purpose registers of the SysV x86-64 ABI.
pub fn is_caller_saved(r: Register) -> bool {
    matches!(
        r,
        Register::RAX
            | Register::RCX
            | Register::RDX
            | Register::RSI
            | Register::RDI
            | Register::R8
            | Register::R9
            | Register::R10
            | Register::R11
    )
}

impl FunctionCfg {
    /// Decode `code`, which starts at virtual address `ip`.
    pub fn decode(code: &[u8], ip: u64) -> FunctionCfg {
        let mut dec = Decoder::with_ip(64, code, ip, DecoderOptions::NONE);
        let mut insns = Vec::new();
        while dec.can_decode() {
            insns.push(dec.decode());
        }
        let end = ip + code.len() as u64;
        let index: HashMap<u64, usize> =
            insns.iter().enumerate().map(|(i, x)| (x.ip(), i)).collect();

        // Leaders: entry, branch targets inside the function, and whatever
        // follows a branch, return or other block end.
        let mut leaders = BTreeSet::new();
        leaders.insert(0usize);
        for (i, x) in insns.iter().enumerate() {
            match x.flow_control() {
                FlowControl::ConditionalBranch | FlowControl::UnconditionalBranch => {
                    let t = x.near_branch_target();
                    if (ip..end).contains(&t) {
                        if let Some(&ti) = index.get(&t) {
                            leaders.insert(ti);
                        }
                    }
                    leaders.insert(i + 1);
                }
                FlowControl::IndirectBranch
                | FlowControl::Return
                | FlowControl::Exception
                | FlowControl::Interrupt => {
                    leaders.insert(i + 1);
                }
                _ => {}
            }
        }
        let starts: Vec<usize> = leaders.into_iter().filter(|&i| i < insns.len()).collect();
        let mut block_of = vec![0; insns.len()];
        for (b, &s) in starts.iter().enumerate() {
            let e = starts.get(b + 1).copied().unwrap_or(insns.len());
            block_of[s..e].fill(b);
        }

        let mut preds: Vec<Vec<usize>> = vec![Vec::new(); starts.len()];
        let mut indirect_jumpers = Vec::new();
        for (b, &s) in starts.iter().enumerate() {
            let e = starts.get(b + 1).copied().unwrap_or(insns.len());
            let last = &insns[e - 1];
            let mut falls = true;
            match last.flow_control() {
                FlowControl::ConditionalBranch => {
                    if let Some(&ti) = index.get(&last.near_branch_target()) {
                        preds[block_of[ti]].push(b);
                    }
                }
                FlowControl::UnconditionalBranch => {
                    if let Some(&ti) = index.get(&last.near_branch_target()) {
                        preds[block_of[ti]].push(b);
                    }
                    falls = false;
                }
                FlowControl::IndirectBranch => {
                    indirect_jumpers.push(b);
                    falls = false;
                }
                FlowControl::Return | FlowControl::Exception | FlowControl::Interrupt => {
                    falls = false
                }
                _ => {}
            }
            let _ = s;
            if falls && b + 1 < starts.len() {
                preds[b + 1].push(b);
            }
        }
        // A block nobody branches or falls into is reached through an
        // indirect jump (a jump table) if the function has one; assume any.
        let preds = preds
            .into_iter()
            .enumerate()
            .map(|(b, p)| {
                if b == 0 || !p.is_empty() {
                    Some(p)
                } else if indirect_jumpers.is_empty() {
                    None
                } else {
                    Some(indirect_jumpers.clone())
                }
            })
            .collect();

        let mut factory = InstructionInfoFactory::new();
        let writes = insns
            .iter()
            .map(|x| {
                let info = factory.info(x);
                let mut w: Vec<Register> = info
                    .used_registers()
                    .iter()
                    .filter(|u| {
                        matches!(
                            u.access(),
                            OpAccess::Write
                                | OpAccess::CondWrite
                                | OpAccess::ReadWrite
                                | OpAccess::ReadCondWrite
                        )
                    })
                    .map(|u| u.register().full_register())
                    .filter(|r| r.is_gpr64())
                    .collect();
                w.dedup();
                w
            })
            .collect();

        FunctionCfg {
            insns,
            block_of,
            starts,
            preds,
            writes,
        }
    }

    /// Every origin of `reg`'s value just before instruction `at`.
    pub fn origins(&self, reg: Register, at: usize) -> BTreeSet<Origin> {
        let mut out = BTreeSet::new();
        let mut visited = vec![false; self.starts.len()];
        // (block, scan from this index downwards, exclusive)
        let mut work = vec![(self.block_of[at], at)];
        let caller_saved = is_caller_saved(reg);
        while let Some((b, from)) = work.pop() {
            let start = self.starts[b];
            let mut found = false;
            for i in (start..from).rev() {
                let x = &self.insns[i];
                if self.writes[i].contains(&reg) && !x.is_call_near_indirect() && !x.is_call_near()
                {
                    out.insert(Origin::Def(i));
                    found = true;
                    break;
                }
                if caller_saved
                    && matches!(
                        x.flow_control(),
                        FlowControl::Call | FlowControl::IndirectCall
                    )
                {
                    out.insert(Origin::Clobbered);
                    found = true;
                    break;
                }
            }
            if found {
                continue;
            }
            match &self.preds[b] {
                None => {
                    out.insert(Origin::Unknown);
                }
                Some(p) if b == 0 && p.is_empty() => {
                    out.insert(Origin::Entry);
                }
                Some(p) => {
                    if b == 0 {
                        out.insert(Origin::Entry);
                    }
                    for &pb in p {
                        if !visited[pb] {
                            visited[pb] = true;
                            let end = self.starts.get(pb + 1).copied().unwrap_or(self.insns.len());
                            work.push((pb, end));
                        }
                    }
                }
            }
        }
        out
    }
}
