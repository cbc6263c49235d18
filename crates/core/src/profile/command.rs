//! `faasfuse profile`: read profiles (perf.data, BOLT `.fdata` or
//! pre-aggregated text) over function libraries, write the profile JSON and
//! BOLT `.fdata`, print a summary; `faasfuse profile merge` sums profiles.

use std::path::{Path, PathBuf};

use anyhow::Result;
use serde::Serialize;

use super::aggregate::{Profile, FORMAT};
use super::images::Lib;
use super::planning::{self, Content};
use super::{fdata, ingest};
use crate::error::{InputError, OutputError};

/// What one `faasfuse profile` run reads and writes.
#[derive(Debug, Clone, Default)]
pub struct ProfileJob {
    /// perf.data, .fdata or pre-aggregated profiles (summed); `-` is stdin.
    pub inputs: Vec<PathBuf>,
    /// The libraries the profile covers, as `[NAME=]LIB.so`.
    pub libs: Vec<String>,
    /// Where to write the profile JSON.
    pub output: Option<PathBuf>,
    /// Where to write one BOLT `.fdata` per library.
    pub fdata_dir: Option<PathBuf>,
    /// Print the summary as JSON.
    pub json: bool,
    /// Skip malformed records (counted) instead of failing.
    pub lenient: bool,
}

/// Load the libraries named by `--lib` arguments.
pub fn load_libs(args: &[String]) -> Result<Vec<Lib>> {
    crate::spec::resolve_specs(args, None)?
        .iter()
        .map(|s| Lib::load(&s.name, &s.path))
        .collect()
}

/// Read a profile from standard input (`perf record -o - | faasfuse
/// profile -`): spooled to an unnamed temporary file, so memory stays
/// bounded as for a file; errors name `<stdin>`.
fn read_stdin(libs: &[Lib], lenient: bool) -> Result<Profile> {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::OpenOptionsExt;
    let stdin = Path::new("<stdin>");
    let mut spool = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .mode(0o600)
        .custom_flags(libc::O_TMPFILE)
        .open(std::env::temp_dir())
        .map_err(|e| InputError::new(stdin, format!("cannot spool to a temporary file: {e}")))?;
    std::io::copy(&mut std::io::stdin().lock(), &mut spool)
        .map_err(|e| InputError::new(stdin, format!("cannot read: {e}")))?;
    let path = PathBuf::from(format!("/proc/self/fd/{}", spool.as_raw_fd()));
    let mut p =
        read_input(&path, libs, lenient).map_err(|e| match e.downcast_ref::<InputError>() {
            Some(ie) if ie.path == path => InputError::new(stdin, ie.reason.clone()).into(),
            _ => e,
        })?;
    // Named as the user named it, not by the spool's descriptor.
    p.sources = vec![stdin.display().to_string()];
    Ok(p)
}

/// Read one input of any supported kind.
pub fn read_input(path: &Path, libs: &[Lib], lenient: bool) -> Result<Profile> {
    match planning::read_content(path)? {
        Content::PerfData => {
            let opts = ingest::Options {
                lenient,
                progress: true,
            };
            ingest::ingest_perf(path, libs, opts)
        }
        Content::Text(text) => fdata::ingest(path, &text, libs, lenient),
    }
}

/// Sum profile JSON files into `output`; print the summary. One input is
/// held at a time beside the sum (memory bounded by the distinct keys of
/// all, not by their number); the sum is the same bytes in any order.
pub fn merge_files(inputs: &[PathBuf], output: &Path, json: bool) -> Result<()> {
    let mut total: Option<Profile> = None;
    for p in inputs {
        let one = load_profile(p)?;
        match &mut total {
            None => total = Some(one),
            Some(t) => t.merge_counts(one).map_err(|r| InputError::new(p, r))?,
        }
    }
    let mut total = total.unwrap_or_default();
    total.derive();
    save(&total, output)?;
    report(&total, json, &[output.display().to_string()])
}

