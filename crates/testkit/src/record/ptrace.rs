//! Records the taken branches of real executions under `ptrace`, as an LBR
//! would, and writes them as a `perf.data` file (see [`super::writer`]).
//!
//! How: the command runs as a tracee with `FAASFUSE_TRACE_STOP=1` in its
//! environment, which makes `faasfuse run` (and each `run --ipc` worker)
//! stop itself with `SIGSTOP` once its libraries are loaded and
//! initialised, before it serves anything. At that stop the recorder reads
//! `/proc/PID/maps`, writes `COMM` and one `MMAP2` (with build-id) per
//! executable file mapping, decodes the executable sections of each traced
//! image with iced-x86 from the tracee's own memory, and puts an `int3` on
//! every control-flow instruction (jumps, conditional jumps, calls,
//! returns). From then on the tracee runs at full speed until it reaches
//! one of them; the recorder then evaluates the branch (condition flags,
//! register or memory operand, return address on the stack), moves the
//! tracee to where the branch leads (pushing or popping the return address
//! as the call or return would) and records the branch when it is taken.
//! Instructions it does not emulate (`loop`, `jrcxz`, far returns, or a
//! stack write that fails) are single-stepped over instead.
//!
//! Single-stepping every instruction costs a trap per instruction, 30–100 µs
//! each on a virtual machine, and the host's own code runs thousands of
//! instructions per request; a trap per branch instruction executed in the
//! traced images keeps a fixture run of a hundred requests well under a
//! second. `--single-step` ([`RecordOptions::single_step`]) does step every
//! instruction after the stop, for a few requests: it compares each
//! instruction's successor with its fall-through address and records taken
//! branches whose source *or* target is in a traced image. On the branches
//! leaving the images both modes agree exactly (a test checks it).
//!
//! What is recorded (default mode): every taken branch whose *source* is
//! in a traced image (including calls and jumps out of it: PLT jumps into
//! libc, the indirect call of an RPC site into the host). Branches from
//! untraced code into an image (a return from libc, the host calling
//! `faas_func_call`) are not, as if the LBR filter were limited to the
//! images' code; `--single-step` records those too. Forks and threads
//! are followed; each process is armed by its own stop, so `run --ipc`
//! records every worker process.
//!
//! # Call stacks (`--call-stack`)
//!
//! With [`RecordOptions::call_stack`] the samples are what `perf record
//! --call-graph lbr` gives: each one carries the thread's open calls,
//! newest first, at most 32 (from the call instruction to the callee), as
//! an LBR in call-stack mode keeps them, instead of its latest taken
//! branches; samples still come every `--every` taken branches. A shadow
//! stack per thread follows the calls: a call pushes the call, its target
//! and the stack slot its return address went to; at every branch the
//! recorder sees, the calls whose slot lies below the stack pointer have
//! returned and are popped. The stack pointer, not the returns, closes
//! calls, so returns made in untraced code (the host returning to an RPC
//! site, libc to a PLT call), `longjmp` and unwinding close them too; a
//! tail call (a jump) opens nothing, and the function it enters returns
//! from the caller's open call, as the hardware has it. Only calls the
//! recorder sees are on the stack (from the traced images; with
//! `--single-step`, into them too), as if the LBR were limited to the
//! images' code; a thread switching to another stack is not followed.
//!
//! Limits: breakpoints are process-wide, so while one thread single-steps
//! over a non-emulated instruction another thread could pass it unseen
//! (gcc never emits those in hot code); processes with CET shadow stacks
//! enabled are not supported (emulated calls do not update them).

use std::collections::{HashMap, HashSet, VecDeque};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use anyhow::{anyhow, bail, Context, Result};
use faasfuse_core::profile::images::hex;
use iced_x86::{
    ConditionCode, Decoder, DecoderOptions, FlowControl, Instruction, Mnemonic, OpKind, Register,
};
use object::{Object, ObjectSection, SectionFlags};

use super::writer::{BranchEntry, Mapping, PerfDataWriter, MAX_BRANCHES};
use super::{BranchCount, ImageInfo, Truth, TRACE_STOP_ENV};

/// Which images' branches to record.
#[derive(Debug, Clone, Default)]
pub enum ImageFilter {
    /// Shared objects outside the system library directories (the function
    /// libraries a host loads).
    #[default]
    Default,
    /// Images whose path contains one of these strings.
    Matching(Vec<String>),
}

impl ImageFilter {
    fn wants(&self, path: &str, exe: &str) -> bool {
        match self {
            ImageFilter::Matching(subs) => subs.iter().any(|s| path.contains(s.as_str())),
            ImageFilter::Default => {
                let system = [
                    "/lib/",
                    "/lib64/",
                    "/usr/lib/",
                    "/usr/lib64/",
                    "/usr/libexec/",
                ];
                let name = path.rsplit('/').next().unwrap_or(path);
                path != exe
                    && (name.ends_with(".so") || name.contains(".so."))
                    && !system.iter().any(|d| path.starts_with(d))
            }
        }
    }
}

