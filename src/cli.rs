//! The command line's grammar: every command, argument and help text.
//! Nothing here runs; `commands` does.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

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
    after_help = "Exit codes: 0 success, 1 failure, 2 bad input or usage (the message names the \
file), 3 an output could not be written (the message names it), 101 an internal error."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Report what a function library holds: ELF facts, ABI entry points,
    /// functions and RPC call sites.
    #[command(
        after_help = "Examples:\n  faasfuse inspect libfoo.so\n  faasfuse inspect --json libfoo.so | jq '.rpc_sites'"
    )]
    Inspect(InspectArgs),
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
    Run(RunArgs),
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
    Merge(MergeArgs),
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
- a perf.data (file or pipe format; LBR branch stacks, or call chains: `-g`, \
`--call-graph dwarf` or LBR call stacks `--call-graph lbr`, and off-CPU stacks of \
`-e sched:sched_switch`, which count the calls of callers that block while their callees run \
in other processes), read over the deployment's libraries matched by build-id (as \
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
    Plan(PlanArgs),
    /// Plan, fuse every group, verify, and write the fused deployment.
    #[command(
        long_about = "The CI step: `faasfuse plan`, then `faasfuse merge` and `faasfuse verify` \
for every group that removes RPCs, then DIR/func_config.json pointing each group's root at \
its fused image (every other function keeps its library and still serves RPCs that were \
not fused), DIR/launch.sh (one nightcore launcher per function), DIR/plan.json and the RPC \
graph (graph.dot, graph.svg with Graphviz).\n\n\
The deployment is written whole or not at all: every file is staged first and named only \
when every group is fused, verified and within its budget; on any error DIR is left as \
it was (absent, or holding what it held).",
        after_help = "Example:\n  faasfuse build --config func_config.json --profile profile.json --out-dir fused/\n  \
faasfuse run --config fused/func_config.json --ipc -- Frontend 'red shoes'"
    )]
    Build(BuildArgs),
    Profile(ProfileArgs),
    /// Check a (fused) function library: segments, dynamic entries,
    /// relocations, unwind table, exports, and a load test.
    Verify(VerifyArgs),
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

#[derive(clap::Args)]
pub struct InspectArgs {
    /// The shared object to inspect.
    pub library: PathBuf,
    /// Print one JSON object instead of the text report.
    #[arg(long)]
    pub json: bool,
}

#[derive(clap::Args)]
pub struct RunArgs {
    /// Functions to deploy, as NAME=LIB.so or LIB.so (the name is then the
    /// file stem without `lib`, matched case-insensitively to the names
    /// callers use: libbar.so serves Bar).
    #[arg(required_unless_present = "config", value_name = "[NAME=]LIB.so")]
    pub functions: Vec<String>,
    /// Deploy every function of a func_config.json (e.g. the one
    /// `faasfuse build` writes), in addition to any given libraries.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The library of a --config function as NAME=PATH (repeatable), for
    /// a config without `library` fields (nightcore's own).
    #[arg(long = "lib", value_name = "NAME=PATH", requires = "config")]
    pub libs: Vec<String>,
    /// Run every function in a pool of worker processes, nightcore's
    /// model (real IPC per call).
    #[arg(long)]
    pub ipc: bool,
    /// Declare function NAME re-entrant: in-process, a nested call to it
    /// while it runs gets an extra worker instead of failing (repeatable).
    #[arg(long, value_name = "NAME")]
    pub reentrant: Vec<String>,
    /// Serve the inputs N times and print latency percentiles.
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub repeat: usize,
    /// Read more inputs from FILE (`-` for stdin), in --inputs-format.
    #[arg(long, value_name = "FILE")]
    pub inputs: Option<PathBuf>,
    /// How --inputs is split: `lines` (one input per line, a trailing
    /// `\r` dropped) or `len32` (records of a 4-byte little-endian
    /// length then that many bytes, for binary inputs).
    #[arg(long, value_enum, default_value_t = InputsFormat::Lines, value_name = "FORMAT")]
    pub inputs_format: InputsFormat,
    /// Print one JSON report instead of text.
    #[arg(long)]
    pub json: bool,
    /// Do not print outputs, only the latency summary.
    #[arg(long)]
    pub quiet: bool,
    /// The root function, then its inputs.
    #[arg(last = true, required = true, value_name = "ROOT INPUT")]
    pub request: Vec<String>,
}

