//! Unwinding `--call-graph dwarf` samples: each sample carries the user
//! registers and a copy of the stack from the stack pointer up; `framehop`
//! walks it with each mapped image's `.eh_frame` to recover the return
//! addresses. Images outside `--lib` (libc, the host) are read from their
//! mapped paths when present, since frames pass through them.

use std::collections::HashMap;
use std::ops::{Deref, Range};
use std::sync::Arc;

use framehop::x86_64::{CacheX86_64, UnwindRegsX86_64, UnwinderX86_64};
use framehop::{ExplicitModuleSectionInfo, FrameAddress, Module, Unwinder};
use object::read::elf::ElfFile64;
use object::{LittleEndian as LE, Object, ObjectSection};

use super::images::{vaddr_of_mapping, Lib};
use super::perfdata::{Mmap, Sample};
use crate::elf::{load_segments, FileBytes, Segment};

/// perf's x86 user register numbers.
const REG_BP: u32 = 6;
const REG_SP: u32 = 7;
const REG_IP: u32 = 8;
/// Deepest stack walked.
const MAX_FRAMES: usize = 256;
/// Larger files are not read for unwinding.
const MAX_DSO_BYTES: u64 = 1 << 30;

/// A section of a shared file image.
#[derive(Clone, Default)]
pub struct Bytes(Arc<FileBytes>, Range<usize>);

impl Deref for Bytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.0[self.1.clone()]
    }
}

/// An ELF file's unwind data, loaded once and shared by every process
/// mapping it.
struct Unwindable {
    data: Arc<FileBytes>,
    loads: Vec<Segment>,
    sections: HashMap<&'static str, (u64, Range<usize>)>,
}

impl Unwindable {
    fn parse(data: Arc<FileBytes>) -> Option<Unwindable> {
        let file = ElfFile64::<LE>::parse(&data[..]).ok()?;
        let loads = load_segments(&file);
        let mut sections = HashMap::new();
        for name in [".text", ".eh_frame", ".eh_frame_hdr", ".got"] {
            if let Some(s) = file.section_by_name(name) {
                if let Some((off, size)) = s.file_range() {
                    let (off, size) = (off as usize, size as usize);
                    if off.checked_add(size).is_some_and(|e| e <= data.len()) {
                        sections.insert(name, (s.address(), off..off + size));
                    }
                }
            }
        }
        sections.contains_key(".eh_frame").then_some(Unwindable {
            data: data.clone(),
            loads,
            sections,
        })
    }

    fn module(&self, name: &str, m: &Mmap) -> Option<Module<Bytes>> {
        let va = vaddr_of_mapping(&self.loads, m.pgoff)?;
        let base_avma = m.addr.wrapping_sub(va);
        let svma = |n: &str| {
            self.sections
                .get(n)
                .map(|(a, r)| *a..*a + (r.end - r.start) as u64)
        };
        let bytes = |n: &str| {
            self.sections
                .get(n)
                .map(|(_, r)| Bytes(self.data.clone(), r.clone()))
        };
        let info = ExplicitModuleSectionInfo {
            base_svma: 0,
            text_svma: svma(".text"),
            text: bytes(".text"),
            eh_frame_svma: svma(".eh_frame"),
            eh_frame: bytes(".eh_frame"),
            eh_frame_hdr_svma: svma(".eh_frame_hdr"),
            eh_frame_hdr: bytes(".eh_frame_hdr"),
            got_svma: svma(".got"),
            ..Default::default()
        };
        Some(Module::new(
            name.to_string(),
            m.addr..m.addr.saturating_add(m.len),
            base_avma,
            info,
        ))
    }
}

/// Per-process unwinders, kept in step with the mappings.
pub struct Unwinders {
    procs: HashMap<u32, UnwinderX86_64<Bytes>>,
    libs: Vec<Option<Arc<Unwindable>>>,
    files: HashMap<String, Option<Arc<Unwindable>>>,
    build_ids: HashMap<String, Vec<u8>>,
    cache: Box<CacheX86_64>,
    /// Samples whose stack could not be walked past their first frame.
    pub failed: u64,
}

