//! The LBR test-data recorder and writer (`faasfuse-testkit record-lbr`,
//! `gen-lbr`): real perf tools read what they write, and every branch
//! count agrees with the recorder's ground truth and with the host.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use common::*;
use faasfuse_testkit::record::Truth;
use object::{Object, ObjectSection, ObjectSymbol, ObjectSymbolTable};

const PERF2BOLT: &str = "/usr/lib/llvm-16/bin/perf2bolt";

struct Recording {
    data: PathBuf,
    truth: Truth,
    /// stdout of the traced commands (the host's `--json` reports).
    stdout: String,
}

/// `faasfuse run --json` of a workflow's default build over 100 inputs.
fn run_command(w: &Workflow, ipc: bool) -> Vec<String> {
    let inputs = input_file(&format!("rec-{}", w.name), &generate_inputs(w, 100, 7));
    let mut c = vec![env!("CARGO_BIN_EXE_faasfuse").to_string(), "run".into()];
    c.extend(w.deploy_args("default"));
    c.extend([
        "--inputs".into(),
        inputs.display().to_string(),
        "--json".into(),
    ]);
    if ipc {
        c.push("--ipc".into());
    }
    c.extend(["--".into(), w.root.clone()]);
    c
}

fn record(name: &str, every: u64, commands: &[Vec<String>]) -> Recording {
    let dir = scratch_dir("record");
    let data = dir.join(format!("{name}.data"));
    let truth = dir.join(format!("{name}.truth.json"));
    let mut cmd = testkit();
    cmd.arg("record-lbr")
        .arg("-o")
        .arg(&data)
        .arg("--every")
        .arg(every.to_string())
        .arg("--truth")
        .arg(&truth)
        .arg("--");
    for (i, c) in commands.iter().enumerate() {
        if i > 0 {
            cmd.arg(":::");
        }
        cmd.args(c);
    }
    let out = run_ok(&mut cmd);
    Recording {
        data,
        truth: Truth::read(&truth).unwrap(),
        stdout: String::from_utf8(out.stdout).unwrap(),
    }
}

fn hello_every1() -> &'static Recording {
    static R: OnceLock<Recording> = OnceLock::new();
    R.get_or_init(|| record("hello-1", 1, &[run_command(&workflow("hello"), false)]))
}

fn hello_every32() -> &'static Recording {
    static R: OnceLock<Recording> = OnceLock::new();
    R.get_or_init(|| record("hello-32", 32, &[run_command(&workflow("hello"), false)]))
}

fn chain_every32() -> &'static Recording {
    static R: OnceLock<Recording> = OnceLock::new();
    R.get_or_init(|| record("chain-32", 32, &[run_command(&workflow("chain"), false)]))
}

/// Two commands at once: an in-process deployment (one process, two
/// images) and an `--ipc` one (five processes).
fn multi() -> &'static Recording {
    static R: OnceLock<Recording> = OnceLock::new();
    R.get_or_init(|| {
        record(
            "multi",
            1,
            &[
                run_command(&workflow("hello"), false),
                run_command(&workflow("chain"), true),
            ],
        )
    })
}

fn perf(args: &[&str], data: &Path) -> String {
    run_stdout(Command::new("perf").args(args).arg("-i").arg(data))
}

/// One line of `perf script -F pid,period,ip,brstack`.
struct ScriptSample {
    pid: u32,
    period: u64,
    ip: u64,
    /// (from, to, mispredicted), newest first.
    stack: Vec<(u64, u64, bool)>,
}

fn script(data: &Path) -> Vec<ScriptSample> {
    let hex = |s: &str| u64::from_str_radix(s.trim_start_matches("0x"), 16).unwrap();
    perf(&["script", "-F", "pid,period,ip,brstack"], data)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let mut f = l.split_whitespace();
            let pid = f.next().unwrap().parse().unwrap();
            let period = f.next().unwrap().parse().unwrap();
            let ip = hex(f.next().unwrap());
            let stack = f
                .map(|e| {
                    let p: Vec<&str> = e.split('/').collect();
                    (hex(p[0]), hex(p[1]), p[2] == "M")
                })
                .collect();
            ScriptSample {
                pid,
                period,
                ip,
                stack,
            }
        })
        .collect()
}