/// Read the job's profiles over its libraries, write its outputs (all or
/// none), print the summary.
pub fn run(a: ProfileJob) -> Result<()> {
    // Outputs that name one file are refused before anything is read.
    if let Some(dir) = &a.fdata_dir {
        let fdata: Vec<(String, PathBuf)> = crate::spec::resolve_specs(&a.libs, None)?
            .iter()
            .map(|s| {
                (
                    format!("--fdata-dir's {}.fdata", s.name),
                    dir.join(format!("{}.fdata", s.name)),
                )
            })
            .collect();
        let mut outputs: Vec<(&str, &Path)> =
            a.output.iter().map(|o| ("-o", o.as_path())).collect();
        outputs.extend(fdata.iter().map(|(l, p)| (l.as_str(), p.as_path())));
        crate::output::check_distinct(&outputs)?;
    }
    let libs = load_libs(&a.libs)?;
    let mut total: Option<Profile> = None;
    for p in &a.inputs {
        let one = if p.as_os_str() == "-" {
            read_stdin(&libs, a.lenient)?
        } else {
            read_input(p, &libs, a.lenient)?
        };
        match &mut total {
            None => total = Some(one),
            Some(t) => t.merge(one).map_err(|r| InputError::new(p, r))?,
        }
    }
    let profile = total.unwrap_or_default();
    // Every output staged first, then all named together.
    let mut written = Vec::new();
    let mut staged = Vec::new();
    if let Some(o) = &a.output {
        staged.push(stage(&profile, o)?);
        written.push(o.display().to_string());
    }
    if let Some(dir) = &a.fdata_dir {
        std::fs::create_dir_all(dir)
            .map_err(|e| OutputError::write(dir, format!("cannot create directory: {e}")))?;
        for lib in &libs {
            let Some(img) = profile.images.get(&lib.name) else {
                continue;
            };
            if let Some(parts) = fdata::write(lib, img) {
                let path = dir.join(format!("{}.fdata", lib.name));
                let mut s = crate::output::Staged::create(&path, false)?;
                for p in &parts {
                    use std::io::Write as _;
                    s.file()
                        .write_all(p.as_ref())
                        .map_err(|e| OutputError::write(&path, e))?;
                }
                staged.push(s);
                written.push(path.display().to_string());
            }
        }
    }
    crate::output::commit_all(staged)?;
    report(&profile, a.json, &written)
}

pub fn load_profile(path: &Path) -> Result<Profile> {
    let text = crate::files::read_text(path, "a faasfuse profile")?;
    let p: Profile = serde_json::from_str(&text)
        .map_err(|e| InputError::new(path, format!("not a faasfuse profile: {e}")))?;
    if p.format != FORMAT {
        return Err(InputError::new(
            path,
            "not a faasfuse profile (no \"format\": \"faasfuse-profile\")",
        )
        .into());
    }
    Ok(p)
}

fn save(p: &Profile, path: &Path) -> Result<()> {
    stage(p, path)?.commit()
}

/// `p` as JSON in a staged output for `path`, not yet named.
fn stage(p: &Profile, path: &Path) -> Result<crate::output::Staged> {
    use std::io::Write as _;
    // Streamed into the file: the text of a large profile (hundreds of
    // megabytes) is never held whole.
    let mut staged = crate::output::Staged::create(path, false)?;
    let cannot = |e: std::io::Error| -> anyhow::Error { OutputError::write(path, e).into() };
    let mut w = std::io::BufWriter::with_capacity(1 << 20, staged.file());
    serde_json::to_writer_pretty(&mut w, p).map_err(|e| cannot(e.into()))?;
    w.write_all(b"\n").map_err(cannot)?;
    w.flush().map_err(cannot)?;
    drop(w);
    Ok(staged)
}

/// The printed summary: what a person or a script checks first.
#[derive(Debug, Serialize)]
pub struct Summary<'a> {
    pub stats: &'a super::aggregate::Stats,
    pub calls: &'a std::collections::BTreeMap<String, std::collections::BTreeMap<String, f64>>,
    pub cpu: &'a std::collections::BTreeMap<String, f64>,
    pub images: Vec<ImageSummary>,
    pub unmatched: &'a std::collections::BTreeMap<String, u64>,
    /// What the profile can show about each RPC edge.
    pub evidence: &'a std::collections::BTreeMap<
        String,
        std::collections::BTreeMap<String, super::aggregate::Evidence>,
    >,
    pub written: &'a [String],
}