impl Unwinders {
    pub fn new(libs: &[Lib], build_ids: &[(Vec<u8>, String)]) -> Self {
        Unwinders {
            procs: HashMap::new(),
            libs: libs
                .iter()
                .map(|l| Unwindable::parse(l.image.data.clone()).map(Arc::new))
                .collect(),
            files: HashMap::new(),
            build_ids: build_ids
                .iter()
                .map(|(i, n)| (n.clone(), i.clone()))
                .collect(),
            cache: Box::new(CacheX86_64::new()),
            failed: 0,
        }
    }

    pub fn add_build_id(&mut self, id: Vec<u8>, filename: String) {
        self.build_ids.insert(filename, id);
    }

    /// A file outside `--lib`, read from its path if it is still the same
    /// build.
    fn file(&mut self, m: &Mmap) -> Option<Arc<Unwindable>> {
        if let Some(u) = self.files.get(&m.filename) {
            return u.clone();
        }
        let want = m
            .build_id
            .clone()
            .or_else(|| self.build_ids.get(&m.filename).cloned());
        let loaded = (|| {
            let path = std::path::Path::new(&m.filename);
            if !path.is_absolute() || std::fs::metadata(path).ok()?.len() > MAX_DSO_BYTES {
                return None;
            }
            let data = std::fs::read(path).ok()?;
            if let Some(want) = &want {
                let file = ElfFile64::<LE>::parse(&data[..]).ok()?;
                let id = file.build_id().ok().flatten()?;
                if id != &want[..] {
                    return None;
                }
            }
            Unwindable::parse(Arc::new(data.into())).map(Arc::new)
        })();
        self.files.insert(m.filename.clone(), loaded.clone());
        loaded
    }

    /// An executable mapping of `lib` (when it is a `--lib` image) or of
    /// another file.
    pub fn mmap(&mut self, m: &Mmap, lib: Option<usize>) {
        if !m.exec {
            return;
        }
        let u = match lib {
            Some(i) => self.libs.get(i).cloned().flatten(),
            None => self.file(m),
        };
        let Some(module) = u.and_then(|u| u.module(&m.filename, m)) else {
            return;
        };
        let w = self.procs.entry(m.pid).or_default();
        w.remove_module(m.addr);
        w.add_module(module);
    }

    pub fn fork(&mut self, pid: u32, ppid: u32) {
        if pid != ppid {
            if let Some(p) = self.procs.get(&ppid).cloned() {
                self.procs.insert(pid, p);
            }
        }
    }

    pub fn clear(&mut self, pid: u32) {
        self.procs.remove(&pid);
    }

    /// The return addresses on the sampled stack, innermost first.
    pub fn unwind(&mut self, s: &Sample, out: &mut Vec<u64>) {
        out.clear();
        let (Some(ip), Some(sp), Some(bp)) = (s.reg(REG_IP), s.reg(REG_SP), s.reg(REG_BP)) else {
            return;
        };
        let Some(w) = self.procs.get(&s.pid) else {
            return;
        };
        let stack = &s.stack;
        let mut read = |addr: u64| -> Result<u64, ()> {
            let off = usize::try_from(addr.checked_sub(sp).ok_or(())?).map_err(|_| ())?;
            let b = stack.get(off..off.checked_add(8).ok_or(())?).ok_or(())?;
            Ok(u64::from_le_bytes(b.try_into().map_err(|_| ())?))
        };
        let regs = UnwindRegsX86_64::new(ip, sp, bp);
        let mut frames = w.iter_frames(ip, regs, &mut self.cache, &mut read);
        while out.len() < MAX_FRAMES {
            match frames.next() {
                Ok(Some(FrameAddress::ReturnAddress(r))) => out.push(r.get()),
                Ok(Some(FrameAddress::InstructionPointer(_))) => {}
                Ok(None) => break,
                Err(_) => {
                    if out.is_empty() {
                        self.failed += 1;
                    }
                    break;
                }
            }
        }
    }
}
