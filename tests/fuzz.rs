//! Mutation fuzzing of every parser: ELF inputs (inspect, merge and the
//! structural checks of verify on what merge accepts), perf.data, BOLT
//! .fdata, func_config.json, weights and profile JSON. Seeds are the
//! fixture libraries and small files built here; each run mutates one.
//!
//! A finding is a panic, a run over the time limit (the process aborts),
//! an allocation beyond the address-space limit (the process aborts), an
//! output merge accepts that verify rejects, or a temporary file left
//! behind. The differential target (`elf-differential`) damages only what
//! the dynamic linker ignores, the section header table, so the unfused
//! deployment is unchanged: a fused image merge accepts must then answer
//! every input as the unfused deployment does, or merge must refuse
//! (exit 2). Time-bounded in the normal suite (FUZZ_SECONDS per target,
//! default 8); `scripts/fuzz.sh` runs long campaigns (FUZZ_RUNS per target).

mod common;
use common::*;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use faasfuse_host::FunctionSpec;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Interesting values for integer fields.
const MAGIC: [u64; 12] = [
    0,
    1,
    0x7f,
    0x80,
    0xff,
    0x1000,
    1 << 31,
    1 << 32,
    1 << 63,
    u64::MAX,
    u64::MAX - 7,
    0x7fff_ffff_ffff_fff8,
];

/// Mutate `d` in place: 1–4 edits, biased to `regions` (byte ranges of
/// structures) when given.
fn mutate(rng: &mut Rng, d: &mut Vec<u8>, regions: &[(usize, usize)]) {
    if d.is_empty() {
        d.push(rng.next() as u8);
        return;
    }
    let edits = 1 + rng.below(4);
    for _ in 0..edits {
        let at = if !regions.is_empty() && rng.below(4) != 0 {
            let (a, b) = regions[rng.below(regions.len())];
            a + rng.below((b - a).max(1))
        } else {
            rng.below(d.len())
        }
        .min(d.len() - 1);
        match rng.below(8) {
            0 => d[at] ^= 1 << rng.below(8),
            1 => d[at] = rng.next() as u8,
            2 | 3 => {
                let v = MAGIC[rng.below(MAGIC.len())];
                let w = [1usize, 2, 4, 8][rng.below(4)];
                let at = at.min(d.len().saturating_sub(w));
                let bytes = v.to_le_bytes();
                let n = w.min(d.len() - at);
                d[at..at + n].copy_from_slice(&bytes[..n]);
            }
            4 => {
                let v = rng.next() % 0x10_0000;
                let at = at.min(d.len().saturating_sub(8));
                let n = 8.min(d.len() - at);
                d[at..at + n].copy_from_slice(&v.to_le_bytes()[..n]);
            }
            5 if d.len() > 16 => d.truncate(at.max(1)),
            6 => {
                let n = rng.below(64).min(d.len() - at);
                let chunk = d[at..at + n].to_vec();
                let to = rng.below(d.len());
                d.splice(to..to, chunk);
            }
            _ => {
                let n = rng.below(16).min(d.len() - at);
                d.drain(at..at + n);
                if d.is_empty() {
                    d.push(0);
                }
            }
        }
    }
}

/// [`mutate`] confined to `d[a..b]` (its length kept).
fn mutate_within(rng: &mut Rng, d: &mut [u8], (a, b): (usize, usize)) {
    let mut sub = d[a..b].to_vec();
    let n = sub.len();
    mutate(rng, &mut sub, &[(0, n)]);
    sub.resize(n, 0);
    d[a..b].copy_from_slice(&sub);
}

/// The section header table of an ELF image: (start, end) in the file.
fn section_headers(d: &[u8]) -> (usize, usize) {
    let shoff = u64::from_le_bytes(d[40..48].try_into().unwrap()) as usize;
    let n = u16::from_le_bytes(d[60..62].try_into().unwrap()) as usize;
    (shoff, (shoff + 64 * n).min(d.len()))
}

