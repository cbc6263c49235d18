//! Finding RPC call sites: indirect calls whose arguments follow the
//! `invoke_fn` signature (six integer arguments: context, callee name in
//! `rsi`, input, length and two output pointers in `r8`/`r9`).

use std::collections::BTreeSet;

use iced_x86::{
    Decoder, DecoderOptions, FlowControl, Formatter, Instruction, IntelFormatter, Mnemonic, OpKind,
    Register,
};
use serde::Serialize;

use super::cfg::{FunctionCfg, Origin};
use super::retpoline::Thunks;
use crate::elf::Image;

/// The callee of an RPC site.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, serde::Deserialize)]
#[serde(tag = "kind", content = "name", rename_all = "lowercase")]
pub enum Callee {
    /// The name is a constant string in the image.
    Constant(String),
    /// The name is computed at run time.
    Dynamic,
}

impl std::fmt::Display for Callee {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Callee::Constant(n) => f.write_str(n),
            Callee::Dynamic => f.write_str("dynamic"),
        }
    }
}

/// One RPC call site.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RpcSite {
    /// Address of the call instruction.
    pub address: u64,
    /// Length of the call instruction in bytes.
    pub length: usize,
    /// The function that contains the call.
    pub function: Option<String>,
    pub callee: Callee,
    /// Address of the constant callee name, when there is one.
    pub name_address: Option<u64>,
    /// The call instruction, Intel syntax.
    pub instruction: String,
}

const ARGS: [Register; 6] = [
    Register::RDI,
    Register::RSI,
    Register::RDX,
    Register::RCX,
    Register::R8,
    Register::R9,
];

/// Longest name accepted as a function name.
const MAX_NAME: usize = 256;

/// All RPC call sites of an image, by address.
///
/// A site is an indirect call, so only functions whose bytes may hold one
/// ([`super::scan::may_call_indirectly`], which fails closed) are decoded
/// and analysed; the others cannot hold a site.
pub fn find_rpc_sites(image: &Image) -> Vec<RpcSite> {
    let regions = function_regions(image);
    // Functions are independent: analyse them on every core, in parts of
    // about equal size.
    let threads = crate::threads::worker_threads();
    let mut sites: Vec<RpcSite> = std::thread::scope(|scope| {
        let workers: Vec<_> = split_by_size(&regions, threads)
            .map(|part| scope.spawn(move || sites_in(image, part, true)))
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().expect("analysis thread"))
            .collect()
    });
    // Every code page was read once; they are read again only to copy.
    image.release_code();
    sites.sort_by_key(|s| s.address);
    sites.dedup_by_key(|s| s.address);
    sites
}

/// `regions` in at most `parts` consecutive runs of about equal bytes.
fn split_by_size<'r, 'a>(
    regions: &'r [Region<'a>],
    parts: usize,
) -> impl Iterator<Item = &'r [Region<'a>]> {
    let total: usize = regions.iter().map(|r| r.bytes.len()).sum();
    let share = total.div_ceil(parts.max(1)).max(1);
    let mut rest = regions;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let mut size = 0;
        let mut n = 0;
        while n < rest.len() && (n == 0 || size < share) {
            size += rest[n].bytes.len();
            n += 1;
        }
        let (part, tail) = rest.split_at(n);
        rest = tail;
        Some(part)
    })
}

/// Whether the code holds any indirect call, retpoline thunk calls
/// included (most functions do not, and skip the control-flow analysis).
fn has_indirect_call(code: &[u8], ip: u64, thunks: &Thunks) -> bool {
    let mut dec = Decoder::with_ip(64, code, ip, DecoderOptions::NONE);
    let mut x = Instruction::default();
    while dec.can_decode() {
        dec.decode_out(&mut x);
        match x.flow_control() {
            FlowControl::IndirectCall => return true,
            FlowControl::Call if thunks.register_of(&x).is_some() => return true,
            _ => {}
        }
    }
    false
}

/// The sites in `regions`; with `scan`, regions the byte scan rules out
/// are not decoded.
fn sites_in(image: &Image, regions: &[Region], scan: bool) -> Vec<RpcSite> {
    let mut sites = Vec::new();
    let thunks = Thunks::new(image);
    for r in regions {
        let (start, bytes) = (r.start, r.bytes);
        if (scan && !super::scan::may_call_indirectly(bytes, start, |t| thunks.is_thunk(t)))
            || !has_indirect_call(bytes, start, &thunks)
        {
            continue;
        }
        let cfg = FunctionCfg::decode(bytes, start, &|x| thunks.register_of(x));
        for (i, x) in cfg.insns.iter().enumerate() {
            if cfg.flow[i] != FlowControl::IndirectCall || calls_import(image, x) {
                continue;
            }
            if !has_invoke_arguments(&cfg, i) {
                continue;
            }
            let (callee, name_address) = callee_name(image, &cfg, i);
            if callee == Callee::Dynamic && not_invoke(&cfg, i) {
                continue;
            }
            let mut text = String::new();
            IntelFormatter::new().format(x, &mut text);
            if let Some(r) = thunks.register_of(x) {
                text = format!("{text} (retpoline: call {r:?})").to_lowercase();
            }
            sites.push(RpcSite {
                address: x.ip(),
                length: x.len(),
                function: r.name.map(str::to_string),
                callee,
                name_address,
                instruction: text,
            });
        }
    }
    sites
}

