//! Decoded functions as basic blocks, and the backward reaching-definition
//! search that call-site analysis is built on.

use std::collections::{BTreeSet, HashMap};

use iced_x86::{
    Decoder, DecoderOptions, FlowControl, Instruction, InstructionInfoFactory, Mnemonic, OpAccess,
    Register,
};

/// A function's decoded instructions and their control flow.
pub struct FunctionCfg {
    pub insns: Vec<Instruction>,
    /// Each instruction's control flow, with direct calls and jumps of
    /// retpoline thunks as the indirect calls and jumps they stand for.
    pub flow: Vec<FlowControl>,
    /// Block index of every instruction.
    block_of: Vec<usize>,
    /// First instruction index of every block.
    starts: Vec<usize>,
    /// Predecessor blocks; `None` when control can reach the block in a way
    /// the analysis cannot see (it is only reached through an indirect jump
    /// that was not resolved, or is a landing pad). Blocks no execution
    /// reaches (alignment padding nobody branches to, and what only such
    /// padding falls into) are left out of every list.
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

/// The 64-bit general registers each instruction writes.
fn register_writes(insns: &[Instruction]) -> Vec<Vec<Register>> {
    let mut factory = InstructionInfoFactory::new();
    insns
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
        .collect()
}

/// Each block's predecessors among the blocks that run; `None` for a
/// block reached in a way the analysis cannot see.
fn live_predecessors(
    insns: &[Instruction],
    starts: &[usize],
    preds: Vec<Vec<usize>>,
    indirect_jumpers: Vec<usize>,
) -> Vec<Option<Vec<usize>>> {
    // Alignment padding after a return or jump is a block nobody
    // branches to: it never runs, and neither does a block only it
    // falls into. Any other block nobody branches or falls into is
    // reached in a way the analysis cannot see (a jump table, a landing
    // pad). Blocks reached from the entry or from such unseen entries
    // run; the others must not lend their (absent) facts to the blocks
    // they fall into.
    let padding = |b: usize| {
        let e = starts.get(b + 1).copied().unwrap_or(insns.len());
        insns[starts[b]..e]
            .iter()
            .all(|x| matches!(x.mnemonic(), Mnemonic::Nop | Mnemonic::Int3))
    };
    let mut live = vec![false; starts.len()];
    let mut work: Vec<usize> = (0..starts.len())
        .filter(|&b| b == 0 || (preds[b].is_empty() && !padding(b)))
        .collect();
    let mut succs: Vec<Vec<usize>> = vec![Vec::new(); starts.len()];
    for (b, p) in preds.iter().enumerate() {
        for &pb in p {
            succs[pb].push(b);
        }
    }
    while let Some(b) = work.pop() {
        if std::mem::replace(&mut live[b], true) {
            continue;
        }
        work.extend(succs[b].iter().copied().filter(|&s| !live[s]));
    }
    let indirect_jumpers: Vec<usize> = indirect_jumpers.into_iter().filter(|&b| live[b]).collect();
    // A block nobody branches or falls into is reached through an
    // indirect jump (a jump table) if the function has one; assume any.
    preds
        .into_iter()
        .enumerate()
        .map(|(b, p)| {
            let p: Vec<usize> = p.into_iter().filter(|&pb| live[pb]).collect();
            if b == 0 || !p.is_empty() || !live[b] {
                Some(p)
            } else if indirect_jumpers.is_empty() {
                None
            } else {
                Some(indirect_jumpers.clone())
            }
        })
        .collect()
}

impl FunctionCfg {
    /// Decode `code`, which starts at virtual address `ip`; `thunk` tells
    /// the register a direct call or jump branches through when its target
    /// is a retpoline thunk.
    pub fn decode(
        code: &[u8],
        ip: u64,
        thunk: &dyn Fn(&Instruction) -> Option<Register>,
    ) -> FunctionCfg {
        let mut dec = Decoder::with_ip(64, code, ip, DecoderOptions::NONE);
        let mut insns = Vec::new();
        while dec.can_decode() {
            insns.push(dec.decode());
        }
        let flow: Vec<FlowControl> = insns
            .iter()
            .map(|x| match x.flow_control() {
                FlowControl::Call if thunk(x).is_some() => FlowControl::IndirectCall,
                FlowControl::UnconditionalBranch if thunk(x).is_some() => {
                    FlowControl::IndirectBranch
                }
                f => f,
            })
            .collect();
        let end = ip + code.len() as u64;
        let index: HashMap<u64, usize> =
            insns.iter().enumerate().map(|(i, x)| (x.ip(), i)).collect();

        // Leaders: entry, branch targets inside the function, and whatever
        // follows a branch, return or other block end.
        let mut leaders = BTreeSet::new();
        leaders.insert(0usize);
        for (i, x) in insns.iter().enumerate() {
            match flow[i] {
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
            match flow[e - 1] {
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
        let preds = live_predecessors(&insns, &starts, preds, indirect_jumpers);
        let writes = register_writes(&insns);

        FunctionCfg {
            insns,
            flow,
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
                    && matches!(self.flow[i], FlowControl::Call | FlowControl::IndirectCall)
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
        if out.is_empty() {
            // `at` is in code no execution reaches: nothing is known.
            out.insert(Origin::Unknown);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use iced_x86::{Code, Encoder, MemoryOperand};

    fn assemble(insns: &[Instruction], ip: u64) -> Vec<u8> {
        let mut enc = Encoder::new(64);
        let mut at = ip;
        for x in insns {
            at += enc.encode(x, at).unwrap() as u64;
        }
        enc.take_buffer()
    }

    /// gcc -O2 -fstack-protector-strong: the arguments are set, a branch
    /// skips an early return, and the NOP padding after that `ret` falls
    /// into the call's block.
    #[test]
    fn padding_after_a_return_does_not_hide_the_arguments() {
        let ip = 0x1000;
        // Encoded twice: the first pass finds where the call's block starts.
        let build = |target: u64| {
            let mut v = vec![
                Instruction::with2(
                    Code::Lea_r64_m,
                    Register::RSI,
                    MemoryOperand::with_base_displ(Register::RIP, 0x3000),
                )
                .unwrap(),
                Instruction::with2(Code::Mov_r64_rm64, Register::R8, Register::RSP).unwrap(),
                Instruction::with2(Code::Test_rm32_r32, Register::EDI, Register::EDI).unwrap(),
                Instruction::with_branch(Code::Jne_rel32_64, target).unwrap(),
                Instruction::with(Code::Retnq),
            ];
            for _ in 0..7 {
                v.push(Instruction::with(Code::Nopd));
            }
            v.push(
                Instruction::with1(
                    Code::Call_rm64,
                    MemoryOperand::with_base_displ(Register::RBX, 8),
                )
                .unwrap(),
            );
            v
        };
        let first = assemble(&build(ip), ip);
        let call_at = ip + first.len() as u64 - 3;
        let code = assemble(&build(call_at), ip);
        let cfg = FunctionCfg::decode(&code, ip, &|_| None);
        let at = cfg.insns.len() - 1;
        assert_eq!(cfg.insns[at].ip(), call_at);
        let rsi = cfg.origins(Register::RSI, at);
        assert_eq!(rsi, BTreeSet::from([Origin::Def(0)]));
        assert_eq!(
            cfg.origins(Register::R8, at),
            BTreeSet::from([Origin::Def(1)])
        );
        // Arguments never set stay the caller's.
        assert_eq!(
            cfg.origins(Register::RDX, at),
            BTreeSet::from([Origin::Entry])
        );
    }

    /// A block nobody branches to that is real code (a landing pad, a
    /// jump-table target) is still reached in an unseen way.
    #[test]
    fn code_without_predecessors_stays_unknown() {
        let ip = 0x2000;
        let insns = [
            Instruction::with(Code::Retnq),
            Instruction::with2(Code::Mov_r64_rm64, Register::RSI, Register::RAX).unwrap(),
            Instruction::with1(
                Code::Call_rm64,
                MemoryOperand::with_base_displ(Register::RBX, 8),
            )
            .unwrap(),
        ];
        let code = assemble(&insns, ip);
        let cfg = FunctionCfg::decode(&code, ip, &|_| None);
        assert_eq!(
            cfg.origins(Register::RDI, 2),
            BTreeSet::from([Origin::Unknown])
        );
    }
}