#[derive(clap::Args)]
pub struct MergeArgs {
    /// The root library first, then its callees, as [NAME=]LIB.so.
    #[arg(required = true, value_name = "[NAME=]LIB.so")]
    pub libraries: Vec<String>,
    /// The fused shared object to write.
    #[arg(short, long, value_name = "OUT.so")]
    pub output: PathBuf,
    /// Also write the manifest (inputs, edges, RPC sites, decisions) as JSON.
    #[arg(long, value_name = "FILE")]
    pub manifest: Option<PathBuf>,
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
    pub profile: Vec<PathBuf>,
    /// Print the manifest as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    /// Skip verifying the output.
    #[arg(long)]
    pub no_verify: bool,
    /// How far to rewrite RPC call sites: `none` keeps every site an
    /// indirect call through the fusion runtime (tier 0), `dispatch`
    /// makes each a direct call of the runtime's dispatcher (tier 1),
    /// `direct` also calls a constant-named fused callee's entry stub
    /// directly (tier 2). Each lowered site is guarded: if its target at
    /// run time is not the runtime, the original target is called.
    #[arg(long, value_enum, default_value_t = LowerArg::Direct)]
    pub lower: LowerArg,
    /// Declare function NAME re-entrant (repeatable): a call into it while
    /// it is already running is served in-process by an extra worker. By
    /// default such a call stays an RPC through the host, because the
    /// platform never re-enters a busy worker process and a function may
    /// rely on that (state in globals, a static buffer).
    #[arg(long, value_name = "NAME", value_delimiter = ',')]
    pub reentrant: Vec<String>,
    /// Keep every fused callee apart from its callers. `none` (the
    /// default, the cheapest call): a callee runs on its caller's stack
    /// and can read its frames and data, and a crash in it takes down
    /// the group's process. `stack`: each callee runs on a stack of its
    /// own with a guard region (a few ns per call), so none of its
    /// callers' frames lies above its own, and a fault in it (a bad
    /// pointer, a stack overflow) fails its call with -1 as a crashed
    /// callee process would, the root serving on, and the host serves
    /// that callee from then on. Neither keeps a callee from the
    /// caller's globals or the shared heap. `mpk` (a CPU with protection
    /// keys): as `stack`, and each callee's writable memory, stack and
    /// I/O buffers carry a protection key of its own, PKRU switched on
    /// call and return, so that while it runs it can touch neither its
    /// callers' data nor the runtime's state (libc's heap stays shared).
    /// Per function in func_config.json: "isolate": "stack" or "mpk".
    #[arg(long, value_enum, default_value_t = IsolateArg::None)]
    pub isolate: IsolateArg,
    /// Isolate function NAME as MODE, whatever --isolate says
    /// (repeatable, comma-separated): e.g. `--isolate mpk --isolate-fn
    /// Pricing=stack` for a callee with thread-local storage, which `mpk`
    /// refuses.
    #[arg(long, value_name = "NAME=MODE", value_delimiter = ',', value_parser = parse_isolate_fn)]
    pub isolate_fn: Vec<(String, IsolateArg)>,
}

fn parse_isolate_fn(s: &str) -> Result<(String, IsolateArg), String> {
    use clap::ValueEnum;
    let (name, mode) = s
        .split_once('=')
        .ok_or_else(|| format!("`{s}`: expected NAME=MODE (none, stack or mpk)"))?;
    let mode = IsolateArg::from_str(mode, false)
        .map_err(|_| format!("`{mode}`: the modes are none, stack and mpk"))?;
    Ok((name.to_string(), mode))
}

#[derive(clap::Args)]
pub struct PlanArgs {
    #[command(flatten)]
    pub inputs: PlanInputs,
    /// Write the plan as JSON.
    #[arg(short, long, value_name = "plan.json")]
    pub output: Option<PathBuf>,
    /// Write the RPC graph in Graphviz DOT.
    #[arg(long, value_name = "FILE")]
    pub dot: Option<PathBuf>,
    /// Write the RPC graph as SVG (needs Graphviz `dot`; DOT is written beside).
    #[arg(long, value_name = "FILE")]
    pub svg: Option<PathBuf>,
    /// Print the plan as JSON instead of the table.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub tuning: Tuning,
}

