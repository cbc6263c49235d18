//! The real nightcore stack on loopback, as the oracle of faasfuse's tests
//! and the stage of its benchmarks: a gateway, an engine and one launcher
//! per function (whose `func_worker_v1` processes load the function
//! libraries), started from a `func_config.json` and a library per
//! function, or from the `launch.sh` that `faasfuse build` writes.
//!
//! The programs come from `NIGHTCORE_BIN`. Each stack has a directory of
//! its own (config, IPC root, logs, worker output) and ports the kernel
//! hands out, so stacks started at the same time do not collide. Every
//! process it starts runs in a process group of its own and dies with the
//! thread that started it (`PR_SET_PDEATHSIG`); [`Stack::stop`] (or drop)
//! kills the workers by their PIDs first, so that their launchers reap
//! them, then the rest, and checks that nothing is left.

pub mod bench;
pub mod http;
pub mod procs;

use std::io::Read;
use std::net::{SocketAddr, TcpListener};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

pub use http::{Answer, Client};

/// The nightcore programs a stack runs.
pub const PROGRAMS: [&str; 4] = ["gateway", "engine", "launcher", "func_worker_v1"];

/// The directory holding nightcore's programs: `NIGHTCORE_BIN`, checked.
pub fn bin_dir() -> Result<PathBuf> {
    let Some(dir) = std::env::var_os("NIGHTCORE_BIN") else {
        bail!(
            "NIGHTCORE_BIN is not set: point it at a directory holding nightcore's {} (built from ut-osa/nightcore; .ci/run uses ../shared/nightcore/bin)",
            PROGRAMS.join(", ")
        );
    };
    let dir = std::path::absolute(PathBuf::from(dir))?;
    for p in PROGRAMS {
        let path = dir.join(p);
        let ok = std::fs::metadata(&path)
            .map(|m| {
                m.is_file()
                    && std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o111 != 0
            })
            .unwrap_or(false);
        if !ok {
            bail!(
                "NIGHTCORE_BIN={}: no executable {p} there (nightcore's {} are needed)",
                dir.display(),
                PROGRAMS.join(", ")
            );
        }
    }
    Ok(dir)
}

/// One deployed function: a `func_config.json` entry and its library.
#[derive(Clone, Debug)]
pub struct Function {
    pub name: String,
    pub id: u32,
    pub min_workers: u32,
    pub max_workers: u32,
    /// The library `func_worker_v1` loads; `None` when a launch script
    /// (see [`Launch::Script`]) names it.
    pub library: Option<PathBuf>,
}

impl Function {
    pub fn new(name: &str, id: u32, workers: (u32, u32), library: &Path) -> Function {
        Function {
            name: name.to_string(),
            id,
            min_workers: workers.0,
            max_workers: workers.1,
            library: Some(library.to_path_buf()),
        }
    }
}

/// Read a `func_config.json` (nightcore's fields, plus faasfuse's
/// `library`, resolved against the config's directory when relative).
pub fn read_config(path: &Path) -> Result<Vec<Function>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let v: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{}", path.display()))?;
    let base = path.parent().unwrap_or(Path::new("."));
    let entries = v
        .as_array()
        .with_context(|| format!("{}: not a JSON array", path.display()))?;
    entries
        .iter()
        .map(|e| {
            let field = |k: &str| {
                e[k].as_u64()
                    .with_context(|| format!("{}: an entry without {k}", path.display()))
            };
            Ok(Function {
                name: e["funcName"]
                    .as_str()
                    .with_context(|| format!("{}: an entry without funcName", path.display()))?
                    .to_string(),
                id: field("funcId")? as u32,
                min_workers: field("minWorkers")? as u32,
                max_workers: field("maxWorkers")? as u32,
                library: e["library"].as_str().map(|l| base.join(l)),
            })
        })
        .collect()
}

/// What nightcore's gateway made of a `func_config.json`.
#[derive(Debug)]
pub enum ConfigVerdict {
    /// It loaded the config and listened for requests (then it was
    /// killed).
    Accepted,
    /// It exited (nightcore `LOG(FATAL)`s on a config it cannot load),
    /// with its status and the last lines of its log.
    Refused {
        status: std::process::ExitStatus,
        log: String,
    },
}

