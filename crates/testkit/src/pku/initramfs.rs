//! What the test machine boots: the kernel, busybox and QEMU found on the
//! host (each missing one named with the Debian package that provides it),
//! the kernel modules that 9p over virtio needs (resolved from the
//! kernel's `modules.dep`, so another kernel version works unchanged), and
//! the initramfs holding them (a newc cpio archive written here).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

/// The modules the machine loads (with what they depend on): virtio's PCI
/// transport, 9p's virtio transport and the 9p file system.
pub const MODULES: [&str; 3] = ["virtio_pci", "9pnet_virtio", "9p"];

/// The QEMU system emulator on `path` (a `PATH`-style list).
pub fn find_qemu(path: &std::ffi::OsStr) -> Result<PathBuf> {
    for dir in std::env::split_paths(path) {
        let p = dir.join("qemu-system-x86_64");
        if is_executable(&p) {
            return Ok(p);
        }
    }
    bail!("qemu-system-x86_64 is not on PATH: install the Debian package qemu-system-x86 (protection-key tests run in a QEMU TCG machine on CPUs without pku)")
}

/// A statically linked busybox among `candidates` (its applets run before
/// any library is mounted).
pub fn find_busybox(candidates: &[&Path]) -> Result<PathBuf> {
    let mut dynamic = None;
    for p in candidates {
        let Ok(bytes) = std::fs::read(p) else {
            continue;
        };
        if is_static_elf(&bytes) {
            return Ok(p.to_path_buf());
        }
        dynamic.get_or_insert(p.to_path_buf());
    }
    match dynamic {
        Some(p) => bail!(
            "{} is dynamically linked: install the Debian package busybox-static (the protection-key test machine's init needs a static busybox)",
            p.display()
        ),
        None => bail!(
            "no busybox at {}: install the Debian package busybox-static (the protection-key test machine's init)",
            candidates
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(" or ")
        ),
    }
}

fn is_static_elf(bytes: &[u8]) -> bool {
    use object::read::elf::{ElfFile64, ProgramHeader};
    let Ok(file) = ElfFile64::<object::Endianness>::parse(bytes) else {
        return false;
    };
    let endian = file.endian();
    // A dynamically linked program names its interpreter in PT_INTERP.
    let dynamic = file
        .elf_program_headers()
        .iter()
        .any(|ph| ph.p_type(endian) == object::elf::PT_INTERP);
    file.elf_header().e_machine.get(endian) == object::elf::EM_X86_64 && !dynamic
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// A kernel to boot: `boot/vmlinuz-VERSION` with `modules/VERSION/modules.dep`
/// beside it, readable. The running kernel's version is preferred, else the
/// newest. Returns the image and its modules directory.
pub fn find_kernel(boot: &Path, modules: &Path) -> Result<(PathBuf, PathBuf)> {
    let running = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut found: Vec<(bool, String, PathBuf, PathBuf)> = Vec::new();
    let mut unreadable = None;
    for e in std::fs::read_dir(boot).into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(version) = name.strip_prefix("vmlinuz-") else {
            continue;
        };
        let mods = modules.join(version);
        if !mods.join("modules.dep").is_file() {
            continue;
        }
        if std::fs::File::open(e.path()).is_err() {
            unreadable = Some(e.path());
            continue;
        }
        let preferred = version == running.trim();
        found.push((preferred, version.to_string(), e.path(), mods));
    }
    found.sort_by_key(|a| (a.0, version_key(&a.1)));
    if let Some((_, _, image, mods)) = found.pop() {
        return Ok((image, mods));
    }
    if let Some(p) = unreadable {
        bail!(
            "{} is not readable by this user: make it readable (chmod 0644) or run as root (the protection-key test machine boots it)",
            p.display()
        );
    }
    bail!(
        "no kernel to boot: {} holds no vmlinuz-VERSION with {}/VERSION/modules.dep: install the Debian package linux-image-amd64 (the protection-key test machine boots it)",
        boot.display(),
        modules.display()
    )
}

/// `6.1.0-57-amd64` ordered by its numbers.
fn version_key(v: &str) -> Vec<u64> {
    v.split(|c: char| !c.is_ascii_digit())
        .filter_map(|s| s.parse().ok())
        .collect()
}