/// Code analysed as a unit: a function, or a section without function
/// symbols.
struct Region<'a> {
    start: u64,
    bytes: &'a [u8],
    name: Option<&'a str>,
}

/// The code to analyse, one region per function symbol; when the image has
/// no function symbols for some code, that code is one region per section.
fn function_regions(image: &Image) -> Vec<Region<'_>> {
    let mut out = Vec::new();
    for range in image.code_ranges() {
        let lo = range.vaddr;
        let hi = lo + range.bytes.len() as u64;
        let mut funcs: Vec<_> = image
            .info
            .functions
            .iter()
            .filter(|f| f.size > 0 && f.address >= lo && f.address + f.size <= hi)
            .collect();
        funcs.sort_by_key(|f| (f.address, std::cmp::Reverse(f.size)));
        funcs.dedup_by_key(|f| f.address);
        if funcs.is_empty() {
            out.push(Region {
                start: lo,
                bytes: range.bytes,
                name: None,
            });
            continue;
        }
        for f in funcs {
            let off = (f.address - lo) as usize;
            out.push(Region {
                start: f.address,
                bytes: &range.bytes[off..off + f.size as usize],
                name: Some(&f.name),
            });
        }
    }
    out
}

/// `call [rip+slot]` through a GOT slot bound to a symbol is a call of an
/// imported function (`-fno-plt`), never an RPC.
fn calls_import(image: &Image, x: &Instruction) -> bool {
    x.op0_kind() == OpKind::Memory
        && x.is_ip_rel_memory_operand()
        && image.got_slot_symbol(x.ip_rel_memory_address()).is_some()
}

/// Every argument register is set on every path to the call (or passed in
/// from the function's own caller), and the two output-pointer arguments
/// are set in this function after the last call before it.
fn has_invoke_arguments(cfg: &FunctionCfg, at: usize) -> bool {
    ARGS.iter().all(|&r| {
        let o = cfg.origins(r, at);
        let own = o.iter().all(|x| matches!(x, Origin::Def(_)));
        let known = o
            .iter()
            .all(|x| matches!(x, Origin::Def(_) | Origin::Entry));
        if matches!(r, Register::R8 | Register::R9) {
            own
        } else {
            known
        }
    })
}

/// Evidence that a call with a non-constant `rsi` is not of an `invoke_fn`:
/// - `rsi` is an integer (`mov esi, imm`, `xor esi, esi`), never a name
///   pointer (`_Unwind_ForcedUnwind_Phase2` calling its stop function);
/// - a virtual call: the target is read from the table the first word of
///   the object in `rdi` points to (`mov rax, [rdi]; call [rax+N]`), while
///   an `invoke_fn` is a field of the worker, with `rdi` the host context.
fn not_invoke(cfg: &FunctionCfg, at: usize) -> bool {
    let integer = |i: usize| {
        let x = &cfg.insns[i];
        let imm = x.op_count() == 2
            && x.mnemonic() == Mnemonic::Mov
            && matches!(
                x.op1_kind(),
                OpKind::Immediate8
                    | OpKind::Immediate16
                    | OpKind::Immediate32
                    | OpKind::Immediate64
                    | OpKind::Immediate8to32
                    | OpKind::Immediate8to64
                    | OpKind::Immediate32to64
            );
        let zero = x.mnemonic() == Mnemonic::Xor
            && x.op0_kind() == OpKind::Register
            && x.op1_kind() == OpKind::Register
            && x.op0_register() == x.op1_register();
        imm || zero
    };
    let rsi = cfg.origins(Register::RSI, at);
    if rsi
        .iter()
        .all(|o| matches!(o, Origin::Def(i) if integer(*i)))
    {
        return true;
    }
    // The slot: the call's memory operand, or the load of its register.
    let mut slot = (&cfg.insns[at], at);
    if slot.0.op0_kind() == OpKind::Register {
        let [Origin::Def(i)] = cfg
            .origins(slot.0.op0_register().full_register(), at)
            .into_iter()
            .collect::<Vec<_>>()[..]
        else {
            return false;
        };
        if cfg.insns[i].mnemonic() != Mnemonic::Mov || cfg.insns[i].op1_kind() != OpKind::Memory {
            return false;
        }
        slot = (&cfg.insns[i], i);
    }
    let x = slot.0;
    let mem = if slot.1 == at { 0 } else { 1 };
    if x.op_kind(mem) != OpKind::Memory
        || x.memory_index() != Register::None
        || !x.memory_base().is_gpr64()
    {
        return false;
    }
    // The table pointer: loaded from offset 0 of an object.
    let table = cfg.origins(x.memory_base(), slot.1);
    let [Origin::Def(load)] = table.iter().copied().collect::<Vec<_>>()[..] else {
        return false;
    };
    let l = &cfg.insns[load];
    if !(l.mnemonic() == Mnemonic::Mov
        && l.op1_kind() == OpKind::Memory
        && l.memory_index() == Register::None
        && l.memory_displacement64() == 0
        && l.memory_base().is_gpr64())
    {
        return false;
    }
    // ... and that object is the first argument.
    let object = value(cfg, l.memory_base(), load, 0);
    let this = value(cfg, Register::RDI, at, 0);
    object.is_some() && object == this
}