/// How to record.
#[derive(Debug, Clone)]
pub struct RecordOptions {
    /// Emit a sample every this many taken branches of a thread (the
    /// sample's period).
    pub every: u64,
    pub images: ImageFilter,
    /// Run the tracer and its tracees on one CPU (cross-CPU wake-ups make
    /// every trap several times slower on virtual machines).
    pub pin_cpu: bool,
    /// Single-step every instruction instead of trapping on the images'
    /// branches: also records branches from untraced code into the images
    /// (returns from libc, calls from the host), at a trap per instruction.
    pub single_step: bool,
    /// Samples carry the open calls (LBR call stacks), not the latest
    /// taken branches (see the module docs).
    pub call_stack: bool,
}

impl Default for RecordOptions {
    fn default() -> Self {
        RecordOptions {
            every: 1,
            images: ImageFilter::Default,
            pin_cpu: true,
            single_step: false,
            call_stack: false,
        }
    }
}

/// A control-flow instruction the recorder placed an `int3` on.
#[derive(Clone)]
struct Site {
    insn: Instruction,
    /// The original first byte.
    byte: u8,
}

struct Proc {
    mem: File,
    armed: bool,
    /// Single-step mode: traced images' address ranges, decoded instructions.
    ranges: Vec<(u64, u64)>,
    decoded: HashMap<u64, Instruction>,
    sites: Arc<HashMap<u64, Site>>,
    comm: String,
}

/// A call that has not returned yet (call-stack mode).
#[derive(Debug, Clone, Copy)]
struct OpenCall {
    from: u64,
    to: u64,
    /// Where its return address is on the stack: open while the stack
    /// pointer is at or below it.
    slot: u64,
}

/// Most open calls kept per thread (the deepest are the newest; samples
/// carry the newest [`MAX_BRANCHES`]).
const MAX_OPEN_CALLS: usize = 1 << 16;

struct Thread {
    tgid: u32,
    /// Newest first.
    ring: VecDeque<BranchEntry>,
    /// Call-stack mode: open calls, oldest first.
    calls: Vec<OpenCall>,
    /// Where the thread is after its latest recorded branch.
    ip: u64,
    /// Taken branches since the last sample.
    pending: u64,
    /// Single-stepping over the site at this address.
    stepping: Option<u64>,
    /// Single-step mode: the thread is stepped; where it was before.
    step_all: bool,
    last_ip: Option<u64>,
    /// Predictor state: 2-bit counters of conditional branches, last
    /// targets of indirect ones, a return stack.
    counters: HashMap<u64, u8>,
    last_target: HashMap<u64, u64>,
    returns: Vec<u64>,
    /// Seen a stop of this thread (it runs under our control).
    known: bool,
}

impl Thread {
    fn new(tgid: u32) -> Thread {
        Thread {
            tgid,
            ring: VecDeque::with_capacity(MAX_BRANCHES),
            calls: Vec::new(),
            ip: 0,
            pending: 0,
            stepping: None,
            step_all: false,
            last_ip: None,
            counters: HashMap::new(),
            last_target: HashMap::new(),
            returns: Vec::new(),
            known: false,
        }
    }

    /// Would a simple predictor have mispredicted this branch?
    fn mispredicted(&mut self, insn: &Instruction, taken: bool, target: u64) -> bool {
        let at = insn.ip();
        match insn.flow_control() {
            FlowControl::ConditionalBranch => {
                let c = self.counters.entry(at).or_insert(1);
                let predicted = *c >= 2;
                *c = if taken {
                    (*c + 1).min(3)
                } else {
                    c.saturating_sub(1)
                };
                predicted != taken
            }
            FlowControl::IndirectBranch | FlowControl::IndirectCall => {
                if insn.flow_control() == FlowControl::IndirectCall {
                    self.push_return(insn.next_ip());
                }
                self.last_target.insert(at, target) != Some(target)
            }
            FlowControl::Call => {
                self.push_return(insn.next_ip());
                false
            }
            // A return whose call was not seen (made from untraced code)
            // counts as predicted, as the hardware's return stack has it.
            FlowControl::Return => self.returns.pop().is_some_and(|t| t != target),
            _ => false,
        }
    }

    /// Call-stack mode: the thread took `insn` to `target` and its stack
    /// pointer is now `sp`: close the calls that returned, open a call.
    fn follow_calls(&mut self, insn: &Instruction, target: u64, sp: u64) {
        let call = matches!(
            insn.flow_control(),
            FlowControl::Call | FlowControl::IndirectCall
        );
        // Closed before the branch: a call's stack pointer was 8 higher
        // (its return address may go where a returned call's was).
        let live = if call { sp.wrapping_add(8) } else { sp };
        while self.calls.last().is_some_and(|c| c.slot < live) {
            self.calls.pop();
        }
        if call {
            if self.calls.len() == MAX_OPEN_CALLS {
                self.calls.remove(0);
            }
            self.calls.push(OpenCall {
                from: insn.ip(),
                to: target,
                slot: sp,
            });
        }
    }

    fn push_return(&mut self, ip: u64) {
        if self.returns.len() == 16 {
            self.returns.remove(0);
        }
        self.returns.push(ip);
    }
}

