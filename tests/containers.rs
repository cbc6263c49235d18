//! Profiles as a fleet records them (issue 28): the fan-out deployment
//! served from a container's view of its libraries, recorded with `perf
//! record --call-graph dwarf`, and profiled on the host over the
//! libraries at another path.
//!
//! The "container" is a new mount namespace (`unshare -m`) in which a
//! copy of the libraries (other files, with the same build-ids) is bind
//! mounted at a path that holds nothing outside it. Only build-ids can
//! tell that the mapped files are the libraries given to `faasfuse
//! profile --lib`:
//!
//! - `perf record --buildid-mmap` puts them in the MMAP2 records, in a
//!   perf.data file and in perf's pipe format (`perf record -o - | faasfuse
//!   profile -`): every decision `plan` takes on the profile is the one
//!   it takes on the platform's exact count of the calls it relayed;
//! - without it, a pipe-mode recording has no build-id table, and a file
//!   recorded while the container's paths are gone has none for them:
//!   `faasfuse profile` refuses the profile in one line naming the file
//!   and what to record instead, never counting samples on a name alone;
//! - `perf inject --buildid-all`, run where the recorded paths hold the
//!   libraries (in the container), adds them: to a pipe stream (build-id
//!   records before the mappings) and to a perf.data file (its build-id
//!   table); again every decision is the exact trace's;
//! - a frame-pointer (`-g`) perf.data file is counted on several threads
//!   (DWARF stacks and pipes are read on one): with `--buildid-mmap` it
//!   gives the same profile on four threads as on one, matched in the
//!   container; without build-ids it is refused on that path too.
//!
//! Every test records with perf and fails if perf cannot record (CI
//! installs linux-perf); the namespace needs root or user namespaces.

mod common;
use common::plans::*;
use common::*;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use serde_json::Value;

fn dir() -> PathBuf {
    scratch_dir("containers")
}

const LIBS: [(&str, &str); 4] = FANOUT_LIBS;

const ADVICE: &str = "perf record --buildid-mmap";

/// The copies the container ships, once per test binary: other files than
/// the fixtures (`--lib`), the same builds.
fn image() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let d = dir().join("image");
        std::fs::create_dir_all(&d).unwrap();
        for (_, f) in LIBS {
            std::fs::copy(fixtures().join("default").join(f), d.join(f)).unwrap();
        }
        d
    })
}

/// Where the container sees its libraries: an empty directory outside it.
fn mount_point() -> PathBuf {
    let d = dir().join("srv");
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// `faasfuse profile --lib NAME=fixtures/default/LIB ...`: the libraries
/// as the host has them.
fn host_libs() -> Vec<String> {
    let deploy: Vec<String> = LIBS
        .iter()
        .map(|(n, f)| spec(n, &fixtures().join("default").join(f)))
        .collect();
    lib_args_for(&deploy)
}

/// The fan-out deployment's `func_config.json` over the host's libraries.
fn config() -> PathBuf {
    fanout_config(&dir())
}

/// 199 requests without a recommendation and one with: the Recommend edge
/// is cold (0.5% of Frontend's executions), the other two hot.
fn inputs() -> &'static Path {
    static FILE: OnceLock<PathBuf> = OnceLock::new();
    FILE.get_or_init(|| fanout_one_rare(0xc0de, "containers"))
}

/// `unshare -m sh -c 'mount --bind IMAGE SRV && exec CMD...'`: `cmd` run in
/// a new mount namespace that sees the container's libraries at SRV.
fn in_container(cmd: &[&std::ffi::OsStr]) -> Command {
    in_container_of(image(), cmd)
}

/// [`in_container`] with the files of `src` bind-mounted at SRV.
fn in_container_of(src: &Path, cmd: &[&std::ffi::OsStr]) -> Command {
    let mut c = Command::new("unshare");
    // root here; elsewhere a user namespace maps the caller to root.
    if unsafe { libc::geteuid() } != 0 {
        c.arg("--map-root-user");
    }
    c.args(["--mount", "--propagation", "private", "sh", "-c"])
        .arg("mount --bind \"$1\" \"$2\" && shift 2 && exec \"$@\"")
        .arg("sh")
        .arg(src)
        .arg(mount_point())
        .args(cmd);
    c
}

/// `faasfuse run` of the fan-out deployment as the container serves it:
/// its libraries at the mount point.
fn container_run(repeat: usize) -> Vec<std::ffi::OsString> {
    let mut a: Vec<std::ffi::OsString> = vec![env!("CARGO_BIN_EXE_faasfuse").into(), "run".into()];
    for (n, f) in LIBS {
        a.push(format!("{n}={}", mount_point().join(f).display()).into());
    }
    a.push("--inputs".into());
    a.push(inputs().into());
    for s in ["--quiet", "--repeat", &repeat.to_string(), "--", "Frontend"] {
        a.push(s.into());
    }
    a
}