/// Count branches from perf's own decoding of the file with the rule the
/// readers use: the newest min(period, nr) entries of each sample.
fn counts_from_script(samples: &[ScriptSample]) -> HashMap<(u32, u64, u64), (u64, u64)> {
    let mut c: HashMap<(u32, u64, u64), (u64, u64)> = HashMap::new();
    for s in samples {
        assert!(!s.stack.is_empty() && s.stack.len() <= 32);
        assert_eq!(s.ip, s.stack[0].1, "a sample's ip is the newest target");
        for &(from, to, m) in s.stack.iter().take(s.period as usize) {
            let e = c.entry((s.pid, from, to)).or_default();
            e.0 += 1;
            e.1 += u64::from(m);
        }
    }
    c
}

fn truth_counts(t: &Truth) -> HashMap<(u32, u64, u64), (u64, u64)> {
    t.branches
        .iter()
        .map(|b| ((b.pid, b.from, b.to), (b.count, b.mispred)))
        .collect()
}

fn assert_script_matches(r: &Recording) {
    let samples = script(&r.data);
    assert_eq!(samples.len() as u64, r.truth.samples);
    let got = counts_from_script(&samples);
    let want = truth_counts(&r.truth);
    assert_eq!(got.len(), want.len(), "distinct branches");
    for (k, v) in &want {
        assert_eq!(got.get(k), Some(v), "branch {k:x?}");
    }
    assert_eq!(
        got.values().map(|v| v.0).sum::<u64>(),
        r.truth.taken_branches
    );
}

#[test]
fn perf_script_prints_exactly_the_recorded_branches_every_1() {
    let r = hello_every1();
    assert!(r.truth.taken_branches > 1000, "{}", r.truth.taken_branches);
    // every = 1: one sample per taken branch, stacks overlap.
    assert_eq!(r.truth.samples, r.truth.taken_branches);
    assert_script_matches(r);
}

#[test]
fn perf_script_prints_exactly_the_recorded_branches_every_32() {
    let r = chain_every32();
    // Stacks do not overlap: counting every entry is exact as well.
    let samples = script(&r.data);
    let entries: usize = samples.iter().map(|s| s.stack.len()).sum();
    assert_eq!(entries as u64, r.truth.taken_branches);
    assert_script_matches(r);
}

#[test]
fn perf_report_and_buildid_list_read_it() {
    let r = hello_every32();
    let report = perf(&["report", "--stdio"], &r.data);
    assert!(report.contains("libfoo.so") && report.contains("libbar.so"));
    assert!(report.contains("faas_func_call"), "{report}");
    let ids = perf(&["buildid-list"], &r.data);
    for img in r.truth.images.iter().filter(|i| i.traced) {
        assert!(
            ids.contains(&format!("{} {}", img.build_id, img.path)),
            "{} missing from:\n{ids}",
            img.path
        );
    }
}

/// Each RPC site's indirect call is taken once per nested call the host
/// served.
fn assert_rpc_sites_counted(r: &Recording, w: &Workflow) {
    let report: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    let nested = report["nested_calls"].as_u64().unwrap();
    assert!(nested > 0);
    let sites = rpc_sites(w);
    assert!(!sites.is_empty());
    let taken = rpc_branches_taken(r, &sites);
    assert_eq!(taken, nested as u64, "RPC call branches vs nested calls");
}

/// Every RPC site `inspect` finds in `w`'s libraries, as (canonical
/// library path, address).
fn rpc_sites(w: &Workflow) -> Vec<(std::path::PathBuf, u64)> {
    let mut sites = Vec::new();
    for (_, lib) in &w.functions {
        let path = fixtures().join("default").join(lib);
        let out = run_ok(faasfuse().arg("inspect").arg("--json").arg(&path));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let canonical = std::fs::canonicalize(&path).unwrap();
        for s in v["rpc_sites"].as_array().unwrap() {
            sites.push((canonical.clone(), s["address"].as_u64().unwrap()));
        }
    }
    sites
}

