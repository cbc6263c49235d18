//! Lowering RPC call sites: rewriting a fused image's indirect `invoke`
//! calls into direct PC-relative calls.
//!
//! A site `call T` (T the `invoke_fn` pointer, in a register or memory) that
//! returns to address R becomes a `call rel32` ending at R, so the return
//! address, the unwind row and the exception call-site entry of the caller
//! are those of the original call. The instructions the 5-byte call
//! overwrites (the indirect call is 2–3 bytes) move into the site's thunk;
//! their old bytes become NOPs. The thunk, entered like a called function
//! (return address on the stack, nothing else pushed), runs the moved
//! instructions, then checks that T is the runtime's dispatcher: if so it
//! jumps to the lowered destination, otherwise to T itself, so a site that
//! only looks like an RPC keeps its behaviour.
//!
//! - tier 1: the destination is the runtime's dispatcher (name lookup);
//! - tier 2: the callee name is a constant naming a fused image, and the
//!   destination is that image's entry stub (no lookup).
//!
//! Code moves only from between branch targets (direct branches anywhere in
//! the image, jump-table entries, landing pads); moved instructions must not
//! branch, touch the stack pointer other than as a memory base, or be an
//! `endbr64` landing pad. A site that cannot be lowered stays an indirect
//! call through the runtime (tier 0) with the reason.

mod encode;
mod landing_pads;
mod targets;

use iced_x86::{
    Code, Decoder, DecoderOptions, FlowControl, Instruction, InstructionInfoFactory, OpAccess,
    OpKind, Register,
};
use serde::Serialize;

use crate::analyze::{Callee, RpcSite};
use crate::elf::Image;

pub use encode::{patch_site, stub_bytes, thunk_bytes, unwind_blob, STUB_SIZE};

/// Length of the direct `call rel32` a lowered site ends with: the bytes
/// before the return address it overwrites must not be a branch target.
const DIRECT_CALL_LEN: u64 = 5;

/// How far `merge` lowers RPC sites.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// Leave every site an indirect call (tier 0).
    None,
    /// Direct calls to the runtime's dispatcher (tier 1).
    Dispatch,
    /// Direct calls to the callee's entry stub where the name is a constant
    /// fused callee (tier 2), to the dispatcher elsewhere.
    #[default]
    Direct,
}

/// Where a lowered site's thunk goes when the guard holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dest {
    Dispatch,
    /// The entry stub of fused image `k` (its index in the fused table).
    Image(usize),
}

/// The original call's target operand.
#[derive(Debug, Clone, Copy)]
enum Target {
    Reg(Register),
    /// The call's memory operand (copied from the call instruction).
    Mem(Instruction),
    /// A direct call of a retpoline thunk (input address) that branches to
    /// the register's value: the guard's fallback jumps to the thunk, so
    /// the site stays speculation-safe.
    Retpoline(Register, u64),
}

/// A site that will be rewritten.
#[derive(Debug, Clone)]
pub struct Lowered {
    pub tier: u8,
    pub dest: Dest,
    /// First byte rewritten (input address).
    pub window_start: u64,
    /// The original return address (input address); the new call ends here.
    pub call_end: u64,
    moved: Vec<Instruction>,
    target: Target,
    /// Size of the thunk's code.
    pub thunk_size: u64,
}

/// Name of the non-allocated section of a fused image that lists its RPC
/// sites as JSON ([`SiteRecord`]s), read back by `inspect`.
pub const SITES_SECTION: &str = ".faasfuse.sites";

/// An RPC site of a fused image and how it was lowered.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct SiteRecord {
    /// The function library the site came from.
    pub image: String,
    pub function: Option<String>,
    /// Address of the call in the input library.
    pub input_address: u64,
    /// Address of the (original) call in the fused image.
    pub address: u64,
    pub callee: Callee,
    /// 0: indirect call through the runtime; 1: direct call of the
    /// dispatcher; 2: direct call of the callee's entry stub.
    pub tier: u8,
    /// Address of the site's thunk, when lowered.
    pub thunk: Option<u64>,
    pub reason: String,
}

/// What happens to one RPC site.
#[derive(Debug, Clone)]
pub struct SitePlan {
    pub site: RpcSite,
    pub lowered: Option<Lowered>,
    /// Why the site has its tier.
    pub reason: String,
}

impl SitePlan {
    pub fn tier(&self) -> u8 {
        self.lowered.as_ref().map_or(0, |l| l.tier)
    }
}

/// Decide, for each RPC site of `image`, whether and how to lower it.
/// `table` holds the fused images' names in fused-table order.
pub fn plan(image: &Image, sites: &[RpcSite], table: &[String], level: Level) -> Vec<SitePlan> {
    if level == Level::None || sites.is_empty() {
        return sites
            .iter()
            .map(|s| SitePlan {
                site: s.clone(),
                lowered: None,
                reason: "not lowered (--lower=none): indirect call through the runtime".into(),
            })
            .collect();
    }
    let targets = targets::collect_for(image, sites);
    sites
        .iter()
        .map(|s| {
            let (dest, why) = match (&s.callee, level) {
                (Callee::Constant(n), Level::Direct) => match table.iter().position(|t| t == n) {
                    Some(k) => (Dest::Image(k), format!("direct call of fused {n}")),
                    None => (
                        Dest::Dispatch,
                        format!("{n} is not fused: direct call of the dispatcher, which forwards it to the host"),
                    ),
                },
                (Callee::Dynamic, _) => (
                    Dest::Dispatch,
                    "name computed at run time: direct call of the dispatcher".to_string(),
                ),
                _ => (Dest::Dispatch, "direct call of the dispatcher".to_string()),
            };
            match window(image, &targets, s) {
                Ok((window_start, moved, target)) => {
                    let mut l = Lowered {
                        tier: if matches!(dest, Dest::Image(_)) { 2 } else { 1 },
                        dest,
                        window_start,
                        call_end: s.address + s.length as u64,
                        moved,
                        target,
                        thunk_size: 0,
                    };
                    match encode::thunk_bytes(&l, 0, 0x1000_0000, 0x2000_0000, 0x3000_0000) {
                        Ok(b) => {
                            l.thunk_size = b.len() as u64;
                            SitePlan {
                                site: s.clone(),
                                lowered: Some(l),
                                reason: why,
                            }
                        }
                        Err(e) => kept(s, format!("cannot re-encode the moved code: {e}")),
                    }
                }
                Err(reason) => kept(s, reason),
            }
        })
        .collect()
}