/// The recorder's state across all tracees.
struct Recorder<'w> {
    opts: RecordOptions,
    writer: &'w mut PerfDataWriter<std::io::BufWriter<File>>,
    procs: HashMap<u32, Proc>,
    threads: HashMap<u32, Thread>,
    truth: HashMap<(u32, u64, u64), (u64, u64)>,
    images: Vec<ImageInfo>,
    build_ids: HashMap<String, Vec<u8>>,
    /// The commands' own pids (their exit ends the recording once every
    /// other tracee is gone too).
    roots: HashSet<u32>,
    failures: Vec<String>,
    taken: u64,
}

const PTRACE_OPTIONS: libc::c_int = libc::PTRACE_O_TRACECLONE
    | libc::PTRACE_O_TRACEFORK
    | libc::PTRACE_O_TRACEVFORK
    | libc::PTRACE_O_TRACEEXEC
    | libc::PTRACE_O_EXITKILL;

fn now_ns() -> u64 {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid pointer to a timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut t) };
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
}

fn ptrace(req: libc::c_uint, tid: u32, addr: usize, data: usize) -> std::io::Result<libc::c_long> {
    // SAFETY: plain ptrace requests on a tracee; pointers passed in `data`
    // are valid for the request (callers pass user_regs_struct or siginfo).
    let r = unsafe {
        libc::ptrace(
            req,
            tid as libc::pid_t,
            addr as *mut libc::c_void,
            data as *mut libc::c_void,
        )
    };
    if r == -1 {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() != Some(0) {
            return Err(e);
        }
    }
    Ok(r)
}

fn get_regs(tid: u32) -> std::io::Result<libc::user_regs_struct> {
    // SAFETY: user_regs_struct is plain old data.
    let mut r: libc::user_regs_struct = unsafe { std::mem::zeroed() };
    ptrace(libc::PTRACE_GETREGS, tid, 0, &mut r as *mut _ as usize)?;
    Ok(r)
}

fn set_regs(tid: u32, r: &libc::user_regs_struct) -> std::io::Result<()> {
    ptrace(libc::PTRACE_SETREGS, tid, 0, r as *const _ as usize).map(|_| ())
}

fn cont(tid: u32, sig: i32) {
    // A tracee that vanished (killed) is reaped by waitpid later.
    let _ = ptrace(libc::PTRACE_CONT, tid, 0, sig as usize);
}

fn tgid_of(tid: u32) -> Option<u32> {
    let s = std::fs::read_to_string(format!("/proc/{tid}/status")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix("Tgid:"))
        .and_then(|v| v.trim().parse().ok())
}

fn reg_value(r: &libc::user_regs_struct, reg: Register) -> Option<u64> {
    Some(match reg.full_register() {
        Register::RAX => r.rax,
        Register::RBX => r.rbx,
        Register::RCX => r.rcx,
        Register::RDX => r.rdx,
        Register::RSI => r.rsi,
        Register::RDI => r.rdi,
        Register::RBP => r.rbp,
        Register::RSP => r.rsp,
        Register::R8 => r.r8,
        Register::R9 => r.r9,
        Register::R10 => r.r10,
        Register::R11 => r.r11,
        Register::R12 => r.r12,
        Register::R13 => r.r13,
        Register::R14 => r.r14,
        Register::R15 => r.r15,
        Register::RIP => r.rip,
        Register::ES | Register::CS | Register::SS | Register::DS => 0,
        Register::FS => r.fs_base,
        Register::GS => r.gs_base,
        _ => return None,
    })
    .map(|v| match reg.size() {
        4 => v & 0xffff_ffff,
        2 => v & 0xffff,
        _ => v,
    })
}

fn condition(cc: ConditionCode, flags: u64) -> Option<bool> {
    let cf = flags & 1 != 0;
    let pf = flags & (1 << 2) != 0;
    let zf = flags & (1 << 6) != 0;
    let sf = flags & (1 << 7) != 0;
    let of = flags & (1 << 11) != 0;
    Some(match cc {
        ConditionCode::o => of,
        ConditionCode::no => !of,
        ConditionCode::b => cf,
        ConditionCode::ae => !cf,
        ConditionCode::e => zf,
        ConditionCode::ne => !zf,
        ConditionCode::be => cf || zf,
        ConditionCode::a => !cf && !zf,
        ConditionCode::s => sf,
        ConditionCode::ns => !sf,
        ConditionCode::p => pf,
        ConditionCode::np => !pf,
        ConditionCode::l => sf != of,
        ConditionCode::ge => sf == of,
        ConditionCode::le => zf || sf != of,
        ConditionCode::g => !zf && sf == of,
        ConditionCode::None => return None,
    })
}

fn read_u64(mem: &File, addr: u64) -> Option<u64> {
    let mut b = [0u8; 8];
    mem.read_exact_at(&mut b, addr).ok()?;
    Some(u64::from_le_bytes(b))
}

