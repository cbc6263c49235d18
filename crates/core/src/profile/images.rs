//! Which image an address belongs to: the function libraries given with
//! `--lib`, matched to each process's executable mappings by build-id
//! first (paths differ inside containers) and path second.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Result;

use super::perfdata::{FileId, Mmap};
use super::symbols::Symbols;
use crate::analyze::RpcSite;
use crate::elf::Segment;

/// A function library given with `--lib [NAME=]LIB.so`.
pub struct Lib {
    /// The function name it serves (callers' name for it).
    pub name: String,
    pub image: std::sync::Arc<crate::loaded::Analysed>,
    pub build_id: Option<Vec<u8>>,
    pub sites: Vec<RpcSite>,
    canonical: Option<PathBuf>,
    /// The file's device and inode on this host.
    file_id: Option<FileId>,
    pub symbols: Symbols,
}

impl Lib {
    /// Load `path` as the image serving `name`.
    pub fn load(name: &str, path: &Path) -> Result<Lib> {
        let image = crate::loaded::load(path)?;
        let sites = image.sites.clone();
        let build_id = image.info.build_id.as_deref().and_then(hex_decode);
        let symbols = Symbols::new(&image);
        let file_id = std::fs::metadata(path).ok().map(|m| {
            use std::os::unix::fs::MetadataExt;
            FileId {
                major: libc::major(m.dev()),
                minor: libc::minor(m.dev()),
                inode: m.ino(),
            }
        });
        Ok(Lib {
            name: name.to_string(),
            canonical: path.canonicalize().ok(),
            file_id,
            image,
            build_id,
            sites,
            symbols,
        })
    }

    /// The virtual address that file offset `off` is loaded at, for an
    /// executable mapping starting at `off`.
    pub fn vaddr_of_offset(&self, off: u64) -> Option<u64> {
        vaddr_of_mapping(self.image.loads(), off)
    }

    /// The name of the function symbol containing `vaddr`.
    pub fn symbol_at(&self, vaddr: u64) -> Option<&str> {
        self.symbols.at(vaddr).map(|s| s.name.as_str())
    }

    pub fn build_id_hex(&self) -> Option<String> {
        self.image.info.build_id.clone()
    }
}

/// The vaddr a mapping at file offset `pgoff` starts at. Mappings start
/// at page boundaries, segments need not: a segment's pages begin at its
/// offset and vaddr rounded down. Executable segments are preferred, since
/// only executable mappings are looked up.
pub fn vaddr_of_mapping(loads: &[Segment], pgoff: u64) -> Option<u64> {
    const PAGE: u64 = 0xfff;
    let fits = |s: &&Segment| pgoff >= s.offset & !PAGE && pgoff < s.offset + s.filesz;
    let seg = loads
        .iter()
        .filter(fits)
        .find(|s| s.executable)
        .or_else(|| loads.iter().find(fits))?;
    Some(pgoff - (seg.offset & !PAGE) + (seg.vaddr & !PAGE))
}

pub fn hex_decode(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Where an address lies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Loc {
    /// In function library `lib` at ELF virtual address `vaddr`.
    Lib {
        lib: usize,
        vaddr: u64,
    },
    /// In another mapped file (index into [`AddressSpaces::dsos`]).
    Dso(usize),
    Kernel,
    Unknown,
}

#[derive(Debug, Clone, Copy)]
pub struct Mapping {
    end: u64,
    target: Target,
}

#[derive(Debug, Clone, Copy)]
enum Target {
    /// vaddr = address - bias.
    Lib {
        lib: usize,
        bias: u64,
        /// Index into [`AddressSpaces::guessed`] when only the file name
        /// ties the mapping to the library; [`PROVEN`] else.
        guess: u32,
    },
    Dso(usize),
}

/// [`Target::Lib::guess`] of a mapping proven to be its library.
const PROVEN: u32 = u32::MAX;

/// What ties a mapping to its library, short of a build-id: proven at the
/// end of the profile, or the profile is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tie {
    /// The library's own file on this machine (its device and inode, or
    /// its path and inode): proof only of a profile recorded here.
    ThisMachinesFile,
    /// The file name alone.
    Name,
}

/// The guessed mappings some address was resolved in (a sample's or a
/// frame's): shared by every snapshot and resolver.
type Hits = Arc<std::sync::Mutex<std::collections::BTreeSet<u32>>>;

/// One executable mapping of an image outside `--lib`, kept for unwinding.
#[derive(Debug, Clone)]
pub struct DsoMapping {
    pub start: u64,
    pub end: u64,
    pub pgoff: u64,
}