/// The module files (relative to `dir`) to load, each after the modules
/// it depends on, for `wanted`; modules built into the kernel are left
/// out.
pub fn module_order(dir: &Path, wanted: &[&str]) -> Result<Vec<String>> {
    let dep_path = dir.join("modules.dep");
    let text = std::fs::read_to_string(&dep_path)
        .with_context(|| format!("read {}", dep_path.display()))?;
    let builtin = std::fs::read_to_string(dir.join("modules.builtin")).unwrap_or_default();
    let deps: Vec<(String, Vec<String>)> = text
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(m, d)| {
            (
                m.trim().to_string(),
                d.split_whitespace().map(String::from).collect(),
            )
        })
        .collect();
    let mut order = Vec::new();
    let mut seen = BTreeSet::new();
    for w in wanted {
        if let Some((file, _)) = deps.iter().find(|(f, _)| module_name(f) == *w) {
            visit(file, &deps, &mut seen, &mut order);
        } else if !builtin.lines().any(|l| module_name(l) == *w) {
            bail!(
                "{}: the kernel has no module {w} (neither a module nor built in): the protection-key test machine needs 9p over virtio",
                dep_path.display()
            );
        }
    }
    Ok(order)
}

fn visit(
    file: &str,
    deps: &[(String, Vec<String>)],
    seen: &mut BTreeSet<String>,
    order: &mut Vec<String>,
) {
    if !seen.insert(file.to_string()) {
        return;
    }
    if let Some((_, ds)) = deps.iter().find(|(f, _)| f == file) {
        for d in ds {
            visit(d, deps, seen, order);
        }
    }
    order.push(file.to_string());
}

/// `kernel/fs/9p/9p.ko.xz` → `9p`; dashes read as underscores, as the
/// kernel reads them.
fn module_name(path: &str) -> String {
    let base = path.rsplit('/').next().unwrap_or(path);
    let stem = base.split(".ko").next().unwrap_or(base);
    stem.replace('-', "_")
}