/// Where the branch `insn` goes from the state `r`; updates `r` (rip, and
/// rsp plus the stack for calls and returns). None: not emulated.
fn emulate(insn: &Instruction, r: &mut libc::user_regs_struct, mem: &File) -> Option<u64> {
    let operand = |r: &libc::user_regs_struct| -> Option<u64> {
        match insn.op0_kind() {
            OpKind::NearBranch64 => Some(insn.near_branch64()),
            OpKind::Register => reg_value(r, insn.op0_register()),
            OpKind::Memory => {
                let va = insn.virtual_address(0, 0, |reg, _, _| reg_value(r, reg))?;
                read_u64(mem, va)
            }
            _ => None,
        }
    };
    let target = match insn.flow_control() {
        FlowControl::ConditionalBranch => {
            if !insn.is_jcc_short_or_near() {
                return None;
            }
            if condition(insn.condition_code(), r.eflags)? {
                insn.near_branch64()
            } else {
                insn.next_ip()
            }
        }
        FlowControl::UnconditionalBranch | FlowControl::IndirectBranch => {
            if insn.mnemonic() != Mnemonic::Jmp {
                return None;
            }
            operand(r)?
        }
        FlowControl::Call | FlowControl::IndirectCall => {
            if insn.mnemonic() != Mnemonic::Call {
                return None;
            }
            let t = operand(r)?;
            let sp = r.rsp.wrapping_sub(8);
            mem.write_all_at(&insn.next_ip().to_le_bytes(), sp).ok()?;
            r.rsp = sp;
            t
        }
        FlowControl::Return => {
            if insn.mnemonic() != Mnemonic::Ret {
                return None;
            }
            let t = read_u64(mem, r.rsp)?;
            let extra = if insn.op_count() == 1 {
                u64::from(insn.immediate16())
            } else {
                0
            };
            r.rsp = r.rsp.wrapping_add(8 + extra);
            t
        }
        _ => return None,
    };
    r.rip = target;
    Some(target)
}

/// The GNU build-id of an ELF file, if it has one.
pub fn build_id_of(path: &Path) -> Option<Vec<u8>> {
    let data = std::fs::read(path).ok()?;
    let file = object::File::parse(&*data).ok()?;
    file.build_id().ok()?.map(|b| b.to_vec())
}

/// One line of /proc/PID/maps that maps a file executable.
struct MapLine {
    start: u64,
    end: u64,
    pgoff: u64,
    path: String,
}

fn exec_maps(pid: u32) -> Result<Vec<MapLine>> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/maps"))
        .with_context(|| format!("reading /proc/{pid}/maps"))?;
    let mut out = Vec::new();
    for line in text.lines() {
        let mut f = line.split_whitespace();
        let (Some(range), Some(perms), Some(off)) = (f.next(), f.next(), f.next()) else {
            continue;
        };
        let path: String = f.skip(2).collect::<Vec<_>>().join(" ");
        if !perms.contains('x') || !path.starts_with('/') || path.ends_with(" (deleted)") {
            continue;
        }
        let Some((a, b)) = range.split_once('-') else {
            continue;
        };
        out.push(MapLine {
            start: u64::from_str_radix(a, 16)?,
            end: u64::from_str_radix(b, 16)?,
            pgoff: u64::from_str_radix(off, 16)?,
            path,
        });
    }
    Ok(out)
}

/// ELF virtual address of file offset `off` (through the PT_LOAD holding it).
fn vaddr_of_offset(file: &object::File, off: u64) -> Option<u64> {
    use object::read::elf::ProgramHeader;
    let object::File::Elf64(elf) = file else {
        return None;
    };
    let e = elf.endian();
    elf.elf_program_headers().iter().find_map(|ph| {
        let (o, s, v) = (ph.p_offset(e), ph.p_filesz(e), ph.p_vaddr(e));
        (ph.p_type(e) == object::elf::PT_LOAD && off >= o && off < o + s).then(|| v + (off - o))
    })
}