#[derive(Debug, Serialize)]
pub struct ImageSummary {
    pub name: String,
    pub build_id: Option<String>,
    pub mapped_as: Vec<String>,
    /// Files mapped under this name with another build-id (not counted).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub other_builds: Vec<String>,
    pub samples: u64,
    pub attributed_samples: u64,
    pub branches: usize,
    /// Hottest functions by attributed samples: (name, samples).
    pub top_functions: Vec<(String, u64)>,
    pub rpc_sites: Vec<super::aggregate::SiteCount>,
}

pub fn summary<'a>(p: &'a Profile, written: &'a [String]) -> Summary<'a> {
    Summary {
        stats: &p.stats,
        calls: &p.calls,
        cpu: &p.cpu,
        evidence: &p.evidence,
        images: p
            .images
            .iter()
            .map(|(name, i)| {
                let mut top: Vec<(String, u64)> = i
                    .functions
                    .iter()
                    .map(|(f, c)| (f.clone(), c.attributed.max(c.samples)))
                    .filter(|(_, n)| *n > 0)
                    .collect();
                top.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
                top.truncate(5);
                ImageSummary {
                    name: name.clone(),
                    build_id: i.build_id.clone(),
                    mapped_as: i.mapped_as.clone(),
                    other_builds: i.other_builds.clone(),
                    samples: i.samples,
                    attributed_samples: i.attributed_samples,
                    branches: i.branches.len(),
                    top_functions: top,
                    rpc_sites: i.rpc_sites.clone(),
                }
            })
            .collect(),
        unmatched: &p.unmatched,
        written,
    }
}

fn report(p: &Profile, json: bool, written: &[String]) -> Result<()> {
    let s = summary(p, written);
    if json {
        crate::output::to_stdout(&format!("{}\n", serde_json::to_string_pretty(&s)?))?;
    } else {
        crate::output::to_stdout(&render(&s))?;
    }
    Ok(())
}

fn pct(n: u64, total: u64) -> String {
    if total == 0 {
        "0.0%".into()
    } else {
        format!("{:.1}%", n as f64 * 100.0 / total as f64)
    }
}

/// The RPC edges the profile cannot see, and how to record one that does.
fn unseen_edges(o: &mut String, s: &Summary) {
    use std::fmt::Write as _;
    let unseen: Vec<String> = s
        .evidence
        .iter()
        .flat_map(|(a, m)| m.iter().map(move |(b, e)| (a, b, *e)))
        .filter(|(_, _, e)| !e.sees())
        .map(|(a, b, e)| format!("  {a} -> {b} ({})", e.describe()))
        .collect();
    if unseen.is_empty() {
        return;
    }
    let _ = writeln!(
        o,
        "\nRPC edges this profile cannot see (no evidence: their count is unknown, not zero):"
    );
    for u in unseen {
        let _ = writeln!(o, "{u}");
    }
    let _ = writeln!(o, "  to see them, {}", super::aggregate::RECORDING_ADVICE);
}

/// The summary's first lines: what the samples were and what was read.
fn sample_lines(o: &mut String, st: &super::aggregate::Stats) {
    use std::fmt::Write as _;
    let _ = writeln!(
        o,
        "{} samples ({} with branch stacks, {} with call chains), {} in the libraries ({}); {} branches counted",
        st.samples,
        st.lbr_samples,
        st.callchain_samples,
        st.matched_samples,
        pct(st.matched_samples, st.samples),
        st.branches
    );
    if st.lbr_callstack_samples > 0 {
        let _ = writeln!(
            o,
            "{} samples with LBR call stacks (`--call-graph lbr`): read as call chains, not as branches",
            st.lbr_callstack_samples
        );
    }
    if st.offcpu_samples > 0 {
        let _ = writeln!(
            o,
            "{} off-CPU samples (sched:sched_switch, not CPU time), {} of them of blocked threads",
            st.offcpu_samples, st.offcpu_blocked
        );
    }
    if st.other_samples > 0 {
        let _ = writeln!(
            o,
            "{} samples of other events (not CPU time) not read",
            st.other_samples
        );
    }
    if st.lost_samples > 0 || st.bad_records > 0 || st.unwind_failures > 0 {
        let _ = writeln!(
            o,
            "{} lost samples, {} malformed records skipped, {} stacks not unwound",
            st.lost_samples, st.bad_records, st.unwind_failures
        );
    }
}

