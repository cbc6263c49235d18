//! The local FaaS host behind `faasfuse run`: it deploys function libraries
//! through the worker_v1 ABI and serves requests to a root function, either
//! all in this process or (`--ipc`) with nightcore's process model: a pool
//! of worker processes per function, one worker per process, never
//! re-entered, and this process as the engine relaying every call. It is
//! the oracle fused images are compared against.

mod inproc;
pub mod ipc;
mod library;
pub mod load;
mod load_guard;
pub mod stats;
mod wire;

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use serde::Serialize;

use library::Library;
pub use library::{CallResult, MAX_DEPTH};
use stats::Percentiles;

use faasfuse_core::error::InputError;
pub use faasfuse_core::spec::{check_unique, resolve_specs, FunctionSpec};

/// Environment variable that makes the host (`faasfuse run`, and each
/// `run --ipc` worker) stop itself with `SIGSTOP` once its libraries are
/// loaded and initialised, so a tracer starts recording there.
pub const TRACE_STOP_ENV: &str = "FAASFUSE_TRACE_STOP";

/// Called by the host when its libraries are ready and before it serves:
/// stops this process for a tracer if [`TRACE_STOP_ENV`] is set.
pub fn stop_for_tracer() {
    if std::env::var_os(TRACE_STOP_ENV).is_some_and(|v| v == "1") {
        // SAFETY: raising a signal in this process.
        unsafe {
            libc::raise(libc::SIGSTOP);
        }
    }
}

/// Validate each library as an x86-64 worker_v1 function library, then
/// `dlopen` it.
pub(crate) fn open_libraries(specs: &[FunctionSpec]) -> Result<Vec<Library>> {
    specs
        .iter()
        .map(|s| {
            faasfuse_core::elf::Image::load(&s.path)?.require_entry_points()?;
            Library::open(&s.name, &s.path)
        })
        .collect()
}

/// A running deployment that serves requests.
/// Nested calls by caller and callee name.
pub type CallCounts = std::collections::BTreeMap<String, std::collections::BTreeMap<String, u64>>;

pub trait Engine {
    /// Serve one request. `Err` when the request cannot be served as the
    /// platform would (a re-entry in one process, a full process pool) or
    /// the deployment broke.
    fn request(&mut self, root: &str, input: &[u8]) -> Result<CallResult>;
    /// Nested calls served so far, by caller and callee name.
    fn call_counts(&self) -> CallCounts;
    /// Workers (in-process) or worker processes (`--ipc`) started so far,
    /// per function.
    fn instances(&self) -> std::collections::BTreeMap<String, u64>;
    /// Stop serving; returns nested-call times (ns). Workers are not
    /// destroyed nor libraries unloaded: nightcore never does.
    fn shutdown(self: Box<Self>) -> Result<Vec<u64>>;
}

/// Worker processes of one function in `--ipc` mode: `min` started up
/// front, at most `max` (nightcore's `minWorkers`, `maxWorkers`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolLimits {
    pub min: usize,
    pub max: usize,
}

/// The pool size meaning "no limit": one process per nesting level a
/// request may reach (depths 0..=MAX_DEPTH). The host serves one request at
/// a time, so no more processes of a function are ever busy at once, and
/// the depth limit, not the pool, bounds recursion, as it does in-process.
pub const DEFAULT_MAX_WORKERS: usize = MAX_DEPTH as usize + 1;

impl Default for PoolLimits {
    fn default() -> Self {
        PoolLimits {
            min: 1,
            max: DEFAULT_MAX_WORKERS,
        }
    }
}

impl PoolLimits {
    /// Whether the limits allow a worker process; why not otherwise.
    pub fn check(&self) -> std::result::Result<(), String> {
        if self.max == 0 {
            Err("maxWorkers 0 allows no worker process".into())
        } else if self.min > self.max {
            Err(format!(
                "minWorkers {} exceeds maxWorkers {}",
                self.min, self.max
            ))
        } else {
            Ok(())
        }
    }

    /// From a func_config.json entry's `minWorkers`/`maxWorkers`, read as
    /// nightcore reads them: `minWorkers` absent starts one process up
    /// front, 0 or less none (the first call starts one); `maxWorkers`
    /// absent or 0 or less is no limit ([`DEFAULT_MAX_WORKERS`], or
    /// `minWorkers` when that is more).
    pub fn of_entry(f: &faasfuse_core::plan::FuncEntry) -> PoolLimits {
        let d = PoolLimits::default();
        let min = f
            .min_workers
            .map_or(d.min, |n| usize::try_from(n).unwrap_or(0));
        let max = match f.max_workers {
            Some(n) if n > 0 => usize::try_from(n).unwrap_or(usize::MAX),
            _ => d.max.max(min),
        };
        PoolLimits { min, max }
    }
}

#[derive(Debug, Clone)]
pub struct RunOptions {
    pub ipc: bool,
    /// Serve the inputs this many times (latencies are taken over all).
    pub repeat: usize,
    /// Program run as a worker process in `--ipc` mode (this executable).
    pub worker_exe: Option<PathBuf>,
    /// Functions that tolerate re-entry in one process: in-process, a
    /// nested call to one that is running gets an extra worker instead of
    /// failing. (No effect with `--ipc`: processes are never re-entered.)
    pub reentrant: Vec<String>,
    /// Process pool limits by function name (`--ipc`); default
    /// [`PoolLimits::default`].
    pub pools: std::collections::BTreeMap<String, PoolLimits>,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            ipc: false,
            repeat: 1,
            worker_exe: None,
            reentrant: Vec::new(),
            pools: Default::default(),
        }
    }
}