impl Recorder<'_> {
    fn build_id(&mut self, path: &str) -> Vec<u8> {
        self.build_ids
            .entry(path.to_string())
            .or_insert_with(|| build_id_of(Path::new(path)).unwrap_or_default())
            .clone()
    }

    fn thread(&mut self, tid: u32) -> &mut Thread {
        self.threads
            .entry(tid)
            .or_insert_with(|| Thread::new(tgid_of(tid).unwrap_or(tid)))
    }

    fn proc_mem(&mut self, tgid: u32) -> Result<&mut Proc> {
        use std::collections::hash_map::Entry;
        match self.procs.entry(tgid) {
            Entry::Occupied(e) => Ok(e.into_mut()),
            Entry::Vacant(v) => {
                let mem = std::fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open(format!("/proc/{tgid}/mem"))
                    .with_context(|| format!("opening /proc/{tgid}/mem"))?;
                Ok(v.insert(Proc {
                    mem,
                    armed: false,
                    ranges: Vec::new(),
                    decoded: HashMap::new(),
                    sites: Arc::new(HashMap::new()),
                    comm: String::new(),
                }))
            }
        }
    }

    /// The process stopped itself before serving: map its images, place
    /// breakpoints on every control-flow instruction of the traced ones.
    fn arm(&mut self, tgid: u32) -> Result<()> {
        let maps = exec_maps(tgid)?;
        let exe = std::fs::read_link(format!("/proc/{tgid}/exe"))
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default();
        let comm = std::fs::read_to_string(format!("/proc/{tgid}/comm"))
            .map(|s| s.trim_end().to_string())
            .unwrap_or_default();
        let time = now_ns();
        self.writer.comm(tgid, tgid, &comm, time)?;
        let mut sites = HashMap::new();
        let mut ranges = Vec::new();
        let mut patches: Vec<(u64, Vec<u8>)> = Vec::new();
        for m in &maps {
            let build_id = self.build_id(&m.path);
            self.writer.mmap2(
                tgid,
                tgid,
                &Mapping {
                    start: m.start,
                    len: m.end - m.start,
                    pgoff: m.pgoff,
                    path: m.path.clone(),
                    build_id: build_id.clone(),
                },
                time,
            )?;
            let traced = self.opts.images.wants(&m.path, &exe);
            let data = std::fs::read(&m.path).unwrap_or_default();
            let file = object::File::parse(&*data).ok();
            let vaddr = file
                .as_ref()
                .and_then(|f| vaddr_of_offset(f, m.pgoff))
                .unwrap_or(m.pgoff);
            self.images.push(ImageInfo {
                pid: tgid,
                path: m.path.clone(),
                build_id: hex(&build_id),
                start: m.start,
                end: m.end,
                pgoff: m.pgoff,
                vaddr,
                traced,
            });
            if !traced {
                continue;
            }
            if self.opts.single_step {
                ranges.push((m.start, m.end));
                continue;
            }
            let file = file.ok_or_else(|| anyhow!("{}: not an ELF file", m.path))?;
            let mem = &self.proc_mem(tgid)?.mem;
            for sec in file.sections() {
                let SectionFlags::Elf { sh_flags } = sec.flags() else {
                    continue;
                };
                if sh_flags & u64::from(object::elf::SHF_EXECINSTR) == 0 {
                    continue;
                }
                let Some((off, size)) = sec.file_range() else {
                    continue;
                };
                if off < m.pgoff || off + size > m.pgoff + (m.end - m.start) {
                    continue;
                }
                let at = m.start + (off - m.pgoff);
                // Decode what the process really has in memory.
                let mut code = vec![0u8; size as usize];
                mem.read_exact_at(&mut code, at)
                    .with_context(|| format!("reading {} in process {tgid}", m.path))?;
                let mut patched = code.clone();
                let mut dec = Decoder::with_ip(64, &code, at, DecoderOptions::NONE);
                let mut insn = Instruction::default();
                while dec.can_decode() {
                    dec.decode_out(&mut insn);
                    if insn.is_invalid() {
                        continue;
                    }
                    if is_branch(&insn) {
                        let i = (insn.ip() - at) as usize;
                        sites.insert(
                            insn.ip(),
                            Site {
                                insn,
                                byte: code[i],
                            },
                        );
                        patched[i] = 0xcc;
                    }
                }
                patches.push((at, patched));
            }
        }
        let p = self.proc_mem(tgid)?;
        for (at, bytes) in &patches {
            p.mem
                .write_all_at(bytes, *at)
                .with_context(|| format!("placing breakpoints in process {tgid}"))?;
        }
        p.armed = true;
        p.sites = Arc::new(sites);
        p.ranges = ranges;
        p.comm = comm;
        Ok(())
    }

    /// Record one taken branch of thread `tid`, after which its stack
    /// pointer is `sp`.
    fn record(&mut self, tid: u32, insn: &Instruction, target: u64, sp: u64) -> Result<()> {
        let every = self.opts.every;
        let call_stack = self.opts.call_stack;
        let t = self.thread(tid);
        let tgid = t.tgid;
        if call_stack {
            t.follow_calls(insn, target, sp);
        }
        t.ip = target;
        let mispred = t.mispredicted(insn, true, target);
        if t.ring.len() == MAX_BRANCHES {
            t.ring.pop_back();
        }
        t.ring.push_front(BranchEntry {
            from: insn.ip(),
            to: target,
            mispred,
            cycles: 0,
        });
        t.pending += 1;
        let e = self.truth.entry((tgid, insn.ip(), target)).or_default();
        e.0 += 1;
        e.1 += u64::from(mispred);
        self.taken += 1;
        if self.threads[&tid].pending >= every {
            self.flush(tid)?;
        }
        Ok(())
    }

    /// Write a sample for the branches of `tid` not yet in one.
    fn flush(&mut self, tid: u32) -> Result<()> {
        let Some(t) = self.threads.get_mut(&tid) else {
            return Ok(());
        };
        if t.pending == 0 {
            return Ok(());
        }
        if self.opts.call_stack {
            // A sample every `every` branches; what is left at the end
            // is not sampled (nor would it be by a period).
            if t.pending < self.opts.every {
                t.pending = 0;
                return Ok(());
            }
            let stack: Vec<BranchEntry> = t
                .calls
                .iter()
                .rev()
                .take(MAX_BRANCHES)
                .map(|c| BranchEntry {
                    from: c.from,
                    to: c.to,
                    mispred: false,
                    cycles: 0,
                })
                .collect();
            let (period, tgid, ip) = (t.pending, t.tgid, t.ip);
            t.pending = 0;
            self.writer
                .sample(tgid, tid, ip, now_ns(), period, &stack)?;
            return Ok(());
        }
        let n = (t.pending as usize).min(MAX_BRANCHES);
        // A regular sample carries the whole (up to 32-deep) stack; the last
        // one of a thread only the branches no sample carried yet.
        let depth = if t.pending >= self.opts.every {
            t.ring.len()
        } else {
            n
        };
        let stack: Vec<BranchEntry> = t.ring.iter().take(depth).copied().collect();
        let period = t.pending;
        t.pending = 0;
        let (tgid, ip) = (t.tgid, stack[0].to);
        self.writer
            .sample(tgid, tid, ip, now_ns(), period, &stack)?;
        Ok(())
    }

    /// A thread stopped at an `int3` we placed (rip = site + 1).
    fn on_site(&mut self, tid: u32, tgid: u32, mut regs: libc::user_regs_struct) -> Result<bool> {
        let at = regs.rip - 1;
        let Some(p) = self.procs.get(&tgid) else {
            return Ok(false);
        };
        if !p.armed {
            return Ok(false);
        }
        let Some(site) = p.sites.get(&at).cloned() else {
            return Ok(false);
        };
        regs.rip = at;
        match emulate(&site.insn, &mut regs, &p.mem) {
            Some(target) => {
                set_regs(tid, &regs)?;
                if target != site.insn.next_ip() {
                    self.record(tid, &site.insn, target, regs.rsp)?;
                } else {
                    // Not taken: the predictor still learns.
                    self.thread(tid).mispredicted(&site.insn, false, target);
                }
                cont(tid, 0);
            }
            None => {
                // Step over the original instruction.
                p.mem.write_all_at(&[site.byte], at)?;
                set_regs(tid, &regs)?;
                self.thread(tid).stepping = Some(at);
                ptrace(libc::PTRACE_SINGLESTEP, tid, 0, 0)?;
            }
        }
        Ok(true)
    }

    /// A single step over the site at `at` finished.
    fn on_stepped(&mut self, tid: u32, tgid: u32, at: u64) -> Result<()> {
        let regs = get_regs(tid)?;
        let p = self
            .procs
            .get(&tgid)
            .ok_or_else(|| anyhow!("lost process {tgid}"))?;
        p.mem.write_all_at(&[0xcc], at)?;
        let site = p.sites.get(&at).cloned().expect("stepped over a site");
        if regs.rip != site.insn.next_ip() {
            self.record(tid, &site.insn, regs.rip, regs.rsp)?;
        }
        cont(tid, 0);
        Ok(())
    }

    /// Resume `tid`: single-step it in single-step mode, else let it run.
    fn resume(&mut self, tid: u32, sig: i32) {
        let armed = |r: &Self, tgid: u32| r.procs.get(&tgid).is_some_and(|p| p.armed);
        let t = self.thread(tid);
        let (tgid, step_all) = (t.tgid, t.step_all);
        let step = self.opts.single_step && (step_all || armed(self, tgid));
        if step {
            self.thread(tid).step_all = true;
            let _ = ptrace(libc::PTRACE_SINGLESTEP, tid, 0, sig as usize);
        } else {
            cont(tid, sig);
        }
    }

    /// Single-step mode: `tid` executed one instruction.
    fn on_step(&mut self, tid: u32, tgid: u32) -> Result<()> {
        let regs = get_regs(tid)?;
        let prev = self.thread(tid).last_ip.replace(regs.rip);
        let Some(prev) = prev else {
            return Ok(());
        };
        let Some(p) = self.procs.get_mut(&tgid) else {
            return Ok(());
        };
        let inside = |a: u64| p.ranges.iter().any(|&(s, e)| a >= s && a < e);
        if !inside(prev) && !inside(regs.rip) {
            return Ok(());
        }
        let insn = match p.decoded.get(&prev) {
            Some(i) => *i,
            None => {
                let mut code = [0u8; 15];
                let n = p.mem.read_at(&mut code, prev).unwrap_or(0);
                let mut dec = Decoder::with_ip(64, &code[..n], prev, DecoderOptions::NONE);
                let i = dec.decode();
                p.decoded.insert(prev, i);
                i
            }
        };
        if is_branch(&insn) {
            if regs.rip != insn.next_ip() {
                self.record(tid, &insn, regs.rip, regs.rsp)?;
            } else {
                self.thread(tid).mispredicted(&insn, false, regs.rip);
            }
        }
        Ok(())
    }

    /// A new process forked from `parent`: it inherited the parent's
    /// breakpoints (unless it was a vfork sharing its memory).
    fn on_fork(&mut self, parent: u32, child: u32, vfork: bool) -> Result<()> {
        let Some(pp) = self.procs.get(&parent) else {
            return Ok(());
        };
        if !pp.armed || vfork {
            return Ok(());
        }
        let sites = pp.sites.clone();
        let ranges = pp.ranges.clone();
        let comm = pp.comm.clone();
        let maps: Vec<ImageInfo> = self
            .images
            .iter()
            .filter(|i| i.pid == parent)
            .cloned()
            .collect();
        let time = now_ns();
        self.writer.comm(child, child, &comm, time)?;
        for mut i in maps {
            let build_id = self.build_id(&i.path);
            self.writer.mmap2(
                child,
                child,
                &Mapping {
                    start: i.start,
                    len: i.end - i.start,
                    pgoff: i.pgoff,
                    path: i.path.clone(),
                    build_id,
                },
                time,
            )?;
            i.pid = child;
            self.images.push(i);
        }
        let p = self.proc_mem(child)?;
        p.armed = true;
        p.sites = sites;
        p.ranges = ranges;
        p.comm = comm;
        self.thread(child).tgid = child;
        Ok(())
    }

    fn run(&mut self) -> Result<()> {
        loop {
            let mut status = 0;
            // SAFETY: waiting for any traced child.
            let tid = unsafe { libc::waitpid(-1, &mut status, libc::__WALL) };
            if tid < 0 {
                let e = std::io::Error::last_os_error();
                if e.raw_os_error() == Some(libc::ECHILD) {
                    return Ok(());
                }
                if e.raw_os_error() == Some(libc::EINTR) {
                    continue;
                }
                return Err(e).context("waitpid");
            }
            let tid = tid as u32;
            if libc::WIFEXITED(status) || libc::WIFSIGNALED(status) {
                self.on_exit(tid, status)?;
                continue;
            }
            if !libc::WIFSTOPPED(status) {
                continue;
            }
            let sig = libc::WSTOPSIG(status);
            let event = (status >> 16) & 0xff;
            let first = !self.thread(tid).known;
            self.thread(tid).known = true;
            if first {
                // Options are inherited by auto-attached tracees; set them
                // on the commands themselves at their first stop.
                let _ = ptrace(libc::PTRACE_SETOPTIONS, tid, 0, PTRACE_OPTIONS as usize);
            }
            let tgid = self.thread(tid).tgid;
            match sig {
                libc::SIGTRAP if event != 0 => self.on_event(tid, tgid, event)?,
                libc::SIGTRAP => self.on_trap(tid, tgid, first)?,
                libc::SIGSTOP => self.on_stop(tid, tgid)?,
                _ => self.resume(tid, sig),
            }
        }
    }

    /// A thread ended: write what it recorded; a command that failed is
    /// a failure.
    fn on_exit(&mut self, tid: u32, status: i32) -> Result<()> {
        self.flush(tid)?;
        self.threads.remove(&tid);
        if self.procs.contains_key(&tid) {
            self.procs.remove(&tid);
        }
        if self.roots.contains(&tid) && libc::WIFSIGNALED(status) {
            self.failures.push(format!(
                "process {tid} killed by signal {}",
                libc::WTERMSIG(status)
            ));
        } else if self.roots.contains(&tid) && libc::WEXITSTATUS(status) != 0 {
            self.failures.push(format!(
                "process {tid} exited with {}",
                libc::WEXITSTATUS(status)
            ));
        }
        Ok(())
    }

    /// A ptrace event stop: a fork, a clone or an exec.
    fn on_event(&mut self, tid: u32, tgid: u32, event: i32) -> Result<()> {
        let mut msg: libc::c_ulong = 0;
        let _ = ptrace(
            libc::PTRACE_GETEVENTMSG,
            tid,
            0,
            &mut msg as *mut _ as usize,
        );
        let new = msg as u32;
        match event {
            libc::PTRACE_EVENT_FORK | libc::PTRACE_EVENT_VFORK => {
                self.threads
                    .entry(new)
                    .or_insert_with(|| Thread::new(new))
                    .tgid = new;
                self.on_fork(tgid, new, event == libc::PTRACE_EVENT_VFORK)?;
            }
            libc::PTRACE_EVENT_CLONE => {
                self.threads
                    .entry(new)
                    .or_insert_with(|| Thread::new(tgid))
                    .tgid = tgid;
            }
            libc::PTRACE_EVENT_EXEC => {
                // A new program: no breakpoints, a new memory.
                self.procs.remove(&tgid);
                for t in self.threads.values_mut() {
                    if t.tgid == tgid {
                        t.stepping = None;
                    }
                }
            }
            _ => {}
        }
        self.resume(tid, 0);
        Ok(())
    }

    /// A `SIGTRAP`: a single step done, a breakpoint at a site, or a trap
    /// that is not ours (`first`: the thread's first stop).
    fn on_trap(&mut self, tid: u32, tgid: u32, first: bool) -> Result<()> {
        if let Some(at) = self.thread(tid).stepping.take() {
            return self.on_stepped(tid, tgid, at);
        }
        if self.thread(tid).step_all {
            self.on_step(tid, tgid)?;
            self.resume(tid, 0);
            return Ok(());
        }
        let Ok(regs) = get_regs(tid) else {
            return Ok(());
        };
        if self.on_site(tid, tgid, regs)? {
            return Ok(());
        }
        // The first exec stop of a command (PTRACE_TRACEME), or a
        // trap of the program's own.
        if first {
            self.resume(tid, 0);
        } else {
            self.resume(tid, libc::SIGTRAP);
        }
        Ok(())
    }

    /// A `SIGSTOP`: the hook asking to arm its process, or the stop of a
    /// new tracee.
    fn on_stop(&mut self, tid: u32, tgid: u32) -> Result<()> {
        // SAFETY: siginfo_t is plain old data.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        let hook = ptrace(libc::PTRACE_GETSIGINFO, tid, 0, &mut info as *mut _ as usize)
            .is_ok()
            && info.si_code == libc::SI_TKILL
            // SAFETY: si_pid is valid for SI_TKILL.
            && unsafe { info.si_pid() } as u32 == tgid;
        if hook && !self.procs.get(&tgid).is_some_and(|p| p.armed) {
            self.arm(tgid)
                .with_context(|| format!("arming process {tgid}"))?;
        }
        // Our stop (or the stop of a new tracee): swallow it.
        self.resume(tid, 0);
        Ok(())
    }
}