/// Executable mappings of every process seen, and the libraries they map.
pub struct AddressSpaces<'a> {
    pub libs: &'a [Lib],
    /// Each process's mappings by start address, shared with snapshots
    /// (copied on write).
    procs: HashMap<u32, Arc<Maps>>,
    /// The last snapshot, while the mappings have not changed since.
    snapshot: Option<Arc<Snapshot>>,
    /// Build-ids by file name (HEADER_BUILD_ID).
    build_ids: HashMap<String, Vec<u8>>,
    /// Mapped files that are not function libraries, by name.
    pub dsos: Vec<String>,
    /// The build-id each of `dsos` was mapped with (MMAP2 or perf's
    /// build-id table), when known.
    pub dso_build_ids: Vec<Option<Vec<u8>>>,
    dso_index: HashMap<String, usize>,
    /// Mapped file names matched to each library.
    pub matched_paths: Vec<Vec<String>>,
    /// Per library: files mapped under its name with another build-id.
    pub other_builds: Vec<Vec<String>>,
    /// (library, file, tie) mapped as that library without a build-id.
    guessed: Vec<(usize, String, Tie)>,
    hits: Hits,
}

/// User-space addresses end below this (x86-64 canonical lower half).
const USER_END: u64 = 0x0000_8000_0000_0000;

impl<'a> AddressSpaces<'a> {
    pub fn new(libs: &'a [Lib], build_ids: &[(Vec<u8>, String)]) -> Self {
        let mut s = AddressSpaces {
            libs,
            procs: HashMap::new(),
            snapshot: None,
            build_ids: HashMap::new(),
            dsos: Vec::new(),
            dso_build_ids: Vec::new(),
            dso_index: HashMap::new(),
            matched_paths: vec![Vec::new(); libs.len()],
            other_builds: vec![Vec::new(); libs.len()],
            guessed: Vec::new(),
            hits: Hits::default(),
        };
        for (id, name) in build_ids {
            s.add_build_id(id.clone(), name.clone());
        }
        s
    }

    /// The library `m` maps, and what ties it there when no build-id
    /// proves it (the mapping's, or the profile's for its file name): the
    /// library's own file on this machine (device and inode, at the
    /// library's path or through a bind mount), or its file name alone.
    /// `Err` for none, or for the library whose name it has but whose
    /// build-id differs (another build of that file).
    fn match_lib(&self, m: &Mmap) -> Result<(usize, Option<Tie>), Option<usize>> {
        let id = m
            .build_id
            .as_ref()
            .or_else(|| self.build_ids.get(&m.filename));
        if let Some(id) = id {
            if let Some(i) = self
                .libs
                .iter()
                .position(|l| l.build_id.as_ref() == Some(id))
            {
                return Ok((i, None));
            }
        }
        if id.is_none() {
            if let Some(i) = m
                .file_id
                .and_then(|f| self.libs.iter().position(|l| l.file_id == Some(f)))
            {
                return Ok((i, Some(Tie::ThisMachinesFile)));
            }
        }
        let path = Path::new(&m.filename);
        let canonical = path.canonicalize().ok();
        let same_path = self
            .libs
            .iter()
            .position(|l| canonical.is_some() && l.canonical == canonical);
        let by_path = same_path
            .or_else(|| {
                self.libs
                    .iter()
                    .position(|l| l.image.path.file_name() == path.file_name())
            })
            .ok_or(None)?;
        let lib = &self.libs[by_path];
        // A known build-id that differs means another build of that file.
        match (id, &lib.build_id) {
            (Some(a), Some(b)) if a != b => Err(Some(by_path)),
            // The library's path, and no inode that says the file has been
            // replaced since (inode only: how a device number shows in
            // stat and in the kernel's record differs on some file systems).
            _ => {
                let own = same_path.is_some()
                    && m.file_id
                        .map_or(true, |f| lib.file_id.map(|l| l.inode) == Some(f.inode));
                Ok((
                    by_path,
                    Some(if own {
                        Tie::ThisMachinesFile
                    } else {
                        Tie::Name
                    }),
                ))
            }
        }
    }

    /// A build-id for `filename` (it proves or refutes, at the end, the
    /// mappings of it taken for a library on its name alone).
    pub fn add_build_id(&mut self, id: Vec<u8>, filename: String) {
        self.build_ids.insert(filename, id);
    }