/// Recorded executions of the call instructions at `sites`.
fn rpc_branches_taken(r: &Recording, sites: &[(std::path::PathBuf, u64)]) -> u64 {
    let mut taken = 0;
    for b in &r.truth.branches {
        let Some((img, at)) = r.truth.image_address(b.pid, b.from) else {
            continue;
        };
        let p = std::fs::canonicalize(&img.path).unwrap();
        if sites.iter().any(|(sp, sa)| *sp == p && *sa == at) {
            taken += b.count;
        }
    }
    taken
}

#[test]
fn rpc_call_branches_equal_nested_calls() {
    assert_rpc_sites_counted(hello_every1(), &workflow("hello"));
    assert_rpc_sites_counted(chain_every32(), &workflow("chain"));
}

#[test]
fn several_processes_with_several_images_in_one_file() {
    let r = multi();
    let mut pids: Vec<u32> = r
        .truth
        .images
        .iter()
        .filter(|i| i.traced)
        .map(|i| i.pid)
        .collect();
    pids.sort();
    pids.dedup();
    // hello in one process; chain's engine has no library, its four
    // workers one each.
    assert_eq!(pids.len(), 5, "{:?}", r.truth.images);
    let per_pid = |pid: u32| {
        r.truth
            .images
            .iter()
            .filter(|i| i.traced && i.pid == pid)
            .count()
    };
    assert!(pids.iter().any(|&p| per_pid(p) == 2));
    let branch_pids: std::collections::HashSet<u32> =
        r.truth.branches.iter().map(|b| b.pid).collect();
    assert_eq!(branch_pids.len(), 5);
    assert_script_matches(r);
    let hello = workflow("hello");
    let chain = workflow("chain");
    let reports: Vec<serde_json::Value> = serde_json::Deserializer::from_str(&r.stdout)
        .into_iter()
        .map(|v| v.unwrap())
        .collect();
    assert_eq!(reports.len(), 2);
    let total: u64 = reports
        .iter()
        .map(|v| v["nested_calls"].as_u64().unwrap())
        .sum();
    let sites: Vec<_> = [&hello, &chain].into_iter().flat_map(rpc_sites).collect();
    assert_eq!(rpc_branches_taken(r, &sites), total);
}

/// Function and PLT entry addresses by the names BOLT gives them.
fn bolt_names(lib: &Path) -> HashMap<String, u64> {
    let data = std::fs::read(lib).unwrap();
    let file = object::File::parse(&*data).unwrap();
    let mut names = HashMap::new();
    for s in file.symbols() {
        if s.kind() == object::SymbolKind::Text && s.address() != 0 {
            names
                .entry(s.name().unwrap().to_string())
                .or_insert(s.address());
        }
    }
    // GOT slot -> imported name, from the PLT and GLOB_DAT relocations.
    let mut slots = HashMap::new();
    if let Some(relocs) = file.dynamic_relocations() {
        for (at, r) in relocs {
            if let object::RelocationTarget::Symbol(i) = r.target() {
                if let Ok(sym) = file.dynamic_symbol_table().unwrap().symbol_by_index(i) {
                    slots.insert(at, sym.name().unwrap().to_string());
                }
            }
        }
    }
    for sec in file.sections() {
        let name = sec.name().unwrap();
        if !name.starts_with(".plt") {
            continue;
        }
        let entsize = match name {
            ".plt.got" => {
                if sec.size() % 16 == 0 && file.section_by_name(".plt.sec").is_some() {
                    16
                } else {
                    8
                }
            }
            _ => 16,
        };
        let code = sec.data().unwrap();
        let mut dec =
            iced_x86::Decoder::with_ip(64, code, sec.address(), iced_x86::DecoderOptions::NONE);
        for insn in &mut dec {
            if insn.mnemonic() == iced_x86::Mnemonic::Jmp && insn.is_ip_rel_memory_operand() {
                if let Some(sym) = slots.get(&insn.ip_rel_memory_address()) {
                    let entry = sec.address() + (insn.ip() - sec.address()) / entsize * entsize;
                    names.insert(format!("{sym}@PLT"), entry);
                }
            }
        }
    }
    names
}