/// The text summary.
pub fn render(s: &Summary) -> String {
    use std::fmt::Write as _;
    let st = s.stats;
    let mut o = String::new();
    sample_lines(&mut o, st);
    let mut edges: Vec<(&String, &String, f64)> = s
        .calls
        .iter()
        .flat_map(|(a, m)| m.iter().map(move |(b, n)| (a, b, *n)))
        .collect();
    edges.sort_by(|x, y| y.2.total_cmp(&x.2).then(x.0.cmp(y.0)).then(x.1.cmp(y.1)));
    let blocking = s
        .evidence
        .values()
        .flat_map(|m| m.values())
        .any(|e| *e == super::aggregate::Evidence::OffCpuChains);
    let unit = if st.lbr_samples > 0 {
        "calls"
    } else if blocking {
        "samples; of callers that block in their calls, blockings"
    } else {
        "samples"
    };
    let _ = writeln!(o, "\nRPC edges, hottest first ({unit}):");
    if edges.is_empty() {
        let _ = writeln!(o, "  (none seen)");
    }
    for (a, b, n) in &edges {
        let _ = writeln!(o, "  {a} -> {b}  {n}");
    }
    unseen_edges(&mut o, s);
    let _ = writeln!(o, "\nFunctions (CPU share of all samples):");
    let mut imgs: Vec<&ImageSummary> = s.images.iter().collect();
    imgs.sort_by(|a, b| {
        b.attributed_samples
            .cmp(&a.attributed_samples)
            .then(a.name.cmp(&b.name))
    });
    for i in imgs {
        let top: Vec<String> = i
            .top_functions
            .iter()
            .map(|(f, n)| format!("{f} {}", pct(*n, st.samples)))
            .collect();
        let _ = writeln!(
            o,
            "  {:<16} {:>6}  {} samples{}{}",
            i.name,
            pct(i.attributed_samples, st.samples),
            i.attributed_samples,
            if top.is_empty() {
                String::new()
            } else {
                format!("; {}", top.join(", "))
            },
            if i.mapped_as.is_empty() && st.samples > 0 && i.samples == 0 && i.branches == 0 {
                " (not mapped in the profile)".to_string()
            } else {
                String::new()
            }
        );
        for other in &i.other_builds {
            let _ = writeln!(
                o,
                "    warning: {other} is mapped under this name with another build-id (another build of the library): its samples are not counted"
            );
        }
        for site in &i.rpc_sites {
            let n = if st.lbr_samples > 0 {
                site.branch_count
            } else {
                site.sample_count
            };
            let off = if st.offcpu_samples > 0 {
                format!(", blocked {} times (off-CPU)", site.offcpu_count)
            } else {
                String::new()
            };
            let _ = writeln!(
                o,
                "    RPC site {:#x} in {} -> {}: {n}{off}",
                site.address,
                site.function.as_deref().unwrap_or("?"),
                site.callee
            );
        }
    }
    if !s.unmatched.is_empty() {
        let _ = writeln!(o, "\nSamples outside the libraries, by file:");
        let mut u: Vec<(&String, &u64)> = s.unmatched.iter().collect();
        u.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        for (f, n) in u.iter().take(10) {
            let _ = writeln!(o, "  {:>8}  {f}", n);
        }
        if u.len() > 10 {
            let _ = writeln!(o, "  ... and {} more files", u.len() - 10);
        }
    }
    for w in s.written {
        let _ = writeln!(o, "wrote {w}");
    }
    o
}
