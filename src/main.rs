//! The faasfuse command line: parses arguments, calls pipeline stages,
//! prints. No logic of its own.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use faasfuse_core::output::to_stdout;

use faasfuse_core::error::{exit_code, one_line, InputError, OutputError};
use faasfuse_host::{stats::human, RunOptions};

#[derive(Parser)]
#[command(
    name = "faasfuse",
    version,
    about = "Fuse serverless function libraries into one ELF shared object",
    long_about = "faasfuse reads nightcore-style function libraries (x86-64 ELF shared \
objects exporting the worker_v1 ABI) and production profiles, finds the hot RPC edges \
between functions, and writes fused shared objects in which those RPCs run as direct \
calls in one process.\n\n\
Start with `faasfuse inspect LIB.so` to see a library's RPC call sites, and \
`faasfuse run` to serve requests from libraries on a local FaaS host. In CI: \
`faasfuse profile perf.data --lib ...` reads a production profile, `faasfuse build` \
plans fusion groups from it and writes the fused deployment; `faasfuse merge` fuses \
given libraries directly.",
    after_help = "Exit codes: 0 success, 1 failure, 2 bad input (the message names the file)."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Report what a function library holds: ELF facts, ABI entry points,
    /// functions and RPC call sites.
    #[command(
        after_help = "Examples:\n  faasfuse inspect libfoo.so\n  faasfuse inspect --json libfoo.so | jq '.rpc_sites'"
    )]
    Inspect {
        /// The shared object to inspect.
        library: PathBuf,
        /// Print one JSON object instead of the text report.
        #[arg(long)]
        json: bool,
    },
    /// Serve requests on a local FaaS host (the unfused or fused deployment).
    #[command(
        long_about = "Deploy function libraries on a local FaaS host and send each INPUT \
to the ROOT function. The host reproduces nightcore's process model: each library is \
loaded (dlopen RTLD_LAZY) and never unloaded, faas_init runs once, exactly one worker is \
created (faas_create_func_worker) before the first request and reused for every call, one \
call at a time, and never destroyed; a busy worker is never re-entered. Every call gets a \
private copy of its input followed by a NUL byte. Nested calls (invoke) are routed by \
function name; calls to names that are not deployed fail. A nested call from a thread \
other than the one running the caller's current call fails (-1, one line on stderr).\n\n\
With --ipc (nightcore's model): a pool of worker processes per function, this process \
being the engine relaying every call over Unix sockets, so each nested call pays a real \
inter-process round trip. A call goes to an idle process of the callee; if none is idle a \
new one starts, up to maxWorkers (both from func_config.json with --config; minWorkers \
start up front, 1 when absent, none when 0 or less; maxWorkers absent or 0 or less is no \
limit, as in nightcore: 65, one per nesting level, which the depth limit never fills). Recursion A->A \
reaches a second process of A. A call that finds every process busy on the call stack \
and the pool full fails the request (nightcore would wait forever).\n\n\
By default every library runs in this process with its one worker: a nested call to a \
function that is already running on the call stack fails the request, since one process \
cannot serve it as nightcore would, unless the function is declared re-entrant \
(--reentrant NAME, or \"reentrant\": true in func_config.json); then an extra worker per \
nesting depth serves it.\n\n\
Nesting is limited to 64 nested levels; a deeper call fails with -1.\n\n\
Output: one line per input, `rc=<return code>\\t<output>` (non-printable bytes escaped); \
with --json, `results[].output_hex` has the exact bytes.",
        after_help = "Examples:\n  faasfuse run libfoo.so libbar.so -- Foo world\n  \
faasfuse run Foo=build/libfoo.so Bar=build/libbar.so --ipc --repeat 10000 -- Foo world\n  \
faasfuse run libfoo.so libbar.so --inputs requests.txt --json -- Foo\n  \
faasfuse run libloop.so --reentrant Loop -- Loop abc\n  \
faasfuse run libecho.so --inputs records.bin --inputs-format len32 --json -- Echo"
    )]
    Run {
        /// Functions to deploy, as NAME=LIB.so or LIB.so (the name is then the
        /// file stem without `lib`, matched case-insensitively to the names
        /// callers use: libbar.so serves Bar).
        #[arg(required_unless_present = "config", value_name = "[NAME=]LIB.so")]
        functions: Vec<String>,
        /// Deploy every function of a func_config.json (e.g. the one
        /// `faasfuse build` writes), in addition to any given libraries.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// The library of a --config function as NAME=PATH (repeatable), for
        /// a config without `library` fields (nightcore's own).
        #[arg(long = "lib", value_name = "NAME=PATH", requires = "config")]
        libs: Vec<String>,
        /// Run every function in a pool of worker processes, nightcore's
        /// model (real IPC per call).
        #[arg(long)]
        ipc: bool,
        /// Declare function NAME re-entrant: in-process, a nested call to it
        /// while it runs gets an extra worker instead of failing (repeatable).
        #[arg(long, value_name = "NAME")]
        reentrant: Vec<String>,
        /// Serve the inputs N times and print latency percentiles.
        #[arg(long, default_value_t = 1, value_name = "N")]
        repeat: usize,
        /// Read more inputs from FILE (`-` for stdin), in --inputs-format.
        #[arg(long, value_name = "FILE")]
        inputs: Option<PathBuf>,
        /// How --inputs is split: `lines` (one input per line, a trailing
        /// `\r` dropped) or `len32` (records of a 4-byte little-endian
        /// length then that many bytes, for binary inputs).
        #[arg(long, value_enum, default_value_t = InputsFormat::Lines, value_name = "FORMAT")]
        inputs_format: InputsFormat,
        /// Print one JSON report instead of text.
        #[arg(long)]
        json: bool,
        /// Do not print outputs, only the latency summary.
        #[arg(long)]
        quiet: bool,
        /// The root function, then its inputs.
        #[arg(last = true, required = true, value_name = "ROOT INPUT")]
        request: Vec<String>,
    },
    /// Fuse a root function library and its callees into one shared object.
    #[command(
        long_about = "Fuse function libraries into one ELF shared object that the unchanged \
platform loads as the root function. Every RPC from the root (or a fused callee) to a \
fused callee runs in-process through the fusion runtime; calls to any other name still go \
to the host. The first library is the root; every other library must be reachable from it \
through RPC call sites (see `faasfuse inspect`).\n\n\
The output is verified (`faasfuse verify`) before it replaces OUT.so; on any error no \
output file appears. Same inputs give the same bytes.\n\n\
Every input's DWARF is carried, shifted to where its image lands, so gdb, addr2line and \
perf resolve callee code as in its own library; an image whose DWARF cannot be read \
completely is left out, and the manifest's `debug_info` says why (`faasfuse inspect` \
tells beforehand).",
        after_help = "Examples:\n  faasfuse merge libfoo.so libbar.so -o libfoo.fused.so\n  \
faasfuse merge libfoo.so libbar.so --profile perf.data -o libfoo.fused.so\n  \
faasfuse merge libfoo.so libbar.so --profile Foo=foo.fdata -o libfoo.fused.so\n  \
faasfuse merge ComposePost=libcomposepost.so libtext.so libuniqueid.so -o fused.so --manifest fused.json"
    )]
    Merge {
        /// The root library first, then its callees, as [NAME=]LIB.so.
        #[arg(required = true, value_name = "[NAME=]LIB.so")]
        libraries: Vec<String>,
        /// The fused shared object to write.
        #[arg(short, long, value_name = "OUT.so")]
        output: PathBuf,
        /// Also write the manifest (inputs, edges, RPC sites, decisions) as JSON.
        #[arg(long, value_name = "FILE")]
        manifest: Option<PathBuf>,
        /// A profile of the unfused deployment, of any kind `faasfuse plan`
        /// reads (perf.data, BOLT .fdata as FILE or NAME=FILE, pre-aggregated
        /// text, profile or weights JSON, a `run --json` trace), recognised
        /// by content; a perf.data is read over the given libraries, matched
        /// by build-id.
        /// Fuse only the callees the planner chooses for the root (hot
        /// edges, within budgets), and say why per callee; without it every
        /// reachable callee is fused. Repeat to sum several profiles (a
        /// trace adds only edges no sample names; see `plan --help`).
        #[arg(long, value_name = "PROFILE")]
        profile: Vec<PathBuf>,
        /// Print the manifest as JSON on stdout.
        #[arg(long)]
        json: bool,
        /// Skip verifying the output.
        #[arg(long)]
        no_verify: bool,
        /// How far to rewrite RPC call sites: `none` keeps every site an
        /// indirect call through the fusion runtime (tier 0), `dispatch`
        /// makes each a direct call of the runtime's dispatcher (tier 1),
        /// `direct` also calls a constant-named fused callee's entry stub
        /// directly (tier 2). Each lowered site is guarded: if its target at
        /// run time is not the runtime, the original target is called.
        #[arg(long, value_enum, default_value_t = faasfuse_core::lower::Level::Direct)]
        lower: faasfuse_core::lower::Level,
        /// Declare function NAME re-entrant (repeatable): a call into it while
        /// it is already running is served in-process by an extra worker. By
        /// default such a call stays an RPC through the host, because the
        /// platform never re-enters a busy worker process and a function may
        /// rely on that (state in globals, a static buffer).
        #[arg(long, value_name = "NAME", value_delimiter = ',')]
        reentrant: Vec<String>,
        /// Keep every fused callee apart from its callers. `none` (the
        /// default, the cheapest call): a callee runs on its caller's stack
        /// and can read its frames and data, and a crash in it takes down
        /// the group's process. `stack`: each callee runs on a stack of its
        /// own with a guard region (a few ns per call), so none of its
        /// callers' frames lies above its own, and a fault in it (a bad
        /// pointer, a stack overflow) fails its call with -1 as a crashed
        /// callee process would, the root serving on, and the host serves
        /// that callee from then on. Neither keeps a callee from the
        /// caller's globals or the shared heap. Per function in
        /// func_config.json: "isolate": "stack".
        #[arg(long, value_enum, default_value_t = faasfuse_core::merge::Isolation::None)]
        isolate: faasfuse_core::merge::Isolation,
    },
    /// Choose fusion groups for a deployment from a profile.
    #[command(
        long_about = "Build the RPC graph of a deployment (functions from func_config.json, \
RPC edges from the profile's call counts and the libraries' static call sites) and choose \
fusion groups: one per entry function (entries marked \"entry\": true, else functions no \
other function calls), holding the callees that remove the most RPC cost.\n\n\
Cost model: an edge's calls times --rpc-cost-us, credited to a group for the share of the \
caller's executions that run inside it. Never fused: edges called on fewer than \
--cold of their caller's executions, functions of another trust domain (\"domain\"), \
callees that break the root's maxImageBytes, cpuBudget or maxMemoryBytes. Groups with up \
to 14 candidate callees are solved exactly (every subset), larger ones by a lazy greedy \
search with one-call lookahead, then local search. With \
--previous, a root keeps its previous group unless the new one removes more than \
--hysteresis more cost.\n\n\
PROFILE is any profile faasfuse reads, recognised by its content, not its name:\n\
- a perf.data (file or pipe format; LBR branch stacks or call chains, `-g` or \
`--call-graph dwarf`), read over the deployment's libraries matched by build-id (as \
`faasfuse profile --lib` does); a perf.data that maps none of them is an error;\n\
- a BOLT .fdata (perf2bolt's or `faasfuse profile --fdata-dir`'s): it names no image, so \
it belongs to the library its file stem names (Foo.fdata, libfoo.so.fdata), else to the \
only library whose code has an instruction at every location it names; give NAME=FILE \
to say which function's library it is;\n\
- BOLT pre-aggregated text (`B`/`S`/`T` records; build-id:address locations, or plain \
addresses with NAME=FILE);\n\
- a profile JSON from `faasfuse profile`, a weights JSON \
({\"calls\": {\"Caller\": {\"Callee\": N}}, \"cpu\": {\"F\": share}, \"external\": {\"F\": N}});\n\
- a platform trace (a `faasfuse run --json` report).\n\
Sampled inputs are summed. A trace only adds what no sample names: edges the samples give \
no count (callees named at run time, callers no sample covers) and request counts; where \
samples name an edge its sampled count stays. What a trace adds is scaled to the samples' \
window by the samples' calls over the trace's calls on the edges both name (1 when they \
share none).",
        after_help = "Examples:\n  faasfuse plan --config func_config.json --profile perf.data\n  \
faasfuse plan --config func_config.json --lib Foo=libfoo.so --lib Bar=libbar.so --profile Foo.fdata\n  \
faasfuse plan --config func_config.json --profile new.json --previous plan.json -o plan.json --svg graph.svg"
    )]
    Plan {
        #[command(flatten)]
        inputs: PlanInputs,
        /// Write the plan as JSON.
        #[arg(short, long, value_name = "plan.json")]
        output: Option<PathBuf>,
        /// Write the RPC graph in Graphviz DOT.
        #[arg(long, value_name = "FILE")]
        dot: Option<PathBuf>,
        /// Write the RPC graph as SVG (needs Graphviz `dot`; DOT is written beside).
        #[arg(long, value_name = "FILE")]
        svg: Option<PathBuf>,
        /// Print the plan as JSON instead of the table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        tuning: Tuning,
    },
    /// Plan, fuse every group, verify, and write the fused deployment.
    #[command(
        long_about = "The CI step: `faasfuse plan`, then `faasfuse merge` and `faasfuse verify` \
for every group with callees, then OUT_DIR/func_config.json pointing each group's root at \
its fused image (every other function keeps its library and still serves RPCs that were \
not fused), OUT_DIR/plan.json and the RPC graph (graph.dot, graph.svg with Graphviz).\n\n\
The deployment is written whole or not at all: every file is staged first and named only \
when every group is fused, verified and within its budget; on any error OUT_DIR is left as \
it was (absent, or holding what it held).",
        after_help = "Example:\n  faasfuse build --config func_config.json --profile profile.json --out-dir fused/\n  \
faasfuse run --config fused/func_config.json --ipc -- Frontend 'red shoes'"
    )]
    Build {
        #[command(flatten)]
        inputs: PlanInputs,
        #[arg(long, value_name = "DIR")]
        out_dir: PathBuf,
        /// How far to rewrite RPC call sites (see `faasfuse merge --help`).
        #[arg(long, value_enum, default_value_t = faasfuse_core::lower::Level::Direct)]
        lower: faasfuse_core::lower::Level,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        tuning: Tuning,
    },
    Profile(faasfuse_core::profile::cli::ProfileArgs),
    /// Check a (fused) function library: segments, dynamic entries,
    /// relocations, unwind table, exports, and a load test.
    Verify {
        library: PathBuf,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Load test child of `verify` (internal).
    #[command(name = "__load", hide = true)]
    Load {
        library: PathBuf,
    },
    /// Worker process of `run --ipc` (internal).
    #[command(name = "__worker", hide = true)]
    Worker {
        #[arg(long)]
        fd: i32,
        #[arg(long)]
        name: String,
        library: PathBuf,
    },
}