/// The hello workflow with the mutated image `file` as its root (Foo) or
/// as its callee (Bar).
fn hello_specs(
    as_root: bool,
    file: &Path,
    root_lib: &Path,
    callee_lib: &Path,
) -> Vec<FunctionSpec> {
    let (root, callee) = if as_root {
        (file, callee_lib)
    } else {
        (root_lib, file)
    };
    vec![
        FunctionSpec {
            name: "Foo".into(),
            path: root.to_path_buf(),
        },
        FunctionSpec {
            name: "Bar".into(),
            path: callee.to_path_buf(),
        },
    ]
}

/// `faasfuse run DEPLOY --inputs INPUTS -- Foo`: stdout, or why it failed.
fn serve_hello(deploy: &[String], inputs: &Path) -> Result<String, String> {
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_faasfuse"))
        .arg("run")
        .args(deploy)
        .arg("--inputs")
        .arg(inputs)
        .args(["--", "Foo"])
        .output()
        .map_err(|e| e.to_string())?;
    if o.status.success() {
        Ok(String::from_utf8_lossy(&o.stdout).into_owned())
    } else {
        Err(format!(
            "{}: {}",
            o.status,
            String::from_utf8_lossy(&o.stderr).trim()
        ))
    }
}

/// Text-level mutations for line formats and JSON: swap, duplicate or drop
/// lines, replace numbers with extreme ones, then maybe byte edits.
fn mutate_text(rng: &mut Rng, d: &mut Vec<u8>) {
    const NUMS: [&str; 10] = [
        "-1",
        "1e308",
        "-1e308",
        "NaN",
        "18446744073709551616",
        "0",
        "2",
        "1.5",
        "9e999",
        "-0",
    ];
    let text = String::from_utf8_lossy(d).into_owned();
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    if lines.is_empty() {
        lines.push(String::new());
    }
    match rng.below(5) {
        0 => {
            let i = rng.below(lines.len());
            let l = lines[i].clone();
            lines.insert(rng.below(lines.len() + 1), l);
        }
        1 if lines.len() > 1 => {
            lines.remove(rng.below(lines.len()));
        }
        2 | 3 => {
            let i = rng.below(lines.len());
            let digits: Vec<usize> = lines[i]
                .char_indices()
                .filter(|(_, c)| c.is_ascii_digit())
                .map(|(k, _)| k)
                .collect();
            if let Some(&k) = digits.get(rng.below(digits.len().max(1))) {
                let end = lines[i][k..]
                    .find(|c: char| !c.is_ascii_digit() && c != '.')
                    .map_or(lines[i].len(), |e| k + e);
                lines[i].replace_range(k..end, NUMS[rng.below(NUMS.len())]);
            }
        }
        _ => {}
    }
    *d = (lines.join("\n") + "\n").into_bytes();
    if rng.below(3) == 0 {
        mutate(rng, d, &[]);
    }
}

/// Byte ranges of an ELF's headers and the structures the merger reads.
fn elf_regions(d: &[u8]) -> Vec<(usize, usize)> {
    use object::read::elf::{FileHeader, SectionHeader};
    let mut out = vec![(0, 64)];
    let Ok(h) = object::elf::FileHeader64::<object::LittleEndian>::parse(d) else {
        return out;
    };
    let e = object::LittleEndian;
    let phoff = h.e_phoff(e) as usize;
    out.push((phoff, phoff + 56 * h.e_phnum(e) as usize));
    let shoff = h.e_shoff(e) as usize;
    out.push((shoff, shoff + 64 * h.e_shnum(e) as usize));
    if let Ok(table) = h.sections(e, d) {
        for s in table.iter() {
            let name = table.section_name(e, s).unwrap_or(b"");
            if matches!(
                name,
                b".dynamic"
                    | b".rela.dyn"
                    | b".rela.plt"
                    | b".relr.dyn"
                    | b".dynsym"
                    | b".symtab"
                    | b".gnu.version"
                    | b".gnu.version_r"
                    | b".eh_frame"
                    | b".init_array"
                    | b".note.gnu.build-id"
            ) {
                let a = s.sh_offset(e) as usize;
                out.push((a, a + s.sh_size(e) as usize));
            }
        }
    }
    out.retain(|(a, b)| a < b && *b <= d.len());
    out
}