/// Start nightcore's gateway alone on `config`, with ports the kernel hands
/// out and its log in `dir`, and see whether it loads the config: it exits
/// at once on one nightcore refuses, and otherwise listens for HTTP and gRPC
/// requests. Either way it is gone when this returns (killed by its PID
/// once it listens, or after `within`, which is then an error).
pub fn gateway_verdict(config: &Path, dir: &Path, within: Duration) -> Result<ConfigVerdict> {
    let bin = bin_dir()?;
    let config = std::path::absolute(config)?;
    std::fs::create_dir_all(dir)?;
    let stem = config
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    for attempt in 0..4 {
        let log_path = dir.join(format!(
            "gateway-{stem}-{}-{attempt}.log",
            std::process::id()
        ));
        let log = std::fs::File::create(&log_path)?;
        let (http, grpc, engine) = (free_port()?, free_port()?, free_port()?);
        let mut cmd = Command::new(bin.join("gateway"));
        cmd.args([
            format!("--func_config_file={}", config.display()),
            "--listen_addr=127.0.0.1".to_string(),
            format!("--http_port={http}"),
            format!("--grpc_port={grpc}"),
            format!("--engine_conn_port={engine}"),
        ])
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .current_dir(dir);
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                libc::setpgid(0, 0);
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let mut child = cmd.spawn().context("starting nightcore's gateway")?;
        let until = Instant::now() + within;
        let verdict = loop {
            if let Some(status) = child.try_wait()? {
                break Some(ConfigVerdict::Refused {
                    status,
                    log: tail(&log_path),
                });
            }
            let text = std::fs::read_to_string(&log_path).unwrap_or_default();
            if text.contains("for gRPC requests") {
                break Some(ConfigVerdict::Accepted);
            }
            if Instant::now() >= until {
                break None;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        // Gone by its PID whatever it did.
        let _ = child.kill();
        let _ = child.wait();
        match verdict {
            Some(ConfigVerdict::Refused { log, .. }) if log.contains("in use") => continue,
            Some(v) => return Ok(v),
            None => bail!(
                "nightcore's gateway on {} neither exited nor listened within {within:?}; {}:\n    {}",
                config.display(),
                log_path.display(),
                tail(&log_path)
            ),
        }
    }
    bail!("nightcore's gateway found its ports in use four times")
}

/// How the functions' launchers start.
#[derive(Clone, Debug)]
pub enum Launch {
    /// One launcher per function, `--fprocess="func_worker_v1 LIBRARY"`.
    Libraries,
    /// A script that starts the launchers itself (`faasfuse build`'s
    /// `launch.sh`), run with `NIGHTCORE_BIN`, `IPC_DIR` and `OUTPUT_DIR`.
    Script(PathBuf),
}

/// Stack settings.
#[derive(Clone, Debug)]
pub struct Options {
    /// How long the stack may take to be ready.
    pub ready_timeout: Duration,
    /// How long a request may wait for its answer.
    pub request_deadline: Duration,
    /// The engine's `--use_fifo_for_nested_call`.
    pub fifo_nested_calls: bool,
    /// glog verbosity of gateway and engine (`--v`): 1 logs every call.
    pub verbosity: u32,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            ready_timeout: Duration::from_secs(60),
            request_deadline: Duration::from_secs(20),
            fifo_nested_calls: false,
            verbosity: 0,
        }
    }
}

/// A running nightcore stack.
pub struct Stack {
    pub dir: PathBuf,
    pub functions: Vec<Function>,
    http: SocketAddr,
    deadline: Duration,
    /// (what, process): gateway, engine, then the launchers (or the script).
    children: Vec<(String, Child)>,
    stopped: bool,
}

/// A port the kernel hands out on loopback now (free when this returns).
fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// The last lines of a log, for an error message.
fn tail(path: &Path) -> String {
    let mut s = String::new();
    if let Ok(mut f) = std::fs::File::open(path) {
        let _ = f.read_to_string(&mut s);
    }
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(8)..].join("\n    ")
}