/// What `plan` and `build` read.
#[derive(clap::Args)]
struct PlanInputs {
    /// The deployment: nightcore's func_config.json, with a `library` per
    /// entry or the libraries given with --lib.
    #[arg(long, value_name = "func_config.json")]
    config: PathBuf,
    /// The library of function NAME (repeatable), for a config without
    /// `library` fields (nightcore's own); replaces a `library` field.
    #[arg(long = "lib", value_name = "NAME=PATH")]
    libs: Vec<String>,
    /// One or more profiles of any kind (see --help): perf.data, BOLT
    /// .fdata ([NAME=]FILE) or pre-aggregated text, `faasfuse profile` or
    /// weights JSON, platform traces (`faasfuse run --json` reports).
    #[arg(long, value_name = "PROFILE", required = true, num_args = 1..)]
    profile: Vec<PathBuf>,
    /// The plan in force; its groups are kept unless clearly beaten.
    #[arg(long, value_name = "plan.json")]
    previous: Option<PathBuf>,
}

/// Planner settings shared by `plan` and `build`.
#[derive(clap::Args)]
struct Tuning {
    /// Cost of one RPC in microseconds.
    #[arg(long, default_value_t = 39.0, value_name = "US")]
    rpc_cost_us: f64,
    /// Edges called on fewer than this share of their caller's executions
    /// stay RPCs.
    #[arg(long, default_value_t = 0.01, value_name = "SHARE")]
    cold: f64,
    /// Keep a previous group unless the new one removes more than this share
    /// more cost.
    #[arg(long, default_value_t = 0.10, value_name = "SHARE")]
    hysteresis: f64,
    /// Use the greedy heuristic for every group (see --help).
    #[arg(long)]
    heuristic: bool,
}