/// The value of `reg` before instruction `at`, as the register and origins
/// of its source after following register copies; `None` when unknown.
fn value(
    cfg: &FunctionCfg,
    reg: Register,
    at: usize,
    depth: u32,
) -> Option<(Register, BTreeSet<Origin>)> {
    let o = cfg.origins(reg, at);
    if o.iter()
        .any(|x| matches!(x, Origin::Unknown | Origin::Clobbered))
    {
        return None;
    }
    if let [Origin::Def(i)] = o.iter().copied().collect::<Vec<_>>()[..] {
        let x = &cfg.insns[i];
        if depth < 6
            && x.mnemonic() == Mnemonic::Mov
            && x.op0_kind() == OpKind::Register
            && x.op1_kind() == OpKind::Register
            && x.op1_register().is_gpr64()
        {
            return value(cfg, x.op1_register(), i, depth + 1);
        }
    }
    // Defining instructions name the value whatever register holds it.
    let reg = if o.contains(&Origin::Entry) {
        reg
    } else {
        Register::None
    };
    Some((reg, o))
}

/// Resolve `reg` before instruction `at` to the address of a constant, or
/// `None` if it is computed (or differs between paths).
fn constant_address(cfg: &FunctionCfg, reg: Register, at: usize, depth: u32) -> Option<u64> {
    if depth > 6 {
        return None;
    }
    let mut value = None;
    for o in cfg.origins(reg, at) {
        let Origin::Def(i) = o else { return None };
        let x = &cfg.insns[i];
        let v = match x.mnemonic() {
            Mnemonic::Lea if x.is_ip_rel_memory_operand() => Some(x.ip_rel_memory_address()),
            Mnemonic::Mov if x.op1_kind() == OpKind::Register => {
                let src = x.op1_register().full_register();
                if src.is_gpr64() && x.op0_register().is_gpr64() {
                    constant_address(cfg, src, i, depth + 1)
                } else {
                    None
                }
            }
            _ => None,
        }?;
        if value.is_some_and(|p| p != v) {
            return None;
        }
        value = Some(v);
    }
    value
}

fn callee_name(image: &Image, cfg: &FunctionCfg, at: usize) -> (Callee, Option<u64>) {
    let Some(addr) = constant_address(cfg, Register::RSI, at, 0) else {
        return (Callee::Dynamic, None);
    };
    match image.read_cstr(addr, MAX_NAME + 1) {
        Some(s) if is_function_name(s) => (
            Callee::Constant(String::from_utf8_lossy(s).into_owned()),
            Some(addr),
        ),
        _ => (Callee::Dynamic, None),
    }
}

/// Function names are short printable ASCII without spaces.
fn is_function_name(s: &[u8]) -> bool {
    !s.is_empty() && s.len() <= MAX_NAME && s.iter().all(|c| c.is_ascii_graphic())
}

/// Distinct constant callee names of a set of sites.
pub fn constant_callees<'a>(sites: impl IntoIterator<Item = &'a RpcSite>) -> BTreeSet<String> {
    sites
        .into_iter()
        .filter_map(|s| match &s.callee {
            Callee::Constant(n) => Some(n.clone()),
            Callee::Dynamic => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn libraries() -> Vec<PathBuf> {
        crate::analyze::test_libraries()
    }

    /// The byte scan only rules out functions without an indirect call:
    /// the sites are those of decoding every function, and the functions
    /// with an indirect call are all kept.
    #[test]
    fn finds_the_sites_of_decoding_every_function() {
        for path in libraries() {
            let image = Image::load(&path).unwrap();
            let regions = function_regions(&image);
            let mut every = sites_in(&image, &regions, false);
            every.sort_by_key(|s| s.address);
            every.dedup_by_key(|s| s.address);
            assert_eq!(find_rpc_sites(&image), every, "{}", path.display());
            let thunks = Thunks::new(&image);
            for r in &regions {
                if has_indirect_call(r.bytes, r.start, &thunks) {
                    assert!(
                        super::super::scan::may_call_indirectly(r.bytes, r.start, |t| thunks
                            .is_thunk(t)),
                        "{}: {:?} at {:#x}",
                        path.display(),
                        r.name,
                        r.start
                    );
                }
            }
        }
    }
}