struct Campaign {
    name: &'static str,
    runs: u64,
    rejected: u64,
    accepted: u64,
    findings: Vec<String>,
}

/// Watchdog: aborts the process (saving the input) when one run takes
/// longer than the limit.
struct Watchdog {
    started: Arc<AtomicU64>,
    input: Arc<Mutex<(String, Vec<u8>)>>,
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

impl Watchdog {
    fn start(limit: Duration, findings: PathBuf) -> Watchdog {
        let started = Arc::new(AtomicU64::new(0));
        let input = Arc::new(Mutex::new((String::new(), Vec::new())));
        let (s, i) = (started.clone(), input.clone());
        std::thread::spawn(move || loop {
            std::thread::sleep(Duration::from_millis(200));
            let t = s.load(Ordering::SeqCst);
            if t != 0 && now_ms() - t > limit.as_millis() as u64 {
                let (name, bytes) = i.lock().unwrap().clone();
                let f = findings.join(format!("hang-{name}"));
                let _ = std::fs::write(&f, bytes);
                eprintln!(
                    "fuzz: {name}: run over {limit:?}; input saved as {}",
                    f.display()
                );
                std::process::abort();
            }
        });
        Watchdog { started, input }
    }

    fn run<T>(&self, name: &str, bytes: &[u8], f: impl FnOnce() -> T) -> std::thread::Result<T> {
        *self.input.lock().unwrap() = (name.to_string(), bytes.to_vec());
        self.started.store(now_ms(), Ordering::SeqCst);
        let r = catch_unwind(AssertUnwindSafe(f));
        self.started.store(0, Ordering::SeqCst);
        r
    }
}

fn limit_address_space(bytes: u64) {
    let l = libc::rlimit {
        rlim_cur: bytes,
        rlim_max: bytes,
    };
    // SAFETY: setrlimit with a valid struct.
    unsafe { libc::setrlimit(libc::RLIMIT_AS, &l) };
}

fn leftovers(d: &Path) -> Vec<String> {
    std::fs::read_dir(d)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect()
}

#[test]
fn fuzz_parsers() {
    let seconds = env_u64("FUZZ_SECONDS", 8);
    let max_runs = env_u64("FUZZ_RUNS", u64::MAX);
    let seed = env_u64("FUZZ_SEED", 0x5eed);
    let only = std::env::var("FUZZ_TARGETS").unwrap_or_default();
    let work = scratch_dir("fuzz");
    let findings = scratch_dir("fuzz-findings");
    let foo = fixtures().join("default/libfoo.so");
    let bar = fixtures().join("default/libbar.so");
    let relr_bar = fixtures().join("relr/libbar.so");

    // Seeds built before the limits apply.
    let perf_seed = work.join("seed.perf.data");
    if !perf_seed.exists() {
        run_ok(
            testkit()
                .args(["gen-lbr", "--size-mb", "1", "--processes", "2", "-o"])
                .arg(&perf_seed)
                .arg(&foo)
                .arg(&bar),
        );
    }
    let perf_bytes = std::fs::read(&perf_seed).unwrap();
    let libs = vec![
        faasfuse_core::profile::images::Lib::load("Foo", &foo).unwrap(),
        faasfuse_core::profile::images::Lib::load("Bar", &bar).unwrap(),
    ];
    let fdata_seed = b"1 faas_func_call 10 1 faas_func_call 20 0 7\n\
1 faas_func_call 24 0 [unknown] 0 0 3\n0 [unknown] 0 1 faas_func_call 0 0 2\n"
        .to_vec();
    let config_seed = format!(
        r#"[{{"funcName":"Foo","funcId":1,"minWorkers":1,"maxWorkers":2,"library":"{}","domain":"a","entry":true,"maxImageBytes":100000,"cpuBudget":0.5}},
{{"funcName":"Bar","funcId":2,"minWorkers":1,"maxWorkers":1,"library":"{}","reentrant":false}}]"#,
        foo.display(),
        bar.display()
    )
    .into_bytes();
    let weights_seed =
        br#"{"calls": {"Foo": {"Bar": 1000}}, "cpu": {"Foo": 0.25, "Bar": 0.5}, "external": {"Foo": 100}}"#
            .to_vec();
    let functions = vec![
        ("Foo".to_string(), foo.clone()),
        ("Bar".to_string(), bar.clone()),
    ];