impl Tuning {
    fn options(&self) -> faasfuse_core::plan::Options {
        faasfuse_core::plan::Options {
            rpc_cost_us: self.rpc_cost_us,
            cold_threshold: self.cold,
            hysteresis: self.hysteresis,
            heuristic_only: self.heuristic,
        }
    }
}

/// Write `value` as JSON to `file` (if given), and print it as JSON or as
/// the human `text`.
fn report_out<T: serde::Serialize>(
    value: &T,
    file: Option<&std::path::Path>,
    json: bool,
    text: String,
) -> Result<()> {
    let j = serde_json::to_string_pretty(value)?;
    if let Some(f) = file {
        faasfuse_core::output::write_atomically(f, format!("{j}\n").as_bytes(), false)?;
    }
    if json {
        to_stdout(&format!("{j}\n"))?;
    } else {
        to_stdout(&text)?;
    }
    Ok(())
}

/// Refuse outputs that are not regular files, or that are one of the
/// inputs (same device and inode), before any work is done.
fn refuse_inputs_as_outputs<'a>(
    inputs: impl Iterator<Item = &'a std::path::Path>,
    outputs: impl IntoIterator<Item = Option<&'a std::path::Path>>,
) -> Result<()> {
    for i in inputs {
        // A NAME=FILE profile names FILE.
        let p = i
            .to_str()
            .and_then(|s| s.split_once('='))
            .map(|(_, f)| std::path::Path::new(f));
        for cand in [Some(i), p].into_iter().flatten() {
            if let Ok(m) = std::fs::metadata(cand) {
                faasfuse_core::files::note_input(cand, &m);
            }
        }
    }
    for o in outputs.into_iter().flatten() {
        faasfuse_core::output::check_destination(o)?;
    }
    Ok(())
}