/// `perf record -q -e cpu-clock:u EXTRA -o OUT -- <the container serving
/// REPEAT rounds>`, with `--call-graph dwarf` unless EXTRA names a call
/// graph; `OUT` is `-` for perf's pipe format, written to stdout.
fn perf_record(extra: &[&str], out: &str, repeat: usize) -> Command {
    perf_record_of(image(), extra, out, repeat)
}

/// [`perf_record`] of the container serving the files of `src`.
fn perf_record_of(src: &Path, extra: &[&str], out: &str, repeat: usize) -> Command {
    let run = container_run(repeat);
    let run: Vec<&std::ffi::OsStr> = run.iter().map(|s| s.as_os_str()).collect();
    let mut c = Command::new("perf");
    c.args(["record", "-q", "-e", "cpu-clock:u"]);
    if !extra
        .iter()
        .any(|a| *a == "-g" || a.starts_with("--call-graph"))
    {
        c.args(["--call-graph", "dwarf"]);
    }
    c.args(extra).args(["-o", out, "--"]).arg("unshare");
    let inner = in_container_of(src, &run);
    c.args(inner.get_args());
    c
}

/// Enough rounds that the hot edges' sampled counts stand far above the
/// cold threshold, and the rare one below it.
const ROUNDS: usize = 1500;

/// A recording into `TAG.data` (file mode, or pipe mode written to the
/// file).
fn record(tag: &str, extra: &[&str], pipe: bool, rounds: usize) -> PathBuf {
    let data = dir().join(format!("{tag}.data"));
    let mut cmd = if pipe {
        let mut c = perf_record(extra, "-", rounds);
        c.stdout(std::fs::File::create(&data).unwrap());
        c
    } else {
        perf_record(extra, data.to_str().unwrap(), rounds)
    };
    run_perf(&mut cmd);
    data
}

/// `perf inject --buildid-all` of `data` into `TAG.data`, run in the
/// container (where the recorded paths hold the libraries); pipe format
/// through standard input and output, or file to file.
fn inject(data: &Path, tag: &str, pipe: bool) -> PathBuf {
    let out = dir().join(format!("{tag}.data"));
    let mut cmd = if pipe {
        let mut c = in_container(&["perf".as_ref(), "inject".as_ref(), "--buildid-all".as_ref()]);
        c.stdin(std::fs::File::open(data).unwrap())
            .stdout(std::fs::File::create(&out).unwrap());
        c
    } else {
        in_container(&[
            "perf".as_ref(),
            "inject".as_ref(),
            "--buildid-all".as_ref(),
            "-i".as_ref(),
            data.as_os_str(),
            "-o".as_ref(),
            out.as_os_str(),
        ])
    };
    run_ok(&mut cmd);
    out
}

/// `faasfuse profile DATA --lib <host's libraries> -o TAG.json`.
fn profile(tag: &str, data: &Path) -> Value {
    run_profile(data, host_libs(), &dir().join(format!("{tag}.json"))).1
}