/// Run `commands` (each program and arguments) at once under the recorder,
/// writing every taken branch of their traced images to `writer`; returns
/// the ground truth.
pub fn record(
    commands: &[Vec<String>],
    opts: &RecordOptions,
    writer: &mut PerfDataWriter<std::io::BufWriter<File>>,
) -> Result<Truth> {
    if opts.every == 0 {
        bail!("--every must be at least 1");
    }
    if opts.pin_cpu {
        // SAFETY: sched_getcpu/sched_setaffinity on this process.
        unsafe {
            let cpu = libc::sched_getcpu().max(0) as usize;
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET(cpu, &mut set);
            libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
        }
    }
    let mut rec = Recorder {
        opts: opts.clone(),
        writer,
        procs: HashMap::new(),
        threads: HashMap::new(),
        truth: HashMap::new(),
        images: Vec::new(),
        build_ids: HashMap::new(),
        roots: HashSet::new(),
        failures: Vec::new(),
        taken: 0,
    };
    for c in commands {
        let Some((prog, args)) = c.split_first() else {
            bail!("empty command");
        };
        let mut cmd = Command::new(prog);
        cmd.args(args).env(TRACE_STOP_ENV, "1");
        // SAFETY: ptrace(TRACEME) is async-signal-safe.
        unsafe {
            cmd.pre_exec(|| {
                if libc::ptrace(libc::PTRACE_TRACEME, 0, 0, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("cannot run {}", PathBuf::from(prog).display()))?;
        let pid = child.id();
        // The Child handle is not waited on: waitpid(-1) reaps it.
        std::mem::forget(child);
        rec.roots.insert(pid);
        rec.threads.insert(pid, Thread::new(pid));
    }
    let result = rec.run();
    for tid in rec.threads.keys().copied().collect::<Vec<_>>() {
        rec.flush(tid)?;
    }
    result?;
    if !rec.failures.is_empty() {
        bail!("traced command failed: {}", rec.failures.join("; "));
    }
    let branches = BranchCount::sorted(&rec.truth);
    Ok(Truth {
        every: opts.every,
        taken_branches: rec.taken,
        samples: rec.writer.samples(),
        images: rec.images,
        branches,
    })
}

/// Whether `insn` transfers control (what LBR records when taken).
fn is_branch(insn: &iced_x86::Instruction) -> bool {
    matches!(
        insn.flow_control(),
        FlowControl::UnconditionalBranch
            | FlowControl::IndirectBranch
            | FlowControl::ConditionalBranch
            | FlowControl::Return
            | FlowControl::Call
            | FlowControl::IndirectCall
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The instruction `bytes` at `ip`.
    fn insn(ip: u64, bytes: &[u8]) -> Instruction {
        Decoder::with_ip(64, bytes, ip, DecoderOptions::NONE).decode()
    }

    fn open(t: &Thread) -> Vec<(u64, u64)> {
        t.calls.iter().rev().map(|c| (c.from, c.to)).collect()
    }

    const CALL: [u8; 5] = [0xe8, 0, 0, 0, 0];
    const JMP: [u8; 5] = [0xe9, 0, 0, 0, 0];
    const RET: [u8; 1] = [0xc3];

    #[test]
    fn the_shadow_stack_follows_calls_by_the_stack_pointer() {
        let mut t = Thread::new(1);
        // f calls g (return address at 0x7f00), g calls the host through
        // an RPC site (at 0x7ef0); newest first.
        t.follow_calls(&insn(0x1000, &CALL), 0x2000, 0x7f00);
        t.follow_calls(&insn(0x2010, &[0xff, 0xd0]), 0x9000, 0x7ef0);
        assert_eq!(open(&t), [(0x2010, 0x9000), (0x1000, 0x2000)]);
        // The host returns to g unseen; g's next branch closes the RPC
        // call, and a call g makes next reuses its slot.
        t.follow_calls(&insn(0x2020, &CALL), 0x3000, 0x7ef0);
        assert_eq!(open(&t), [(0x2020, 0x3000), (0x1000, 0x2000)]);
        // A tail call from there (a jump) opens nothing; the function it
        // enters returns from the call to 0x3000.
        t.follow_calls(&insn(0x3008, &JMP), 0x4000, 0x7ef0);
        assert_eq!(open(&t), [(0x2020, 0x3000), (0x1000, 0x2000)]);
        t.follow_calls(&insn(0x4010, &RET), 0x2025, 0x7ef8);
        assert_eq!(open(&t), [(0x1000, 0x2000)]);
        // A jump within g, deeper in its frame: still open.
        t.follow_calls(&insn(0x2030, &JMP), 0x2040, 0x7ee0);
        assert_eq!(open(&t), [(0x1000, 0x2000)]);
        // longjmp back above f's frame: every call is closed.
        t.follow_calls(&insn(0x5000, &[0xff, 0xe2]), 0x1100, 0x7f40);
        assert!(open(&t).is_empty());
    }
}