#[derive(clap::Args)]
pub struct BuildArgs {
    #[command(flatten)]
    pub inputs: PlanInputs,
    /// The directory to write the fused deployment to (whole, or left as
    /// it was).
    #[arg(long, value_name = "DIR")]
    pub out_dir: PathBuf,
    /// How far to rewrite RPC call sites (see `faasfuse merge --help`).
    #[arg(long, value_enum, default_value_t = LowerArg::Direct)]
    pub lower: LowerArg,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub tuning: Tuning,
}

#[derive(clap::Args)]
pub struct VerifyArgs {
    pub library: PathBuf,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// What `plan` and `build` read.
#[derive(clap::Args)]
pub struct PlanInputs {
    /// The deployment: nightcore's func_config.json, with a `library` per
    /// entry or the libraries given with --lib.
    #[arg(long, value_name = "func_config.json")]
    pub config: PathBuf,
    /// The library of function NAME (repeatable), for a config without
    /// `library` fields (nightcore's own); replaces a `library` field.
    #[arg(long = "lib", value_name = "NAME=PATH")]
    pub libs: Vec<String>,
    /// One or more profiles of any kind (see --help): perf.data, BOLT
    /// .fdata ([NAME=]FILE) or pre-aggregated text, `faasfuse profile` or
    /// weights JSON, platform traces (`faasfuse run --json` reports).
    #[arg(long, value_name = "PROFILE", required = true, num_args = 1..)]
    pub profile: Vec<PathBuf>,
    /// The plan in force; its groups are kept unless clearly beaten.
    #[arg(long, value_name = "plan.json")]
    pub previous: Option<PathBuf>,
}

/// Planner settings shared by `plan` and `build`.
#[derive(clap::Args)]
pub struct Tuning {
    /// Cost of one RPC in microseconds.
    #[arg(long, default_value_t = 39.0, value_name = "US")]
    pub rpc_cost_us: f64,
    /// Edges called on fewer than this share of their caller's executions
    /// stay RPCs.
    #[arg(long, default_value_t = 0.01, value_name = "SHARE")]
    pub cold: f64,
    /// Keep a previous group unless the new one removes more than this share
    /// more cost.
    #[arg(long, default_value_t = 0.10, value_name = "SHARE")]
    pub hysteresis: f64,
    /// Use the greedy heuristic for every group (see --help).
    #[arg(long)]
    pub heuristic: bool,
}

impl Tuning {
    pub fn options(&self) -> faasfuse_core::plan::Options {
        faasfuse_core::plan::Options {
            rpc_cost_us: self.rpc_cost_us,
            cold_threshold: self.cold,
            hysteresis: self.hysteresis,
            heuristic_only: self.heuristic,
        }
    }
}

/// How `run --inputs` splits its file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum InputsFormat {
    /// One input per line.
    Lines,
    /// Records: a 4-byte little-endian length, then that many bytes.
    Len32,
}