/// The profile is refused in one line that names `file` and says what
/// to record instead.
fn assert_refused(data: &Path, file: &str) {
    let err = run_refused(faasfuse().arg("profile").arg(data).args(host_libs()));
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    for s in [
        file,
        "without a build-id",
        ADVICE,
        "perf inject --buildid-all",
    ] {
        assert!(err.contains(s), "missing {s:?}: {err}");
    }
    assert!(err.contains(&mount_point().display().to_string()), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

/// The plan on the platform's exact calls: `run --json` of the unfused
/// deployment on the same requests, once per test binary.
fn exact_plan() -> &'static Value {
    static PLAN: OnceLock<Value> = OnceLock::new();
    PLAN.get_or_init(|| exact_trace_plan(&config(), inputs(), &dir().join("trace.json")))
}

/// Every decision on `data`'s profile is the exact trace's where the
/// profile has evidence, "no evidence" with the recording advice where it
/// has none; no edge the trace finds hot is called cold. DWARF chains see
/// every edge: the plans are the same.
fn assert_decides_as_the_trace(data: &Path) {
    let p = plan_json(&config(), &[data]);
    let exact = exact_plan();
    let (mine, theirs) = (plan_edges(&p), plan_edges(exact));
    assert_eq!(
        mine.len(),
        theirs.len(),
        "{}\n{}",
        p["edges"],
        exact["edges"]
    );
    for ((a, b, e), (_, _, t)) in mine.iter().zip(&theirs) {
        if e["status"] == "no evidence" {
            assert!(e["reason"].as_str().unwrap().contains("perf record"), "{e}");
        } else {
            assert_eq!(e["status"], t["status"], "{a} -> {b}: {e} vs {t}");
        }
        assert!(
            !(e["status"] == "cold" && t["status"] == "fused"),
            "{a} -> {b} hot, called cold: {e}"
        );
        assert_eq!(e["evidence"], "dwarf_chains", "{a} -> {b}: {e}");
    }
    assert_eq!(plan_groups(&p), plan_groups(exact), "{}", p["decisions"]);
    // The trace's own decisions: the two hot callees fused, Recommend cold.
    assert_eq!(edge(exact, "Pricing")["status"], "fused");
    assert_eq!(edge(exact, "Inventory")["status"], "fused");
    assert_eq!(edge(exact, "Recommend")["status"], "cold");
}

/// Samples in the libraries, mapped as the container saw them.
fn assert_mapped_in_container(p: &Value) {
    for (name, file) in LIBS.iter().take(3) {
        let img = &p["images"][name];
        assert!(img["samples"].as_u64().unwrap() > 0, "{name}: {img}");
        let srv = mount_point().join(file).display().to_string();
        assert_eq!(img["mapped_as"], serde_json::json!([srv]), "{name}");
    }
}

#[test]
fn buildid_mmap_file_at_another_path_decides_as_the_exact_trace() {
    let data = record("buildid-mmap", &["--buildid-mmap"], false, ROUNDS);
    assert_mapped_in_container(&profile("buildid-mmap", &data));
    assert_decides_as_the_trace(&data);
}

#[test]
fn buildid_mmap_piped_into_faasfuse_profile_decides_as_the_exact_trace() {
    // perf record -o - ... | faasfuse profile - --lib ...
    let out = dir().join("piped.json");
    let mut perf = perf_record(&["--buildid-mmap"], "-", ROUNDS)
        .stdout(Stdio::piped())
        .spawn()
        .expect("perf is not installed (Debian linux-perf)");
    let o = faasfuse()
        .args(["profile", "-"])
        .args(host_libs())
        .arg("-o")
        .arg(&out)
        .stdin(perf.stdout.take().unwrap())
        .output()
        .unwrap();
    assert!(perf.wait().unwrap().success());
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let p = read_json(&out);
    assert_eq!(
        p["sources"],
        serde_json::json!(["<stdin>"]),
        "{}",
        p["sources"]
    );
    assert_mapped_in_container(&p);
    assert_decides_as_the_trace(&out);
}

#[test]
fn a_pipe_without_build_ids_is_refused_until_perf_inject_adds_them() {
    let data = record("pipe-no-ids", &[], true, ROUNDS);
    assert_refused(&data, "pipe-no-ids.data");
    // The same from standard input names <stdin>.
    let err = run_refused(
        faasfuse()
            .args(["profile", "-"])
            .args(host_libs())
            .stdin(std::fs::File::open(&data).unwrap()),
    );
    assert!(err.contains("<stdin>") && err.contains(ADVICE), "{err}");
    // plan reads a perf.data as profile does: refused too.
    let err = run_refused(
        faasfuse()
            .arg("plan")
            .arg("--config")
            .arg(config())
            .arg("--profile")
            .arg(&data),
    );
    assert!(err.contains(ADVICE), "{err}");

    let injected = inject(&data, "pipe-injected", true);
    assert_mapped_in_container(&profile("pipe-injected", &injected));
    assert_decides_as_the_trace(&injected);
}

#[test]
fn a_file_without_build_ids_is_refused_until_perf_inject_adds_them() {
    // perf reads build-ids for its table after the run, when the
    // container's paths are gone: the libraries have none.
    let data = record("file-no-ids", &[], false, ROUNDS);
    assert_refused(&data, "file-no-ids.data");

    let injected = inject(&data, "file-injected", false);
    assert_mapped_in_container(&profile("file-injected", &injected));
    assert_decides_as_the_trace(&injected);
}

/// A recording of the container bind-mounting the host's own fixture
/// files (no copies) at its path, without build-ids, once per test binary.
fn same_files_recording() -> &'static Path {
    static DATA: OnceLock<PathBuf> = OnceLock::new();
    DATA.get_or_init(|| {
        let data = dir().join("same-files.data");
        let out = data.to_str().unwrap();
        run_perf(&mut perf_record_of(
            &fixtures().join("default"),
            &[],
            out,
            300,
        ));
        data
    })
}

#[test]
fn the_container_bind_mounting_the_hosts_own_files_needs_no_build_ids() {
    // The same files through a bind mount: device and inode say so.
    let p = profile("same-files", same_files_recording());
    assert_mapped_in_container(&p);
}

/// This machine's host name, as perf records it.
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap()
        .trim()
        .to_string()
}