    /// The error of a profile some of whose samples or frames were counted
    /// in a library without a build-id that proves it: a mapping of a file
    /// other than the library's (a container's path, a copy, a file since
    /// replaced) tied by its name alone, one whose build-id came later and
    /// is another build's, or one tied by a file of this machine (device
    /// and inode, or the file at the recorded path) in a profile that
    /// `recorded_on` (its HEADER_HOSTNAME) says comes from another host, or
    /// does not say where it comes from: there, this machine's files prove
    /// nothing. Unproven mappings nothing was counted in (another
    /// container's idle copy, in a system-wide profile) do not matter.
    pub fn unproven(&self, recorded_on: Option<&str>) -> Option<String> {
        const HOW: &str = "record with `perf record --buildid-mmap` (build-ids in the mappings), or add them with `perf inject --buildid-all` where the recorded paths hold the libraries";
        let here = this_host();
        let local = recorded_on.is_some() && recorded_on == here.as_deref();
        let elsewhere = || match recorded_on {
            Some(h) => format!(
                "the profile was recorded on host {h}, not on this one ({})",
                here.as_deref().unwrap_or("unnamed")
            ),
            None => "the profile does not say which host it was recorded on".to_string(),
        };
        let hits = self.hits.lock().map(|h| h.clone()).unwrap_or_default();
        let mut bad = hits.iter().filter_map(|&i| {
            let (lib, file, tie) = &self.guessed[i as usize];
            let l = &self.libs[*lib];
            match (self.build_ids.get(file), tie) {
                (Some(id), _) if l.build_id.as_ref() == Some(id) => None,
                (Some(id), _) => Some(format!(
                    "{file} was read as {}'s library ({}) by its name, but the profile's build-id for it, {}, is another build's; {HOW}",
                    l.name,
                    l.image.path.display(),
                    hex(id)
                )),
                // This machine's file: proof for a profile recorded here.
                (None, Tie::ThisMachinesFile) if local => None,
                (None, Tie::ThisMachinesFile) => Some(format!(
                    "{file} is mapped without a build-id; it is {}'s library ({}) on this machine, but {}, so this machine's files cannot tell which build it mapped; {HOW}",
                    l.name,
                    l.image.path.display(),
                    elsewhere()
                )),
                // The file at the recorded path here being that build (as
                // perf itself reads a build-id the profile lacks): proof
                // for a profile recorded here. Read once.
                (None, Tie::Name) => {
                    let build_here =
                        l.build_id.is_some() && file_build_id(Path::new(file)) == l.build_id;
                    match (build_here, local) {
                        (true, true) => None,
                        (true, false) => Some(format!(
                            "{file} is mapped without a build-id; the file at that path here is {}'s library ({}), but {}, so it cannot tell which build that host mapped; {HOW}",
                            l.name,
                            l.image.path.display(),
                            elsewhere()
                        )),
                        (false, _) => Some(format!(
                            "{file} is mapped without a build-id and is not the file given as {}'s library ({}): only its name matches, so its samples cannot be told to be that build's; {HOW}",
                            l.name,
                            l.image.path.display()
                        )),
                    }
                }
            }
        });
        bad.next()
    }

    fn dso(&mut self, name: &str) -> usize {
        if let Some(&i) = self.dso_index.get(name) {
            return i;
        }
        self.dsos.push(name.to_string());
        self.dso_build_ids.push(None);
        self.dso_index.insert(name.to_string(), self.dsos.len() - 1);
        self.dsos.len() - 1
    }

    /// Record an executable mapping; the library it maps, if one.
    pub fn mmap(&mut self, m: &Mmap) -> Option<usize> {
        if !m.exec || m.len == 0 {
            return None;
        }
        let end = m.addr.saturating_add(m.len);
        let mut guess = PROVEN;
        let lib = match self.match_lib(m) {
            Ok((i, tie)) => {
                if let Some(tie) = tie {
                    let key = (i, m.filename.clone(), tie);
                    guess = match self.guessed.iter().position(|g| *g == key) {
                        Some(g) => g as u32,
                        None => {
                            self.guessed.push(key);
                            (self.guessed.len() - 1) as u32
                        }
                    };
                }
                Some(i)
            }
            Err(other) => {
                if let Some(i) = other {
                    if !self.other_builds[i].contains(&m.filename) {
                        self.other_builds[i].push(m.filename.clone());
                    }
                }
                None
            }
        };
        let target = match lib {
            Some(i) => {
                let va = self.libs[i].vaddr_of_offset(m.pgoff)?;
                if !self.matched_paths[i].contains(&m.filename) {
                    self.matched_paths[i].push(m.filename.clone());
                }
                Target::Lib {
                    lib: i,
                    bias: m.addr.wrapping_sub(va),
                    guess,
                }
            }
            None => {
                let d = self.dso(&m.filename);
                if let Some(id) = m
                    .build_id
                    .as_ref()
                    .or_else(|| self.build_ids.get(&m.filename))
                {
                    self.dso_build_ids[d] = Some(id.clone());
                }
                Target::Dso(d)
            }
        };
        self.snapshot = None;
        let maps = Arc::make_mut(self.procs.entry(m.pid).or_default());
        // A new mapping replaces whatever it overlaps.
        maps.retain(|(start, v)| !(*start < end && v.end > m.addr));
        let at = maps.partition_point(|(start, _)| *start < m.addr);
        maps.insert(at, (m.addr, Mapping { end, target }));
        lib
    }