/// A module's bytes, decompressed where it is shipped compressed.
fn module_bytes(path: &Path) -> Result<Vec<u8>> {
    let name = path.to_string_lossy();
    let tool = [
        (".ko.xz", "xz", "xz-utils"),
        (".ko.zst", "zstd", "zstd"),
        (".ko.gz", "gzip", "gzip"),
    ]
    .into_iter()
    .find(|(ext, _, _)| name.ends_with(ext));
    let Some((_, tool, package)) = tool else {
        return std::fs::read(path).with_context(|| format!("read {}", path.display()));
    };
    let out = Command::new(tool)
        .arg("-dc")
        .arg(path)
        .output()
        .with_context(|| {
            format!(
                "run {tool} to decompress {}: install the Debian package {package}",
                path.display()
            )
        })?;
    if !out.status.success() {
        bail!(
            "{tool} -dc {}: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(out.stdout)
}

/// Write the initramfs to `out`: busybox, `/init`, `/vm.conf` (`conf`'s
/// text), the modules under `/modules` with their load order in
/// `/modules/order`, and `/dev/console`.
pub fn write(out: &Path, busybox: &Path, modules_dir: &Path, conf: &str) -> Result<()> {
    let mut a = Cpio::default();
    for d in ["bin", "dev", "modules", "proc", "sys", "root", "tmp"] {
        a.entry(d, 0o040755, &[], 0);
    }
    a.entry("dev/console", 0o020600, &[], (5 << 8) | 1);
    let bb = std::fs::read(busybox).with_context(|| format!("read {}", busybox.display()))?;
    a.entry("bin/busybox", 0o100755, &bb, 0);
    a.entry("init", 0o100755, include_str!("init.sh").as_bytes(), 0);
    a.entry("vm.conf", 0o100644, conf.as_bytes(), 0);
    let mut names = Vec::new();
    for (i, rel) in module_order(modules_dir, &MODULES)?.iter().enumerate() {
        let name = format!("{i:02}-{}.ko", module_name(rel));
        a.entry(
            &format!("modules/{name}"),
            0o100644,
            &module_bytes(&modules_dir.join(rel))?,
            0,
        );
        names.push(name);
    }
    a.entry(
        "modules/order",
        0o100644,
        (names.join("\n") + "\n").as_bytes(),
        0,
    );
    let bytes = a.finish();
    std::fs::write(out, bytes).with_context(|| format!("write {}", out.display()))
}

/// A newc (`070701`) cpio archive, as the kernel unpacks an initramfs.
#[derive(Default)]
struct Cpio {
    bytes: Vec<u8>,
    ino: u32,
}

impl Cpio {
    /// `rdev` is `major << 8 | minor` for a device node.
    fn entry(&mut self, name: &str, mode: u32, data: &[u8], rdev: u32) {
        self.ino += 1;
        let nlink = if mode & 0o170000 == 0o040000 { 2 } else { 1 };
        let fields = [
            self.ino,
            mode,
            0,
            0,
            nlink,
            0,
            data.len() as u32,
            0,
            0,
            rdev >> 8,
            rdev & 0xff,
            name.len() as u32 + 1,
            0,
        ];
        self.bytes.extend_from_slice(b"070701");
        for f in fields {
            self.bytes.extend_from_slice(format!("{f:08x}").as_bytes());
        }
        self.bytes.extend_from_slice(name.as_bytes());
        self.bytes.push(0);
        self.pad();
        self.bytes.extend_from_slice(data);
        self.pad();
    }

    fn pad(&mut self) {
        while self.bytes.len() % 4 != 0 {
            self.bytes.push(0);
        }
    }

    fn finish(mut self) -> Vec<u8> {
        self.entry("TRAILER!!!", 0, &[], 0);
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_tools_name_the_package_to_install() {
        let e = find_qemu(std::ffi::OsStr::new("/nonexistent")).unwrap_err();
        assert!(
            e.to_string()
                .contains("install the Debian package qemu-system-x86"),
            "{e}"
        );
        let e = find_busybox(&[Path::new("/nonexistent/busybox")]).unwrap_err();
        assert!(e.to_string().contains("busybox-static"), "{e}");
        // A dynamically linked program is no static busybox.
        let e = find_busybox(&[Path::new("/bin/sh")]).unwrap_err();
        assert!(e.to_string().contains("dynamically linked"), "{e}");
        let e = find_kernel(Path::new("/nonexistent"), Path::new("/nonexistent")).unwrap_err();
        assert!(e.to_string().contains("linux-image-amd64"), "{e}");
        for e in [
            find_qemu(std::ffi::OsStr::new("/nonexistent")).unwrap_err(),
            find_kernel(Path::new("/nonexistent"), Path::new("/x")).unwrap_err(),
        ] {
            assert!(!e.to_string().contains('\n'), "one line: {e}");
        }
    }

    #[test]
    fn modules_load_after_what_they_depend_on() {
        let dir = std::env::temp_dir().join(format!("faasfuse-moddep-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("modules.dep"),
            "kernel/fs/9p/9p.ko.xz: kernel/net/9p/9pnet.ko.xz kernel/fs/netfs/netfs.ko.xz\n\
             kernel/net/9p/9pnet.ko.xz:\n\
             kernel/fs/netfs/netfs.ko.xz:\n\
             kernel/net/9p/9pnet_virtio.ko.xz: kernel/net/9p/9pnet.ko.xz kernel/drivers/virtio/virtio_ring.ko.xz\n\
             kernel/drivers/virtio/virtio_ring.ko.xz:\n",
        )
        .unwrap();
        std::fs::write(
            dir.join("modules.builtin"),
            "kernel/drivers/virtio/virtio_pci.ko\n",
        )
        .unwrap();
        let order = module_order(&dir, &MODULES).unwrap();
        let pos = |n: &str| order.iter().position(|m| module_name(m) == n).unwrap();
        assert_eq!(order.len(), 5, "{order:?}");
        assert!(pos("9pnet") < pos("9pnet_virtio") && pos("virtio_ring") < pos("9pnet_virtio"));
        assert!(pos("9pnet") < pos("9p") && pos("netfs") < pos("9p"));
        std::fs::write(dir.join("modules.builtin"), "").unwrap();
        let e = module_order(&dir, &MODULES).unwrap_err();
        assert!(e.to_string().contains("virtio_pci"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