/// What `plan` and `build` read: the deployment, the profile's weights
/// and the previous plan, if any.
fn planning_inputs(
    i: &PlanInputs,
) -> Result<(
    faasfuse_core::plan::Config,
    faasfuse_core::plan::Weights,
    Option<faasfuse_core::plan::Plan>,
)> {
    let config = faasfuse_core::plan::Config::load_with(&i.config, &i.libs)?;
    let functions: Vec<(String, PathBuf)> = config
        .functions
        .iter()
        .map(|f| (f.func_name.clone(), f.library.clone()))
        .collect();
    let weights = faasfuse_core::plan::load_weights(&i.profile, &functions)?;
    Ok((
        config,
        weights,
        i.previous
            .as_deref()
            .map(faasfuse_core::plan::Plan::load)
            .transpose()?,
    ))
}

fn main() -> ExitCode {
    faasfuse_core::output::install_signal_cleanup();
    std::panic::set_hook(Box::new(|info| {
        let what = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_default();
        let at = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        eprintln!(
            "faasfuse: internal error: {}{at}",
            faasfuse_core::error::escape_controls(&what.replace('\n', " "))
        );
    }));
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion)
                || e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
            {
                let _ = e.print();
                return ExitCode::SUCCESS;
            }
            // One line: clap's first line, without its "error: " prefix.
            let text = e.render().to_string();
            let first = text
                .lines()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("invalid arguments")
                .trim_start_matches("error: ")
                .to_string();
            eprintln!(
                "faasfuse: error: {} (see faasfuse --help)",
                faasfuse_core::error::escape_controls(&first)
            );
            return ExitCode::from(2);
        }
    };
    match dispatch(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("faasfuse: error: {}", one_line(&e));
            ExitCode::from(exit_code(&e) as u8)
        }
    }
}