fn next_ip(lib: &Path, vaddr: u64) -> u64 {
    let data = std::fs::read(lib).unwrap();
    let file = object::File::parse(&*data).unwrap();
    for sec in file.sections() {
        if vaddr >= sec.address() && vaddr < sec.address() + sec.size() {
            let code = &sec.data().unwrap()[(vaddr - sec.address()) as usize..];
            let mut dec =
                iced_x86::Decoder::with_ip(64, code, vaddr, iced_x86::DecoderOptions::NONE);
            return dec.decode().next_ip();
        }
    }
    panic!("{vaddr:#x} not in a section");
}

type Loc = Option<u64>;

/// `perf2bolt` on the recording for `lib`: its taken-branch counts, as
/// (from, to) image addresses (None: outside the image) → (count, mispreds).
fn perf2bolt_counts(
    r: &Recording,
    lib: &Path,
    tag: &str,
) -> Option<HashMap<(Loc, Loc), (u64, u64)>> {
    require_tool(PERF2BOLT, &["--version"], "bolt-16");
    let fdata = scratch_dir("record").join(format!("{tag}.fdata"));
    let out = Command::new(PERF2BOLT)
        .arg("-p")
        .arg(&r.data)
        .arg("-o")
        .arg(&fdata)
        .arg(lib)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "perf2bolt failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let names = bolt_names(lib);
    let data = std::fs::read(lib).unwrap();
    let sections: HashMap<String, u64> = object::File::parse(&*data)
        .unwrap()
        .sections()
        .map(|s| (s.name().unwrap().to_string(), s.address()))
        .collect();
    let loc = |is_sym: &str, name: &str, off: &str| -> Loc {
        if is_sym == "0" {
            return None;
        }
        let base = name.split('/').next().unwrap();
        if let Some(sec) = base.strip_prefix("__BOLT_PSEUDO_") {
            return Some(sections[sec] + u64::from_str_radix(off, 16).unwrap());
        }
        let addr = names
            .get(base)
            .unwrap_or_else(|| panic!("perf2bolt names {name}, not in {}", lib.display()));
        Some(addr + u64::from_str_radix(off, 16).unwrap())
    };
    let mut c: HashMap<(Loc, Loc), (u64, u64)> = HashMap::new();
    for line in std::fs::read_to_string(&fdata).unwrap().lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(f.len(), 8, "fdata line {line}");
        let from = loc(f[0], f[1], f[2]);
        let to = loc(f[3], f[4], f[5]);
        // perf2bolt adds the fall-throughs it infers between stacked
        // branches (from a branch to the instruction after it): not taken
        // branches, so not in the truth.
        if let (Some(a), Some(b)) = (from, to) {
            if next_ip(lib, a) == b {
                continue;
            }
        }
        let e = c.entry((from, to)).or_default();
        e.0 += f[7].parse::<u64>().unwrap();
        e.1 += f[6].parse::<u64>().unwrap();
    }
    Some(c)
}

/// The truth restricted to `lib`, aggregated as perf2bolt does.
fn truth_for_image(t: &Truth, lib: &Path) -> HashMap<(Loc, Loc), (u64, u64)> {
    let lib = std::fs::canonicalize(lib).unwrap();
    let at = |pid: u32, a: u64| -> Loc {
        t.image_address(pid, a)
            .filter(|(i, _)| std::fs::canonicalize(&i.path).unwrap() == lib)
            .map(|(_, v)| v)
    };
    let mut c: HashMap<(Loc, Loc), (u64, u64)> = HashMap::new();
    for b in &t.branches {
        let (from, to) = (at(b.pid, b.from), at(b.pid, b.to));
        if from.is_none() && to.is_none() {
            continue;
        }
        let e = c.entry((from, to)).or_default();
        e.0 += b.count;
        e.1 += b.mispred;
    }
    c
}