impl Stack {
    /// Start a stack serving `functions` in a new directory under `base`.
    /// A stack whose ports were taken meanwhile is retried with new ones.
    pub fn start(
        base: &Path,
        tag: &str,
        functions: &[Function],
        launch: &Launch,
        opts: &Options,
    ) -> Result<Stack> {
        let bin = bin_dir()?;
        // The programs run in the stack's directory: every path absolute.
        let base = std::path::absolute(base)?;
        let mut last = None;
        for attempt in 0..4 {
            let dir = base.join(format!("nightcore-{tag}-{}-{attempt}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(dir.join("ipc"))?;
            std::fs::create_dir_all(dir.join("out"))?;
            match Stack::start_in(&bin, dir, functions, launch, opts) {
                Ok(s) => return Ok(s),
                Err(e) if format!("{e:#}").contains("in use") => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.expect("attempted"))
    }

    fn start_in(
        bin: &Path,
        dir: PathBuf,
        functions: &[Function],
        launch: &Launch,
        opts: &Options,
    ) -> Result<Stack> {
        let config: Vec<serde_json::Value> = functions
            .iter()
            .map(|f| {
                serde_json::json!({
                    "funcName": f.name, "funcId": f.id,
                    "minWorkers": f.min_workers, "maxWorkers": f.max_workers,
                })
            })
            .collect();
        let config_path = dir.join("func_config.json");
        std::fs::write(&config_path, serde_json::to_string_pretty(&config)?)?;
        let (http, engine_port, grpc) = (free_port()?, free_port()?, free_port()?);
        let mut stack = Stack {
            http: SocketAddr::from(([127, 0, 0, 1], http)),
            deadline: opts.request_deadline,
            functions: functions.to_vec(),
            children: Vec::new(),
            stopped: false,
            dir: dir.clone(),
        };
        let ipc = dir.join("ipc");
        let v = format!("--v={}", opts.verbosity);
        let cfg = format!("--func_config_file={}", config_path.display());
        let until = Instant::now() + opts.ready_timeout;

        stack.spawn(
            "gateway",
            Command::new(bin.join("gateway")).args([
                "--listen_addr=127.0.0.1".to_string(),
                cfg.clone(),
                format!("--http_port={http}"),
                format!("--grpc_port={grpc}"),
                format!("--engine_conn_port={engine_port}"),
                v.clone(),
            ]),
        )?;
        stack.wait_for("gateway", until, |s| {
            Ok(std::fs::read_to_string(s.log("gateway"))?.contains("for HTTP requests"))
        })?;

        let mut engine = Command::new(bin.join("engine"));
        engine.args([
            cfg.clone(),
            "--node_id=0".to_string(),
            "--gateway_addr=127.0.0.1".to_string(),
            format!("--gateway_port={engine_port}"),
            format!("--root_path_for_ipc={}", ipc.display()),
            "--disable_monitor".to_string(),
            v.clone(),
        ]);
        if opts.fifo_nested_calls {
            engine.arg("--use_fifo_for_nested_call");
        }
        stack.spawn("engine", &mut engine)?;
        stack.wait_for("engine", until, |s| {
            Ok(ipc.join("engine.sock").exists()
                && std::fs::read_to_string(s.log("gateway"))?
                    .contains("Number of connected nodes: 1"))
        })?;

        match launch {
            Launch::Libraries => {
                for f in functions {
                    let lib = f
                        .library
                        .as_ref()
                        .with_context(|| format!("function {} has no library", f.name))?;
                    let lib = std::path::absolute(lib)?;
                    let fprocess = format!(
                        "{} {}",
                        shell_quote(&bin.join("func_worker_v1"))?,
                        shell_quote(&lib)?
                    );
                    stack.spawn(
                        &format!("launcher-{}", f.name),
                        Command::new(bin.join("launcher")).args([
                            format!("--func_id={}", f.id),
                            "--fprocess_mode=cpp".to_string(),
                            format!("--root_path_for_ipc={}", ipc.display()),
                            format!("--fprocess_output_dir={}", dir.join("out").display()),
                            format!("--fprocess={fprocess}"),
                            v.clone(),
                        ]),
                    )?;
                }
            }
            Launch::Script(script) => {
                stack.spawn(
                    "launch-script",
                    Command::new("sh")
                        .arg(script)
                        .env("NIGHTCORE_BIN", bin)
                        .env("IPC_DIR", &ipc)
                        .env("OUTPUT_DIR", dir.join("out")),
                )?;
            }
        }
        stack.wait_for("the function workers", until, |s| {
            Ok(s.unready()?.is_empty())
        })?;
        Ok(stack)
    }

    fn log(&self, what: &str) -> PathBuf {
        self.dir.join(format!("{what}.log"))
    }

    /// Start `cmd` with its output in `WHAT.log`, in a process group of its
    /// own, dying with the starting thread.
    fn spawn(&mut self, what: &str, cmd: &mut Command) -> Result<()> {
        let log = std::fs::File::create(self.log(what))?;
        cmd.stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .current_dir(&self.dir);
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                libc::setpgid(0, 0);
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("starting nightcore's {what}"))?;
        self.children.push((what.to_string(), child));
        Ok(())
    }

    /// Poll `ready` until it holds; fail when a process of the stack ended
    /// or the time is up, with the logs' last lines.
    fn wait_for(
        &mut self,
        what: &str,
        until: Instant,
        ready: impl Fn(&Stack) -> Result<bool>,
    ) -> Result<()> {
        loop {
            if ready(self).unwrap_or(false) {
                return Ok(());
            }
            for i in 0..self.children.len() {
                if let Some(status) = self.children[i].1.try_wait()? {
                    let name = self.children[i].0.clone();
                    bail!(
                        "nightcore's {name} exited ({status}) while waiting for {what}; {}:\n    {}",
                        self.log(&name).display(),
                        tail(&self.log(&name))
                    );
                }
            }
            if Instant::now() >= until {
                let unready = self.unready().unwrap_or_default();
                bail!(
                    "nightcore stack in {} not ready: waited for {what}{}; engine log:\n    {}",
                    self.dir.display(),
                    if unready.is_empty() {
                        String::new()
                    } else {
                        format!(" (workers missing: {})", unready.join(", "))
                    },
                    tail(&self.log("engine"))
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Functions with fewer connected workers than their `minWorkers`
    /// (at least one), as the engine's log counts them.
    fn unready(&self) -> Result<Vec<String>> {
        let log = std::fs::read_to_string(self.log("engine"))?;
        Ok(self
            .functions
            .iter()
            .filter(|f| {
                let tag = format!("FuncWorker of func_id {}, client_id", f.id);
                let up = log
                    .lines()
                    .filter(|l| l.contains(&tag) && l.ends_with(" connected"))
                    .count();
                up < f.min_workers.max(1) as usize
            })
            .map(|f| f.name.clone())
            .collect())
    }

    /// The gateway's HTTP address.
    pub fn addr(&self) -> SocketAddr {
        self.http
    }

    /// A new closed-loop client of this stack.
    pub fn client(&self) -> Client {
        Client::new(self.http, self.deadline)
    }

    /// A client whose requests wait at most `deadline`.
    pub fn client_with_deadline(&self, deadline: Duration) -> Client {
        Client::new(self.http, deadline)
    }

    /// The PIDs of the platform's own processes (gateway, engine, and the
    /// launchers or the launch script).
    pub fn platform_pids(&self) -> Vec<i32> {
        self.children.iter().map(|(_, c)| c.id() as i32).collect()
    }

    /// The launchers, or the script that starts them.
    fn launcher_pids(&self) -> Vec<i32> {
        self.children
            .iter()
            .filter(|(what, _)| what.starts_with("launch"))
            .map(|(_, c)| c.id() as i32)
            .collect()
    }

    /// The function processes: everything the launchers started.
    pub fn worker_pids(&self) -> Vec<i32> {
        procs::descendants(&self.launcher_pids())
            .into_iter()
            .filter(|p| p.comm.starts_with("func_worker") && p.state != 'Z')
            .map(|p| p.pid)
            .collect()
    }

    /// The worker processes of function `name` (by the `FAAS_FUNC_ID` its
    /// launcher gave them).
    pub fn workers_of(&self, name: &str) -> Vec<i32> {
        let Some(f) = self.functions.iter().find(|f| f.name == name) else {
            return Vec::new();
        };
        self.worker_pids()
            .into_iter()
            .filter(|p| procs::func_id(*p) == Some(f.id))
            .collect()
    }

    /// Stop every process this stack started; an error names any that
    /// survived.
    pub fn stop(mut self) -> Result<()> {
        self.kill_all()
    }

    fn kill_all(&mut self) -> Result<()> {
        if self.stopped {
            return Ok(());
        }
        self.stopped = true;
        let own: Vec<i32> = self.platform_pids();
        // Workers first, by PID, while their launchers live to reap them.
        let workers: Vec<i32> = procs::descendants(&self.launcher_pids())
            .iter()
            .map(|p| p.pid)
            .collect();
        for w in &workers {
            procs::kill(*w);
        }
        procs::wait_gone(&workers, Duration::from_secs(3));
        // Then whatever is left of each process group, and our children.
        let everything: Vec<i32> = procs::descendants(&own).iter().map(|p| p.pid).collect();
        for (_, c) in &mut self.children {
            procs::kill_group(c.id() as i32);
            let _ = c.kill();
            let _ = c.wait();
        }
        for p in &everything {
            procs::kill(*p);
        }
        let left: Vec<procs::ProcStat> = procs::wait_gone(&everything, Duration::from_secs(3))
            .into_iter()
            .filter_map(procs::stat)
            .filter(|p| p.state != 'Z')
            .collect();
        if !left.is_empty() {
            bail!(
                "nightcore stack in {}: processes left after stop: {}",
                self.dir.display(),
                left.iter()
                    .map(|p| format!("{} ({})", p.pid, p.comm))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        Ok(())
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        let _ = self.kill_all();
    }
}

/// A path as one word for `/bin/sh` (the launcher runs `--fprocess`
/// through it).
pub fn shell_quote(p: &Path) -> Result<String> {
    let s = p
        .to_str()
        .with_context(|| format!("{}: not UTF-8", p.display()))?;
    Ok(format!("'{}'", s.replace('\'', r"'\''")))
}