fn kept(s: &RpcSite, reason: String) -> SitePlan {
    SitePlan {
        site: s.clone(),
        lowered: None,
        reason: format!("not lowered: {reason}; indirect call through the runtime"),
    }
}

/// The bytes to rewrite around a site: `[window_start, call end)` made of
/// the call and the instructions before it that must move to make room.
fn window(
    image: &Image,
    targets: &targets::BranchTargets,
    s: &RpcSite,
) -> Result<(u64, Vec<Instruction>, Target), String> {
    let f = image
        .function_at(s.address)
        .ok_or("no function symbol covers the site")?;
    if targets.unresolved.contains(&f.address) {
        return Err(format!(
            "{} has an indirect jump or landing pads whose targets are unknown",
            f.name
        ));
    }
    let bytes = image
        .read_vaddr(f.address, f.size as usize)
        .ok_or("function bytes are not in the file")?;
    let mut dec = Decoder::with_ip(64, bytes, f.address, DecoderOptions::NONE);
    let insns: Vec<Instruction> = dec.iter().collect();
    let at = insns
        .iter()
        .position(|x| x.ip() == s.address)
        .ok_or("the call is not on an instruction boundary of its function")?;
    let call = insns[at];
    if call.next_ip() != s.address + s.length as u64 {
        // The site was found in a decoding of other bounds (its section's)
        // than its function's: they disagree, so neither is trusted.
        return Err(
            "the call decodes otherwise within its function than where the site was found".into(),
        );
    }
    let target = match call.op0_kind() {
        OpKind::Register => Target::Reg(call.op0_register()),
        OpKind::Memory => Target::Mem(call),
        OpKind::NearBranch64 => {
            let thunk = call.near_branch_target();
            let r = crate::analyze::retpoline::thunk_register(image, thunk)
                .ok_or("a direct call that is not of a retpoline thunk")?;
            Target::Retpoline(r, thunk)
        }
        _ => return Err("unexpected call operand".into()),
    };
    let end = call.next_ip();
    let mut start = at;
    let mut factory = InstructionInfoFactory::new();
    while end - insns[start].ip() < DIRECT_CALL_LEN {
        if targets.targets.contains(&insns[start].ip()) {
            return Err(format!(
                "a branch target at {:#x} is too close before the call",
                insns[start].ip()
            ));
        }
        if start == 0 {
            return Err("too close to the function's start".into());
        }
        start -= 1;
        movable(&insns[start], &mut factory)?;
    }
    Ok((insns[start].ip(), insns[start..at].to_vec(), target))
}

/// Whether `x` may run in a thunk instead of its place: it must fall
/// through, leave the stack pointer alone (the thunk runs with the return
/// address pushed, so `rsp`-based memory operands are adjusted) and not be
/// a landing pad of indirect branches.
fn movable(x: &Instruction, factory: &mut InstructionInfoFactory) -> Result<(), String> {
    let what = || format!("cannot move `{x}` at {:#x}", x.ip());
    if x.code() == Code::Endbr64 {
        return Err(format!("{}: an indirect-branch landing pad", what()));
    }
    if x.flow_control() != FlowControl::Next || x.stack_pointer_increment() != 0 {
        return Err(format!("{}: it changes control flow or the stack", what()));
    }
    let info = factory.info(x);
    let rsp_base = x.memory_base() == Register::RSP;
    let writes_rsp = info.used_registers().iter().any(|u| {
        u.register().full_register() == Register::RSP
            && !matches!(u.access(), OpAccess::Read | OpAccess::CondRead)
    });
    if writes_rsp {
        return Err(format!("{}: it writes rsp", what()));
    }
    // Reading rsp as a value moves when re-encoded for the pushed return
    // address (encode::relocate): `mov r64, rsp` becomes `lea r64,
    // [rsp+8]`; rsp as a memory base is 8 higher.
    let rsp_operand = (0..x.op_count()).any(|i| {
        x.op_kind(i) == OpKind::Register && x.op_register(i).full_register() == Register::RSP
    });
    let implicit_rsp =
        info.used_registers().iter().any(|u| {
            u.register().full_register() == Register::RSP && u.register() != Register::RSP
        }) || (info
            .used_registers()
            .iter()
            .any(|u| u.register() == Register::RSP)
            && !rsp_base
            && !rsp_operand);
    if implicit_rsp || (rsp_operand && encode::mov_from_rsp(x).is_none()) {
        return Err(format!(
            "{}: it reads rsp in a way that cannot be re-encoded for the thunk",
            what()
        ));
    }
    Ok(())
}