/// Start a deployment of `specs`.
pub fn deploy(specs: &[FunctionSpec], opts: &RunOptions) -> Result<Box<dyn Engine>> {
    check_unique(specs)?;
    for name in &opts.reentrant {
        if !specs.iter().any(|s| &s.name == name) {
            bail!(InputError::new(
                name.as_str(),
                "declared re-entrant but not deployed"
            ));
        }
    }
    if opts.ipc {
        // Validate in the engine first so bad input fails before any fork.
        for s in specs {
            faasfuse_core::elf::Image::load(&s.path)?.require_entry_points()?;
        }
        let exe = match &opts.worker_exe {
            Some(p) => p.clone(),
            None => std::env::current_exe()?,
        };
        Ok(Box::new(ipc::IpcEngine::start(specs, &opts.pools, &exe)?))
    } else {
        Ok(Box::new(inproc::InProcess::start(specs, &opts.reentrant)?))
    }
}

/// One served request.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct RequestRecord {
    pub input: String,
    pub rc: i32,
    /// The output as text (invalid UTF-8 replaced).
    pub output: String,
    /// The output bytes in lowercase hex, lossless.
    pub output_hex: String,
    pub output_len: usize,
}

/// What `faasfuse run` reports.
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    pub mode: &'static str,
    pub root: String,
    pub functions: Vec<(String, PathBuf)>,
    /// Outputs of the first pass over the inputs.
    pub results: Vec<RequestRecord>,
    /// Raw outputs of the first pass (not serialised; `results` has text).
    #[serde(skip)]
    pub raw: Vec<CallResult>,
    pub requests: usize,
    pub nested_calls: usize,
    /// Nested calls by caller and callee name, over all passes: the
    /// platform's own trace, usable as a profile by `faasfuse plan`.
    pub calls: CallCounts,
    /// Requests from outside, per function (the root's).
    pub external: std::collections::BTreeMap<String, u64>,
    pub request_latency: Option<Percentiles>,
    /// Round trip of one nested call as the calling worker sees it,
    /// including the callee's own work.
    pub nested_call_latency: Option<Percentiles>,
    /// `--ipc`: worker processes started per function (the pool sizes).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub processes: Option<std::collections::BTreeMap<String, u64>>,
    /// In-process: workers created per function (1, more for re-entrant
    /// functions that were re-entered).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workers: Option<std::collections::BTreeMap<String, u64>>,
    pub wall_ns: u64,
}

/// Deploy `specs`, serve every input to `root` `opts.repeat` times.
pub fn run(
    specs: &[FunctionSpec],
    root: &str,
    inputs: &[Vec<u8>],
    opts: &RunOptions,
) -> Result<RunReport> {
    if !specs.iter().any(|s| s.name == root) {
        let names: Vec<&str> = specs.iter().map(|s| s.name.as_str()).collect();
        bail!(InputError::new(
            root,
            format!(
                "root function is not deployed (deployed: {})",
                names.join(", ")
            )
        ));
    }
    let mut engine = deploy(specs, opts)?;
    let mut latencies = Vec::with_capacity(inputs.len() * opts.repeat.max(1));
    let mut raw = Vec::with_capacity(inputs.len());
    let start = Instant::now();
    for pass in 0..opts.repeat.max(1) {
        for (i, input) in inputs.iter().enumerate() {
            let t = Instant::now();
            let r = engine
                .request(root, input)
                .with_context(|| format!("input {} ({:?})", i + 1, escape(input)))?;
            latencies.push(t.elapsed().as_nanos() as u64);
            if pass == 0 {
                raw.push(r);
            }
        }
    }
    let wall_ns = start.elapsed().as_nanos() as u64;
    let calls = engine.call_counts();
    let instances = engine.instances();
    let nested = engine.shutdown()?;
    let results = inputs
        .iter()
        .zip(&raw)
        .map(|(i, r)| RequestRecord {
            input: String::from_utf8_lossy(i).into_owned(),
            rc: r.rc,
            output: String::from_utf8_lossy(&r.output).into_owned(),
            output_hex: r.output.iter().map(|b| format!("{b:02x}")).collect(),
            output_len: r.output.len(),
        })
        .collect();
    Ok(RunReport {
        mode: if opts.ipc { "ipc" } else { "in-process" },
        root: root.to_string(),
        functions: specs
            .iter()
            .map(|s| (s.name.clone(), s.path.clone()))
            .collect(),
        results,
        raw,
        requests: latencies.len(),
        nested_calls: nested.len(),
        calls,
        external: [(root.to_string(), latencies.len() as u64)].into(),
        request_latency: Percentiles::of(&latencies),
        nested_call_latency: Percentiles::of(&nested),
        processes: opts.ipc.then(|| instances.clone()),
        workers: (!opts.ipc).then_some(instances),
        wall_ns,
    })
}

/// Output bytes as one line of text: printable ASCII as is, `\\`, `\n`,
/// `\t` and `\xNN` for the rest.
pub fn escape(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len());
    for &b in bytes {
        match b {
            b'\\' => s.push_str("\\\\"),
            b'\n' => s.push_str("\\n"),
            b'\t' => s.push_str("\\t"),
            0x20..=0x7e => s.push(b as char),
            _ => s.push_str(&format!("\\x{b:02x}")),
        }
    }
    s
}