fn dispatch(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Inspect { library, json } => {
            let report = faasfuse_core::inspect::inspect(&library)?;
            if json {
                to_stdout(&format!("{}\n", serde_json::to_string_pretty(&report)?))?;
            } else {
                to_stdout(&report.render())?;
            }
            Ok(())
        }
        Command::Run {
            functions,
            config,
            libs,
            ipc,
            reentrant,
            repeat,
            inputs,
            inputs_format,
            json,
            quiet,
            request,
        } => {
            let root = request[0].clone();
            let mut all_inputs: Vec<Vec<u8>> =
                request[1..].iter().map(|s| s.as_bytes().to_vec()).collect();
            if let Some(file) = &inputs {
                all_inputs.extend(read_inputs(file, inputs_format)?);
            }
            let mut specs = faasfuse_host::resolve_specs(&functions, Some(&root))?;
            let mut opts = RunOptions {
                ipc,
                repeat,
                reentrant,
                ..RunOptions::default()
            };
            if let Some(c) = &config {
                let c = faasfuse_core::plan::Config::load_with(c, &libs)?;
                for f in &c.functions {
                    specs.push(faasfuse_host::FunctionSpec {
                        name: f.func_name.clone(),
                        path: f.library.clone(),
                    });
                    if f.reentrant == Some(true) {
                        opts.reentrant.push(f.func_name.clone());
                    }
                    let limits = faasfuse_host::PoolLimits::of_entry(f);
                    if let Err(why) = limits.check() {
                        bail!(InputError::new(&c.path, format!("{}: {why}", f.func_name)));
                    }
                    opts.pools.insert(f.func_name.clone(), limits);
                }
                faasfuse_host::check_unique(&specs)?;
            }
            let report = faasfuse_host::run(&specs, &root, &all_inputs, &opts)?;
            if json {
                return to_stdout(&format!("{}\n", serde_json::to_string_pretty(&report)?));
            }
            let mut out = Vec::new();
            if !quiet {
                for r in &report.raw {
                    writeln!(out, "rc={}\t{}", r.rc, faasfuse_host::escape(&r.output))?;
                }
            }
            if repeat > 1 || quiet {
                if let Some(p) = &report.request_latency {
                    writeln!(
                        out,
                        "{} mode: {} requests, request latency p50 {} p99 {}",
                        report.mode,
                        p.count,
                        human(p.p50_ns),
                        human(p.p99_ns)
                    )?;
                }
                if let Some(p) = &report.nested_call_latency {
                    writeln!(
                        out,
                        "{} nested calls, nested call round trip p50 {} p99 {}",
                        p.count,
                        human(p.p50_ns),
                        human(p.p99_ns)
                    )?;
                }
            }
            to_stdout(&String::from_utf8_lossy(&out))?;
            Ok(())
        }
        Command::Merge {
            libraries,
            output,
            manifest,
            profile,
            json,
            no_verify,
            lower,
            reentrant,
            isolate,
        } => {
            let mut specs = faasfuse_host::resolve_specs(&libraries, None)?;
            if let Some(m) = &manifest {
                faasfuse_core::output::check_distinct(&[("-o", &output), ("--manifest", m)])?;
            }
            refuse_inputs_as_outputs(
                specs
                    .iter()
                    .map(|s| s.path.as_path())
                    .chain(profile.iter().map(|p| p.as_path())),
                [Some(output.as_path()), manifest.as_deref()],
            )?;
            let mut opts = faasfuse_core::merge::MergeOptions {
                level: lower,
                reentrant: reentrant.into_iter().collect(),
                isolate,
                isolate_fn: Default::default(),
            };
            opts.check(&specs)?;
            let mut planned = None;
            if let Some(p) = profile.first() {
                let functions: Vec<(String, PathBuf)> = specs
                    .iter()
                    .map(|s| (s.name.clone(), s.path.clone()))
                    .collect();
                let w = faasfuse_core::plan::load_weights(&profile, &functions)?;
                let (chosen, plan) = faasfuse_core::build::plan_merge(
                    &specs,
                    &w,
                    p,
                    &faasfuse_core::plan::Options::default(),
                )?;
                specs = chosen;
                planned = Some(plan);
            }
            let exe = std::env::current_exe()?;
            let verify_with = (!no_verify).then_some(exe.as_path());
            opts.reentrant
                .retain(|r| specs.iter().any(|s| &s.name == r));
            // The image and the manifest appear together or not at all.
            let mut staged_manifest = manifest
                .as_deref()
                .map(|m| faasfuse_core::output::Staged::create(m, false))
                .transpose()?;
            let image = faasfuse_core::output::Staged::create(&output, true)?;
            let (mut report, image) =
                faasfuse_core::merge::merge_staged(&specs, image, verify_with, &opts)?;
            if let Some(p) = planned {
                report.notes.extend(
                    p.decisions
                        .iter()
                        .map(|d| format!("profile: {} <- {}: {}", d.root, d.function, d.reason)),
                );
            }
            let mut files = vec![image];
            if let Some(mut m) = staged_manifest.take() {
                let text = format!("{}\n", serde_json::to_string_pretty(&report)?);
                m.file()
                    .write_all(text.as_bytes())
                    .map_err(|e| OutputError::write(m.dest(), e))?;
                files.push(m);
            }
            faasfuse_core::output::commit_all(files)?;
            report_out(&report, None, json, faasfuse_core::merge::render(&report))
        }
        Command::Plan {
            inputs,
            output,
            dot,
            svg,
            json,
            tuning,
        } => {
            // The DOT file is written beside --svg when --dot is not given.
            let dot_path = dot
                .clone()
                .or_else(|| svg.as_ref().map(|s| s.with_extension("dot")));
            let dot_label = if dot.is_some() {
                "--dot"
            } else {
                "the DOT file written beside --svg"
            };
            faasfuse_core::output::check_distinct(
                &[
                    ("-o", output.as_deref()),
                    (dot_label, dot_path.as_deref()),
                    ("--svg", svg.as_deref()),
                ]
                .into_iter()
                .filter_map(|(l, p)| Some((l, p?)))
                .collect::<Vec<_>>(),
            )?;
            let (c, w, prev) = planning_inputs(&inputs)?;
            let p = faasfuse_core::plan::plan(
                &c,
                &w,
                &inputs.profile[0],
                &tuning.options(),
                prev.as_ref(),
            )?;
            // Every output or none.
            let plan_json = format!("{}\n", serde_json::to_string_pretty(&p)?);
            let (dot_text, svg_bytes) = match &dot_path {
                Some(_) => {
                    let (d, s) = faasfuse_core::build::graph_files(&p);
                    (d, if svg.is_some() { s } else { None })
                }
                None => (String::new(), None),
            };
            let mut files: Vec<(&std::path::Path, &[u8], bool)> = Vec::new();
            if let Some(d) = &dot_path {
                files.push((d, dot_text.as_bytes(), false));
            }
            if let (Some(s), Some(b)) = (&svg, &svg_bytes) {
                files.push((s, b, false));
            }
            if let Some(o) = &output {
                files.push((o, plan_json.as_bytes(), false));
            }
            faasfuse_core::output::write_all_atomically(&files)?;
            if let (Some(d), None) = (&dot_path, &svg_bytes) {
                if svg.is_some() {
                    eprintln!(
                        "faasfuse: Graphviz `dot` not found: wrote {} only",
                        d.display()
                    );
                }
            }
            report_out(&p, None, json, faasfuse_core::plan::table(&p))
        }
        Command::Build {
            inputs,
            out_dir,
            lower,
            json,
            tuning,
        } => {
            let (c, w, prev) = planning_inputs(&inputs)?;
            let exe = std::env::current_exe()?;
            let (p, built) = faasfuse_core::build::build(
                &c,
                &w,
                &inputs.profile[0],
                &tuning.options(),
                prev.as_ref(),
                &out_dir,
                lower,
                Some(&exe),
            )?;
            if json {
                to_stdout(&format!("{}\n", serde_json::to_string_pretty(&built)?))?;
            } else {
                to_stdout(&faasfuse_core::plan::table(&p))?;
                to_stdout("\n")?;
                for i in &built.images {
                    to_stdout(&format!(
                        "fused {} ({} B): {}\n",
                        i.members.join(" + "),
                        i.bytes,
                        i.path
                    ))?;
                }
                to_stdout(&format!("deployment: {}\n", built.config))?;
                to_stdout(&format!(
                    "graph: {}\n",
                    built.graph_svg.as_deref().unwrap_or(&built.graph_dot)
                ))?;
            }
            Ok(())
        }
        Command::Profile(a) => faasfuse_core::profile::cli::run(a),
        Command::Verify { library, json } => {
            let exe = std::env::current_exe()?;
            let report = faasfuse_core::verify::verify(&library, Some(&exe))?;
            if json {
                to_stdout(&format!("{}\n", serde_json::to_string_pretty(&report)?))?;
            } else {
                to_stdout(&report.render())?;
            }
            // A library that fails a check is damaged input, as `merge`
            // would say of it: exit 2 naming it and the first failed check.
            if let Some(c) = report.checks.iter().find(|c| !c.ok) {
                return Err(InputError::new(
                    &library,
                    format!("verification failed: {}: {}", c.name, c.detail),
                )
                .into());
            }
            Ok(())
        }
        Command::Load { library } => faasfuse_host::load::load_in_this_process(&library),
        Command::Worker { fd, name, library } => {
            faasfuse_host::ipc::worker_main(fd, &name, &library)
        }
    }
}