    limit_address_space(env_u64("FUZZ_MEMORY_LIMIT", 3 << 30));
    std::panic::set_hook(Box::new(|_| {}));
    let dog = Watchdog::start(
        Duration::from_secs(env_u64("FUZZ_TIMEOUT", 20)),
        findings.clone(),
    );
    let mut rng = Rng::new(seed);
    let mut campaigns = Vec::new();

    let targets: [&'static str; 7] = [
        "elf-inspect",
        "elf-merge",
        "elf-differential",
        "perf.data",
        "fdata",
        "config",
        "weights",
    ];
    // The unfused deployment's answers, for the differential target.
    let hello_inputs = input_file(
        "fuzz-differential",
        &generate_inputs(&workflow("hello"), 12, 5),
    );
    let unfused_answers = serve_hello(
        &[
            format!("Foo={}", foo.display()),
            format!("Bar={}", bar.display()),
        ],
        &hello_inputs,
    )
    .expect("the unfused hello deployment serves");
    for target in targets {
        if !only.is_empty() && !only.split(',').any(|t| t == target) {
            continue;
        }
        let mut c = Campaign {
            name: target,
            runs: 0,
            rejected: 0,
            accepted: 0,
            findings: Vec::new(),
        };
        let start = Instant::now();
        let seeds: Vec<Vec<u8>> = match target {
            "elf-inspect" | "elf-merge" => vec![
                std::fs::read(&foo).unwrap(),
                std::fs::read(&bar).unwrap(),
                std::fs::read(&relr_bar).unwrap(),
            ],
            "elf-differential" => vec![std::fs::read(&foo).unwrap(), std::fs::read(&bar).unwrap()],
            "perf.data" => vec![perf_bytes.clone()],
            "fdata" => vec![fdata_seed.clone()],
            "config" => vec![config_seed.clone()],
            _ => vec![weights_seed.clone()],
        };
        let regions: Vec<Vec<(usize, usize)>> = seeds.iter().map(|s| elf_regions(s)).collect();
        while c.runs < max_runs && start.elapsed() < Duration::from_secs(seconds) {
            let k = rng.below(seeds.len());
            let mut d = seeds[k].clone();
            match target {
                "elf-inspect" | "elf-merge" | "perf.data" => mutate(&mut rng, &mut d, &regions[k]),
                "elf-differential" => {
                    let shdrs = section_headers(&d);
                    mutate_within(&mut rng, &mut d, shdrs)
                }
                _ => mutate_text(&mut rng, &mut d),
            }
            c.runs += 1;
            let id = format!("{target}-{seed:x}-{}", c.runs);
            let file = work.join(match target {
                "fdata" => "input.fdata".to_string(),
                "config" => "func_config.json".to_string(),
                "weights" => "weights.json".to_string(),
                _ => "libinput.so".to_string(),
            });
            std::fs::write(&file, &d).unwrap();
            // Each run is a command of its own: nothing loaded before.
            faasfuse_core::loaded::forget();
            let r = dog.run(&id, &d, || -> Result<bool, String> {
                match target {
                    "elf-inspect" => Ok(faasfuse_core::inspect::inspect(&file).is_ok()),
                    "elf-merge" => {
                        let out = work.join("out.so");
                        let _ = std::fs::remove_file(&out);
                        let specs = hello_specs(k == 0, &file, &foo, &bar);
                        let opts = faasfuse_core::merge::MergeOptions::default();
                        match faasfuse_core::merge::merge(&specs, &out, &opts) {
                            Err(e) => {
                                if faasfuse_core::error::exit_code(&e) != 2 {
                                    return Err(format!(
                                        "merge failed with exit 1: {}",
                                        faasfuse_core::error::one_line(&e)
                                    ));
                                }
                                Ok(false)
                            }
                            Ok(_) => {
                                let rep = faasfuse_core::verify::verify(&out, None)
                                    .map_err(|e| format!("verify of accepted output: {e:#}"))?;
                                if !rep.ok() {
                                    return Err(format!(
                                        "accepted output fails verify: {}",
                                        rep.render()
                                    ));
                                }
                                Ok(true)
                            }
                        }
                    }
                    "elf-differential" => {
                        let out = work.join("differential.so");
                        let _ = std::fs::remove_file(&out);
                        let specs = hello_specs(k == 0, &file, &foo, &bar);
                        let opts = faasfuse_core::merge::MergeOptions::default();
                        match faasfuse_core::merge::merge(&specs, &out, &opts) {
                            Err(e) if faasfuse_core::error::exit_code(&e) == 2 => Ok(false),
                            Err(e) => Err(format!(
                                "merge failed with exit 1: {}",
                                faasfuse_core::error::one_line(&e)
                            )),
                            Ok(_) => {
                                let fused =
                                    serve_hello(&[format!("Foo={}", out.display())], &hello_inputs)
                                        .map_err(|e| format!("the fused image fails: {e}"))?;
                                if fused != unfused_answers {
                                    return Err(format!(
                                        "the fused image answers otherwise:\n{fused}\nunfused:\n{unfused_answers}"
                                    ));
                                }
                                Ok(true)
                            }
                        }
                    }
                    "perf.data" => {
                        Ok(faasfuse_core::profile::perfdata::read_all(&d, rng_bit(&d)).is_ok())
                    }
                    "fdata" => {
                        let text = String::from_utf8_lossy(&d);
                        Ok(
                            faasfuse_core::profile::fdata::ingest(&file, &text, &libs, false)
                                .is_ok(),
                        )
                    }
                    "config" => Ok(faasfuse_core::plan::Config::load(&file).is_ok()),
                    _ => Ok(faasfuse_core::plan::load_weights(
                        std::slice::from_ref(&file),
                        &functions,
                    )
                    .is_ok()),
                }
            });
            match r {
                Ok(Ok(true)) => c.accepted += 1,
                Ok(Ok(false)) => c.rejected += 1,
                Ok(Err(why)) => {
                    let f = findings.join(&id);
                    std::fs::write(&f, &d).unwrap();
                    c.findings.push(format!("{}: {why}", f.display()));
                }
                Err(p) => {
                    let why = p
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                        .unwrap_or_default();
                    let f = findings.join(&id);
                    std::fs::write(&f, &d).unwrap();
                    c.findings.push(format!("{}: panic: {why}", f.display()));
                }
            }
            let left = leftovers(&work);
            if !left.is_empty() {
                c.findings.push(format!("{id}: temporaries left: {left:?}"));
                for n in left {
                    let _ = std::fs::remove_file(work.join(n));
                }
            }
        }
        campaigns.push(c);
    }
    let _ = std::panic::take_hook();
    let mut report = String::new();
    for c in &campaigns {
        report.push_str(&format!(
            "fuzz {:<12} runs {:>7}  rejected {:>7}  accepted {:>7}  findings {}\n",
            c.name,
            c.runs,
            c.rejected,
            c.accepted,
            c.findings.len()
        ));
        for f in c.findings.iter().take(10) {
            report.push_str(&format!("  {f}\n"));
        }
    }
    eprint!("{report}");
    let _ = std::fs::write(findings.join("report.txt"), &report);
    assert!(
        campaigns.iter().all(|c| c.findings.is_empty()),
        "fuzz findings:\n{report}"
    );
}

/// Lenient or strict, from the input itself (deterministic per input).
fn rng_bit(d: &[u8]) -> bool {
    d.len() % 3 != 0
}
