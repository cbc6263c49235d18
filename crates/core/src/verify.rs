//! `faasfuse verify`: structural checks of a (fused) function library that
//! the tool can make itself, and a load test in a child process.

use std::path::Path;

use anyhow::{bail, Result};
use gimli::{BaseAddresses, EhFrame, EhFrameHdr, LittleEndian, UnwindSection};
use object::elf;
use object::read::elf::{Dyn, ElfFile64, ProgramHeader, Rela, SectionHeader};
use object::LittleEndian as LE;
use serde::Serialize;

use crate::elf::{Image, Segment};
use crate::files::FileBytes;

const E: LE = LE;

#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub name: &'static str,
    pub ok: bool,
    pub detail: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    pub path: String,
    pub checks: Vec<Check>,
}

impl VerifyReport {
    pub fn ok(&self) -> bool {
        self.checks.iter().all(|c| c.ok)
    }

    pub fn render(&self) -> String {
        let mut s = format!("{}\n", self.path);
        for c in &self.checks {
            s.push_str(&format!(
                "  {:<4} {:<22} {}\n",
                if c.ok { "ok" } else { "FAIL" },
                c.name,
                c.detail
            ));
        }
        s
    }
}

/// Run every check; `load_with` is the program to run the load test with
/// (this executable's hidden `__load` command), or `None` to skip it.
pub fn verify(path: &Path, load_with: Option<&Path>) -> Result<VerifyReport> {
    verify_image(Image::load(path)?, -1, load_with)
}

/// [`verify`] an output being written, whose bytes are `data`: `path`
/// names it, and the inherited descriptor `fd` opens it in the load test.
pub fn verify_staged(
    path: &Path,
    data: FileBytes,
    fd: i32,
    load_with: Option<&Path>,
) -> Result<VerifyReport> {
    verify_image(Image::parse(path, data)?, fd, load_with)
}

fn verify_image(image: Image, fd: i32, load_with: Option<&Path>) -> Result<VerifyReport> {
    let path = image.path.clone();
    let path = path.as_path();
    let mut checks = Vec::new();
    let file = ElfFile64::<LE>::parse(&image.data[..])?;
    let mut check = |name, r: Result<String>| {
        let (ok, detail) = match r {
            Ok(d) => (true, d),
            Err(e) => (false, format!("{e:#}")),
        };
        checks.push(Check { name, ok, detail });
    };
    check("entry points", entry_points(&image));
    let loads = image.loads();
    check("segments", segments(&file, image.data.len() as u64));
    check("dynamic entries", dynamic(&file, loads));
    check("relocations", relocations(&file, loads));
    check("eh_frame_hdr", eh_frame_hdr(&file, &image));
    if let Some(exe) = load_with {
        check(LOAD_TEST, load_test(exe, path, fd));
    }
    Ok(VerifyReport {
        path: path.display().to_string(),
        checks,
    })
}

fn entry_points(image: &Image) -> Result<String> {
    image.require_entry_points()?;
    Ok(
        "faas_init, faas_create_func_worker, faas_destroy_func_worker, faas_func_call exported"
            .into(),
    )
}

type File<'a> = ElfFile64<'a, LE>;

fn in_loads(loads: &[Segment], addr: u64, len: u64) -> bool {
    loads
        .iter()
        .any(|s| addr >= s.vaddr && addr + len <= s.vaddr + s.memsz)
}

fn segments(file: &File, len: u64) -> Result<String> {
    let mut prev_end = 0u64;
    let mut n = 0;
    for p in file.elf_program_headers() {
        if p.p_type(E) != elf::PT_LOAD {
            continue;
        }
        let (va, off, fs, ms, al) = (
            p.p_vaddr(E),
            p.p_offset(E),
            p.p_filesz(E),
            p.p_memsz(E),
            p.p_align(E),
        );
        if al > 1 && va % al != off % al {
            bail!("segment at {va:#x}: offset {off:#x} not congruent to address modulo {al:#x}");
        }
        if fs > ms {
            bail!("segment at {va:#x}: file size exceeds memory size");
        }
        if off + fs > len {
            bail!("segment at {va:#x} extends beyond the file");
        }
        if n > 0 && va < prev_end {
            bail!(
                "segment at {va:#x} is unsorted or overlaps the previous one (ends {prev_end:#x})"
            );
        }
        prev_end = va + ms;
        n += 1;
    }
    Ok(format!(
        "{n} loadable segments sorted, aligned, within the file"
    ))
}