/// `data` as if recorded on another host: a copy into `TAG.data` whose
/// host name (HEADER_HOSTNAME: a u32 length, the name NUL-padded to a
/// multiple of 64 bytes; the same bytes in a pipe's feature record) is
/// rewritten to as many `x`s, found exactly once.
fn as_if_from_another_host(data: &Path, tag: &str) -> (PathBuf, String) {
    let mut bytes = std::fs::read(data).unwrap();
    let name = hostname();
    let padded = (name.len() + 1).next_multiple_of(64);
    let mut pattern = (padded as u32).to_le_bytes().to_vec();
    pattern.extend_from_slice(name.as_bytes());
    pattern.push(0);
    let at: Vec<usize> = bytes
        .windows(pattern.len())
        .enumerate()
        .filter(|(_, w)| *w == pattern.as_slice())
        .map(|(i, _)| i)
        .collect();
    assert_eq!(
        at.len(),
        1,
        "host name {name:?} found at {at:?} in {data:?}"
    );
    let other = "x".repeat(name.len());
    bytes[at[0] + 4..at[0] + 4 + name.len()].copy_from_slice(other.as_bytes());
    let out = dir().join(format!("{tag}.data"));
    std::fs::write(&out, bytes).unwrap();
    (out, other)
}

#[test]
fn this_machines_files_prove_nothing_of_a_profile_from_another_host() {
    // Device and inode of the host's own files: proof here, none for a
    // recording of another machine, whose same numbers name other files.
    let (moved, other) = as_if_from_another_host(same_files_recording(), "same-files-elsewhere");
    let err = run_refused(faasfuse().arg("profile").arg(&moved).args(host_libs()));
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    for s in [
        "same-files-elsewhere.data",
        "without a build-id",
        &format!("recorded on host {other}"),
        ADVICE,
    ] {
        assert!(err.contains(s), "missing {s:?}: {err}");
    }
    // A file at the recorded path that is the library's build (a copy,
    // mapped by its own path, piped without build-ids) proves it here, and
    // nothing of another host's recording.
    let data = dir().join("copies-pipe.data");
    let mut cmd = Command::new("perf");
    cmd.args(["record", "-q", "-e", "cpu-clock:u", "-o", "-", "--"])
        .arg(env!("CARGO_BIN_EXE_faasfuse"))
        .arg("run");
    for (n, f) in LIBS {
        cmd.arg(format!("{n}={}", image().join(f).display()));
    }
    cmd.arg("--inputs")
        .arg(inputs())
        .args(["--quiet", "--repeat", "100", "--", "Frontend"])
        .stdout(std::fs::File::create(&data).unwrap());
    run_perf(&mut cmd);
    let p = profile("copies-pipe", &data);
    assert!(p["images"]["Frontend"]["samples"].as_u64().unwrap() > 0);
    let (moved, other) = as_if_from_another_host(&data, "copies-pipe-elsewhere");
    let err = run_refused(faasfuse().arg("profile").arg(&moved).args(host_libs()));
    assert!(
        err.contains(&format!("recorded on host {other}")) && err.contains(ADVICE),
        "{err}"
    );
}

#[test]
fn frame_pointer_profiles_are_matched_by_build_id_on_every_reading_thread() {
    // Neither DWARF stacks nor a pipe: a perf.data that the samples of are
    // counted on several threads, each resolving the container's mappings.
    let data = record("fp-buildid-mmap", &["-g", "--buildid-mmap"], false, ROUNDS);
    let read = |threads: &str, tag: &str| -> String {
        let out = dir().join(format!("{tag}.json"));
        run_ok(
            faasfuse()
                .env("FAASFUSE_THREADS", threads)
                .arg("profile")
                .arg(&data)
                .args(host_libs())
                .arg("-o")
                .arg(&out),
        );
        std::fs::read_to_string(&out).unwrap()
    };
    let (many, one) = (read("4", "fp-threads-4"), read("1", "fp-threads-1"));
    assert_eq!(many, one, "four reading threads and one disagree");
    let p: Value = serde_json::from_str(&many).unwrap();
    assert_mapped_in_container(&p);
    assert_eq!(p["stats"]["dwarf_samples"], 0, "{}", p["stats"]);
    assert!(p["stats"]["callchain_samples"].as_u64().unwrap() > 0);
    // Chains that stop at code without frame pointers: every edge is "no
    // evidence", none is called cold.
    for (a, b, e) in plan_edges(&plan_json(&config(), &[&data])) {
        assert_eq!(e["status"], "no evidence", "{a} -> {b}: {e}");
    }
    // The same recording without build-ids is refused on that path too.
    let bare = record("fp-no-ids", &["-g"], false, ROUNDS);
    for threads in ["4", "1"] {
        let err = run_refused(
            faasfuse()
                .env("FAASFUSE_THREADS", threads)
                .arg("profile")
                .arg(&bare)
                .args(host_libs()),
        );
        assert!(
            err.contains("fp-no-ids.data") && err.contains(ADVICE),
            "{err}"
        );
    }
    assert_refused(&bare, "fp-no-ids.data");
}