#[derive(clap::Args)]
#[command(
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true,
    about = "Read perf.data or BOLT profiles of function libraries: branch, call and RPC-site \
counts per library, as JSON and BOLT .fdata",
    long_about = "Read profiles of function libraries and count, per library: taken branches \
(LBR branch stacks), calls, samples per function, and the executions of every RPC call site \
(the sites `faasfuse inspect` lists). The RPC edge Caller -> Callee weighs the executions of \
the caller's sites that name the callee as a constant; a function's CPU share is the share of \
all on-CPU samples whose innermost frame in a library lies in its library.\n\n\
INPUT is a perf.data (`perf record` with branch stacks `-b`/`-j`, or call chains `-g`, \
`--call-graph dwarf` or `--call-graph lbr`, whose LBR call stacks count as call chains, not \
branches; all processes in one pass, e.g. every worker of `faasfuse run --ipc`; \
off-CPU stacks of `-e sched:sched_switch` with call chains count the calls of a caller that \
blocks in them, and are not CPU time; samples of other tracepoints and software events are \
not read), \
a BOLT .fdata, or BOLT pre-aggregated text; several inputs are summed. Samples are mapped to \
libraries by build-id (MMAP2 records or perf's build-id table), else by path; samples \
outside every library are reported per file.\n\n\
Branch stacks of consecutive samples overlap when the sample period is below the stack \
depth: only the newest `period` entries of each stack are counted.",
    after_help = "Examples:\n  \
perf record -e cpu-clock:u --call-graph dwarf -- faasfuse run libfoo.so libbar.so \\\n      \
--repeat 1000 --quiet -- Foo world\n  \
faasfuse profile perf.data --lib libfoo.so --lib libbar.so -o profile.json\n  \
faasfuse plan --config func_config.json --profile profile.json\n\n  \
perf record -e cycles:u -j any,u -- ...          (branch stacks, where the CPU has LBR)\n  \
faasfuse profile perf.data --lib Foo=libfoo.so --fdata-dir fdata/\n  \
llvm-bolt-16 libfoo.so -data fdata/Foo.fdata -o libfoo.bolt.so\n\n  \
faasfuse profile Foo.fdata --lib Foo=libfoo.so --json\n  \
faasfuse profile merge monday.json tuesday.json -o week.json"
)]
pub struct ProfileArgs {
    #[command(subcommand)]
    pub command: Option<ProfileCommand>,
    /// perf.data, .fdata or pre-aggregated profiles to read (summed); `-`
    /// reads standard input (spooled to a temporary file).
    #[arg(required = true, value_name = "INPUT")]
    pub inputs: Vec<PathBuf>,
    /// A function library the profile covers, as NAME=LIB.so or LIB.so (the
    /// name is then the file stem without `lib`, as for `faasfuse run`).
    #[arg(long = "lib", required = true, value_name = "[NAME=]LIB.so")]
    pub libs: Vec<String>,
    /// Write the profile as JSON (the input of `faasfuse plan`).
    #[arg(short, long, value_name = "profile.json")]
    pub output: Option<PathBuf>,
    /// Write one BOLT `.fdata` per library, DIR/NAME.fdata, for llvm-bolt.
    #[arg(long, value_name = "DIR")]
    pub fdata_dir: Option<PathBuf>,
    /// Print a JSON summary instead of the text one.
    #[arg(long)]
    pub json: bool,
    /// Skip malformed records (counted in the summary) instead of failing.
    #[arg(long)]
    pub lenient: bool,
}

#[derive(clap::Subcommand)]
pub enum ProfileCommand {
    /// Sum profile JSON files (e.g. from several hosts or days).
    #[command(after_help = "Example:\n  faasfuse profile merge a.json b.json c.json -o all.json")]
    Merge {
        #[arg(required = true, value_name = "PROFILE.json")]
        inputs: Vec<PathBuf>,
        /// The summed profile JSON to write.
        #[arg(short, long, value_name = "OUT.json")]
        output: PathBuf,
        /// Print a JSON summary instead of the text one.
        #[arg(long)]
        json: bool,
    },
}

/// `--lower`: how far `merge` rewrites RPC call sites.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LowerArg {
    /// Leave every site an indirect call (tier 0).
    None,
    /// Direct calls to the runtime's dispatcher (tier 1).
    Dispatch,
    /// Direct calls to the callee's entry stub where the name is a constant
    /// fused callee (tier 2), to the dispatcher elsewhere.
    Direct,
}

impl From<LowerArg> for faasfuse_core::lower::Level {
    fn from(a: LowerArg) -> Self {
        match a {
            LowerArg::None => Self::None,
            LowerArg::Dispatch => Self::Dispatch,
            LowerArg::Direct => Self::Direct,
        }
    }
}

/// `--isolate`: how fused callees are kept apart from their callers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum IsolateArg {
    /// On the caller's stack, in the caller's memory (the cheapest call).
    None,
    /// On a stack of its own with a guard region; a fault fails the call.
    Stack,
    /// As `stack`, and behind a protection key of its own: while it runs it
    /// can touch neither its callers' data nor the runtime's state.
    Mpk,
}

impl From<IsolateArg> for faasfuse_core::merge::Isolation {
    fn from(a: IsolateArg) -> Self {
        match a {
            IsolateArg::None => Self::None,
            IsolateArg::Stack => Self::Stack,
            IsolateArg::Mpk => Self::Mpk,
        }
    }
}

impl From<ProfileArgs> for faasfuse_core::profile::command::ProfileJob {
    fn from(a: ProfileArgs) -> Self {
        Self {
            inputs: a.inputs,
            libs: a.libs,
            output: a.output,
            fdata_dir: a.fdata_dir,
            json: a.json,
            lenient: a.lenient,
        }
    }
}