fn dynamic(file: &File, loads: &[Segment]) -> Result<String> {
    let table = file.elf_section_table();
    let Some((dyns, _)) = table.dynamic(E, file.data())? else {
        bail!("no dynamic section");
    };
    let mut sizes = std::collections::HashMap::new();
    for d in dyns {
        if let Some(t) = d.tag32(E) {
            sizes.insert(t, d.d_val(E));
        }
    }
    let pairs = [
        (elf::DT_STRTAB, Some(elf::DT_STRSZ)),
        (elf::DT_SYMTAB, None),
        (elf::DT_RELA, Some(elf::DT_RELASZ)),
        (elf::DT_INIT_ARRAY, Some(elf::DT_INIT_ARRAYSZ)),
        (elf::DT_FINI_ARRAY, Some(elf::DT_FINI_ARRAYSZ)),
        (elf::DT_GNU_HASH, None),
        (elf::DT_HASH, None),
        (elf::DT_VERSYM, None),
        (elf::DT_VERNEED, None),
        (elf::DT_JMPREL, Some(elf::DT_PLTRELSZ)),
        (elf::DT_INIT, None),
        (elf::DT_FINI, None),
    ];
    let mut n = 0;
    for (tag, size) in pairs {
        let Some(&addr) = sizes.get(&tag) else {
            continue;
        };
        let len = size.and_then(|s| sizes.get(&s).copied()).unwrap_or(1);
        if !in_loads(loads, addr, len.max(1)) {
            bail!("dynamic entry {tag} = {addr:#x} (+{len:#x}) is outside every loadable segment");
        }
        n += 1;
    }
    Ok(format!("{n} address entries within loadable segments"))
}

fn relocations(file: &File, loads: &[Segment]) -> Result<String> {
    let data = file.data();
    let table = file.elf_section_table();
    let mut n = 0;
    for s in table.iter() {
        if s.sh_flags(E) & u64::from(elf::SHF_ALLOC) == 0 {
            continue;
        }
        let Some((relas, _)) = s.rela(E, data)? else {
            continue;
        };
        for r in relas {
            let off = r.r_offset(E);
            if !in_loads(loads, off, 8) {
                bail!("relocation at {off:#x} is outside every loadable segment");
            }
            n += 1;
        }
    }
    Ok(format!("{n} dynamic relocations within loadable segments"))
}