fn assert_perf2bolt_matches(r: &Recording, lib: &Path, tag: &str) {
    let Some(got) = perf2bolt_counts(r, lib, tag) else {
        return;
    };
    let want = truth_for_image(&r.truth, lib);
    assert!(!want.is_empty());
    let mut keys: Vec<_> = want.keys().chain(got.keys()).copied().collect();
    keys.sort();
    keys.dedup();
    for k in keys {
        assert_eq!(got.get(&k), want.get(&k), "{tag}: branch {k:x?}");
    }
}

#[test]
fn perf2bolt_counts_equal_the_truth() {
    let d = fixtures().join("default");
    assert_perf2bolt_matches(hello_every32(), &d.join("libfoo.so"), "hello-foo");
    assert_perf2bolt_matches(chain_every32(), &d.join("libparse.so"), "chain-parse");
}

#[test]
fn generated_profile_is_read_by_perf_and_counts_match() {
    let d = fixtures().join("default");
    let dir = scratch_dir("record");
    let data = dir.join("gen.data");
    let truth = dir.join("gen.truth.json");
    run_ok(
        testkit()
            .args(["gen-lbr", "--size-mb", "2", "--processes", "3", "-o"])
            .arg(&data)
            .arg("--truth")
            .arg(&truth)
            .arg(d.join("libfoo.so"))
            .arg(d.join("libparse.so")),
    );
    let r = Recording {
        data,
        truth: Truth::read(&truth).unwrap(),
        stdout: String::new(),
    };
    assert!(std::fs::metadata(&r.data).unwrap().len() >= 2 << 20);
    assert_script_matches(&r);
    assert_perf2bolt_matches(&r, &d.join("libparse.so"), "gen-parse");
}

/// Branches as (image file, address in the image) pairs; None outside
/// the traced images.
fn by_image(t: &Truth, from_inside_only: bool) -> HashMap<(Loc2, Loc2), u64> {
    let at = |pid: u32, a: u64| -> Loc2 {
        t.image_address(pid, a)
            .filter(|(i, _)| i.traced)
            .map(|(i, v)| (i.path.rsplit('/').next().unwrap().to_string(), v))
    };
    let mut c = HashMap::new();
    for b in &t.branches {
        let (from, to) = (at(b.pid, b.from), at(b.pid, b.to));
        if from.is_none() && (from_inside_only || to.is_none()) {
            continue;
        }
        *c.entry((from, to)).or_default() += b.count;
    }
    c
}

type Loc2 = Option<(String, u64)>;

#[test]
fn single_stepping_sees_the_same_branches_and_those_entering_the_images() {
    let w = workflow("hello");
    let mut c = vec![env!("CARGO_BIN_EXE_faasfuse").to_string(), "run".into()];
    c.extend(w.deploy_args("default"));
    c.extend(["--", "Foo", "world"].map(String::from));
    let fast = record("hello-bp", 1, std::slice::from_ref(&c));
    let dir = scratch_dir("record");
    let (data, truth) = (dir.join("hello-ss.data"), dir.join("hello-ss.json"));
    run_ok(
        testkit()
            .args(["record-lbr", "--single-step", "-o"])
            .arg(&data)
            .arg("--truth")
            .arg(&truth)
            .arg("--")
            .args(&c),
    );
    let slow = Recording {
        data,
        truth: Truth::read(&truth).unwrap(),
        stdout: String::new(),
    };
    // Emulating branches at breakpoints and single-stepping agree on every
    // branch leaving a traced instruction.
    assert_eq!(by_image(&fast.truth, true), by_image(&slow.truth, true));
    // Single-stepping also sees returns and calls into the images.
    let entering = by_image(&slow.truth, false)
        .keys()
        .filter(|(f, t)| f.is_none() && t.is_some())
        .count();
    assert!(entering > 0);
    assert_script_matches(&slow);
}