    /// A new process starts with a copy of its parent's mappings.
    pub fn fork(&mut self, pid: u32, ppid: u32) {
        if pid != ppid {
            self.snapshot = None;
            let parent = self.procs.get(&ppid).cloned().unwrap_or_default();
            self.procs.insert(pid, parent);
        }
    }

    /// A process that exec'd or exited has no mappings.
    pub fn clear(&mut self, pid: u32) {
        if self.procs.remove(&pid).is_some() {
            self.snapshot = None;
        }
    }

    /// The mappings as they are now, for resolving samples elsewhere
    /// (another thread) while these go on changing.
    pub fn snapshot(&mut self) -> Arc<Snapshot> {
        self.snapshot
            .get_or_insert_with(|| {
                Arc::new(Snapshot {
                    procs: self.procs.clone(),
                    hits: self.hits.clone(),
                })
            })
            .clone()
    }

    /// Where `addr` of process `pid` lies.
    pub fn resolve(&self, pid: u32, addr: u64) -> Loc {
        if addr >= USER_END {
            return Loc::Kernel;
        }
        let Some(maps) = self.procs.get(&pid) else {
            return Loc::Unknown;
        };
        lookup(maps, addr).map_or(Loc::Unknown, |(_, m)| m.loc(addr, &self.hits))
    }

    /// A resolver for one process (saves the process lookup per address).
    pub fn process(&self, pid: u32) -> Process<'_> {
        Process {
            maps: self.procs.get(&pid).map(|m| &m[..]),
            last: std::cell::Cell::new(None),
            hits: &self.hits,
        }
    }
}

/// Executable mappings of a process, sorted by start address.
type Maps = Vec<(u64, Mapping)>;

/// The mapping holding `addr`, with its start.
#[inline]
fn lookup(maps: &[(u64, Mapping)], addr: u64) -> Option<(u64, Mapping)> {
    let i = maps.partition_point(|(start, _)| *start <= addr);
    let &(start, m) = maps.get(i.checked_sub(1)?)?;
    (addr < m.end).then_some((start, m))
}

/// The mappings of every process at one point of a profile.
pub struct Snapshot {
    procs: HashMap<u32, Arc<Maps>>,
    hits: Hits,
}

impl Snapshot {
    pub fn process(&self, pid: u32) -> Process<'_> {
        Process {
            maps: self.procs.get(&pid).map(|m| &m[..]),
            last: std::cell::Cell::new(None),
            hits: &self.hits,
        }
    }
}

pub struct Process<'s> {
    maps: Option<&'s [(u64, Mapping)]>,
    /// The mapping that answered last: branches cluster in few mappings.
    last: std::cell::Cell<Option<(u64, Mapping)>>,
    hits: &'s Hits,
}

impl Process<'_> {
    pub fn resolve(&self, addr: u64) -> Loc {
        if addr >= USER_END {
            return Loc::Kernel;
        }
        if let Some((start, m)) = self.last.get() {
            if addr >= start && addr < m.end {
                return m.loc(addr, self.hits);
            }
        }
        let Some(maps) = self.maps else {
            return Loc::Unknown;
        };
        match lookup(maps, addr) {
            Some((start, m)) => {
                self.last.set(Some((start, m)));
                m.loc(addr, self.hits)
            }
            None => Loc::Unknown,
        }
    }
}

impl Mapping {
    #[inline]
    fn loc(&self, addr: u64, hits: &Hits) -> Loc {
        match self.target {
            Target::Lib { lib, bias, guess } => {
                if guess != PROVEN {
                    // Only profiles that will be refused get here.
                    if let Ok(mut h) = hits.lock() {
                        h.insert(guess);
                    }
                }
                Loc::Lib {
                    lib,
                    vaddr: addr.wrapping_sub(bias),
                }
            }
            Target::Dso(d) => Loc::Dso(d),
        }
    }
}

/// The GNU build-id of the ELF file at `path` on this machine, if there is
/// one.
/// This machine's host name, as perf records it (`uname -n`, of this
/// process's UTS namespace).
fn this_host() -> Option<String> {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
    let name = name.trim();
    (!name.is_empty()).then(|| name.to_string())
}

fn file_build_id(path: &Path) -> Option<Vec<u8>> {
    use object::Object;
    let data = std::fs::read(path).ok()?;
    let file = object::File::parse(&*data).ok()?;
    file.build_id().ok()?.map(<[u8]>::to_vec)
}