fn eh_frame_hdr(file: &File, image: &Image) -> Result<String> {
    let Some(ph) = file
        .elf_program_headers()
        .iter()
        .find(|p| p.p_type(E) == elf::PT_GNU_EH_FRAME)
    else {
        return Ok("no PT_GNU_EH_FRAME".into());
    };
    let hdr_addr = ph.p_vaddr(E);
    let hdr = image
        .read_vaddr(hdr_addr, ph.p_filesz(E) as usize)
        .ok_or_else(|| anyhow::anyhow!("header outside the file"))?;
    let bases = BaseAddresses::default().set_eh_frame_hdr(hdr_addr);
    let parsed = EhFrameHdr::new(hdr, LittleEndian).parse(&bases, 8)?;
    let gimli::Pointer::Direct(eh_addr) = parsed.eh_frame_ptr() else {
        bail!("indirect eh_frame pointer");
    };
    let table = parsed
        .table()
        .ok_or_else(|| anyhow::anyhow!("no binary search table"))?;
    let section = file
        .elf_section_table()
        .iter()
        .find(|s| s.sh_addr(E) == eh_addr && s.sh_type(E) == elf::SHT_PROGBITS)
        .ok_or_else(|| anyhow::anyhow!("eh_frame_ptr {eh_addr:#x} names no section"))?;
    let eh_bytes = image
        .read_vaddr(eh_addr, section.sh_size(E) as usize)
        .ok_or_else(|| anyhow::anyhow!(".eh_frame outside the file"))?;
    let eh = EhFrame::new(eh_bytes, LittleEndian);
    let bases = bases.set_eh_frame(eh_addr);
    // Every FDE with a non-empty range, from .eh_frame itself.
    let mut fdes = Vec::new();
    let mut entries = eh.entries(&bases);
    while let Some(entry) = entries.next()? {
        if let gimli::CieOrFde::Fde(partial) = entry {
            let fde = partial.parse(|_, b, o| eh.cie_from_offset(b, o))?;
            if fde.len() > 0 {
                fdes.push(fde.initial_address());
            }
        }
    }
    let mut listed = Vec::new();
    let mut prev = None;
    let mut iter = table.iter(&bases);
    while let Some((initial, _fde)) = iter.next()? {
        let gimli::Pointer::Direct(initial) = initial else {
            bail!("indirect table entry");
        };
        if prev.is_some_and(|p| p > initial) {
            bail!("table not sorted at {initial:#x}");
        }
        prev = Some(initial);
        listed.push(initial);
    }
    fdes.sort_unstable();
    if fdes != listed {
        bail!(
            "table lists {} FDEs, .eh_frame has {} with code",
            listed.len(),
            fdes.len()
        );
    }
    // Each entry leads to the FDE covering its address.
    for &pc in listed.iter().step_by((listed.len() / 64).max(1)) {
        let fde = table.fde_for_address(&eh, &bases, pc, |s, b, o| s.cie_from_offset(b, o))?;
        if fde.initial_address() != pc {
            bail!(
                "table entry {pc:#x} leads to FDE at {:#x}",
                fde.initial_address()
            );
        }
    }
    Ok(format!("{} FDEs, sorted and complete", listed.len()))
}

/// The name of the load test's check.
pub(crate) const LOAD_TEST: &str = "load test";

/// Seconds the load test may take (`FAASFUSE_LOAD_TIMEOUT`, default 30).
fn load_timeout() -> std::time::Duration {
    let secs = std::env::var("FAASFUSE_LOAD_TIMEOUT")
        .ok()
        .and_then(|v| v.parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s > 0.0)
        .unwrap_or(30.0);
    std::time::Duration::from_secs_f64(secs)
}

/// `dlopen(RTLD_NOW)` the library in a contained child process
/// (`faasfuse-sys`'s `child`), killed after [`load_timeout`]. `fd`, when
/// not -1, is inherited.
pub(crate) fn load_test(exe: &Path, path: &Path, fd: i32) -> Result<String> {
    use std::os::unix::process::ExitStatusExt;
    let mut cmd = std::process::Command::new(exe);
    cmd.arg("__load").arg(path);
    let ran = faasfuse_sys::child::run_contained(cmd, fd, load_timeout())?;
    let Some(status) = ran.status else {
        bail!(
            "dlopen did not return within {:.0} s (a constructor that never finishes?); set FAASFUSE_LOAD_TIMEOUT to allow longer",
            load_timeout().as_secs_f64()
        );
    };
    if !status.success() {
        let why = ran.stderr.trim();
        let why = if !why.is_empty() {
            why.lines().last().unwrap_or(why).to_string()
        } else if let Some(sig) = status.signal() {
            format!("the loading process was killed by signal {sig}")
        } else {
            format!(
                "the loading process exited with status {}",
                status.code().unwrap_or(-1)
            )
        };
        bail!("dlopen failed: {why}");
    }
    Ok("dlopen(RTLD_NOW) in a child process succeeded".into())
}