/// How `run --inputs` splits its file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum InputsFormat {
    /// One input per line.
    Lines,
    /// Records: a 4-byte little-endian length, then that many bytes.
    Len32,
}

fn read_inputs(file: &PathBuf, format: InputsFormat) -> Result<Vec<Vec<u8>>> {
    let mut text = Vec::new();
    if file.as_os_str() == "-" {
        std::io::stdin()
            .read_to_end(&mut text)
            .context("reading stdin")?;
    } else {
        text = faasfuse_core::files::read(
            file,
            faasfuse_core::files::MAX_TEXT_BYTES,
            "an inputs file",
        )
        .map_err(|e| InputError::new(file, format!("cannot read inputs: {}", e.reason)))?;
    }
    if format == InputsFormat::Len32 {
        return split_len32(&text).map_err(|(offset, why)| {
            InputError::new(
                file,
                format!("truncated len32 record at byte {offset}: {why}"),
            )
            .into()
        });
    }
    Ok(text
        .split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l).to_vec())
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .skip_while(|l| l.is_empty())
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect())
}

/// Split `len32` records; a truncated one gives its byte offset and why.
fn split_len32(mut data: &[u8]) -> std::result::Result<Vec<Vec<u8>>, (usize, String)> {
    let total = data.len();
    let mut out = Vec::new();
    while !data.is_empty() {
        let offset = total - data.len();
        let Some((head, rest)) = data.split_first_chunk::<4>() else {
            return Err((
                offset,
                format!("{} bytes left, a length needs 4", data.len()),
            ));
        };
        let len = u32::from_le_bytes(*head) as usize;
        if rest.len() < len {
            return Err((
                offset,
                format!("length {len} but only {} bytes follow", rest.len()),
            ));
        }
        out.push(rest[..len].to_vec());
        data = &rest[len..];
    }
    Ok(out)
}
