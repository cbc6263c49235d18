//! `--ipc` mode, nightcore's process model: a pool of worker processes per
//! function, the engine (this process) relaying every call over Unix
//! sockets, so a nested call pays a real inter-process round trip.
//!
//! A worker process loads its library (`RTLD_LAZY`, never unloaded), runs
//! `faas_init` once, creates exactly one worker before any request and
//! reuses it for every call, one call at a time; it never destroys it. The
//! engine sends a request or nested call to an idle process of the callee
//! and starts a new one when none is idle, up to the function's
//! `maxWorkers`. A busy process is never re-entered: recursion and cycles
//! reach another process. When every process of the callee is busy on the
//! current call stack and the pool is full, nightcore would wait forever;
//! the engine fails the request instead, naming the function and the limit.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::io::{BufReader, BufWriter};
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use anyhow::{anyhow, bail, Context, Result};

use super::library::{CallResult, Router, TimeLog, MAX_DEPTH};
use super::wire::Msg;
use super::{Engine, FunctionSpec, PoolLimits};

/// Name of the hidden subcommand a worker process runs.
pub const WORKER_SUBCOMMAND: &str = "__worker";

struct Conn {
    reader: BufReader<UnixStream>,
    writer: BufWriter<UnixStream>,
}

impl Conn {
    fn new(stream: UnixStream) -> Result<Conn> {
        Ok(Conn {
            writer: BufWriter::new(stream.try_clone()?),
            reader: BufReader::new(stream),
        })
    }
    fn send(&mut self, m: &Msg) -> std::io::Result<()> {
        m.write_to(&mut self.writer)
    }
    fn recv(&mut self) -> std::io::Result<Option<Msg>> {
        Msg::read_from(&mut self.reader)
    }
}

/// One worker process.
struct Proc {
    child: Child,
    conn: Conn,
    /// Running a call (it is on the current call stack).
    busy: bool,
}

/// The worker processes of one function.
struct Pool {
    spec: FunctionSpec,
    limits: PoolLimits,
    procs: Vec<Proc>,
}

/// The engine side: a pool of worker processes per function.
pub struct IpcEngine {
    pools: Vec<Pool>,
    exe: PathBuf,
    /// Nested calls relayed, by (calling function, callee name).
    counts: HashMap<(usize, Vec<u8>), u64>,
    /// Why the current request fails, whatever its root returns.
    error: Option<String>,
}

impl IpcEngine {
    pub fn start(
        specs: &[FunctionSpec],
        limits: &BTreeMap<String, PoolLimits>,
        worker_exe: &Path,
    ) -> Result<IpcEngine> {
        let mut pools = Vec::new();
        for spec in specs {
            let l = limits.get(&spec.name).copied().unwrap_or_default();
            if let Err(why) = l.check() {
                bail!(faasfuse_core::error::InputError::new(
                    spec.name.as_str(),
                    why
                ));
            }
            pools.push(Pool {
                spec: spec.clone(),
                limits: l,
                procs: Vec::new(),
            });
        }
        let mut engine = IpcEngine {
            pools,
            exe: worker_exe.to_path_buf(),
            counts: Default::default(),
            error: None,
        };
        // minWorkers processes per function up front: start them all, then
        // wait for each to load its library and create its worker.
        let mut started = Vec::new();
        for (f, pool) in engine.pools.iter().enumerate() {
            for _ in 0..pool.limits.min {
                started.push((f, spawn(&pool.spec, &engine.exe)?));
            }
        }
        for (f, mut p) in started {
            engine.ready(f, &mut p)?;
            engine.pools[f].procs.push(p);
        }
        Ok(engine)
    }

    /// Wait for a new process of function `f` to report it is ready.
    fn ready(&self, f: usize, p: &mut Proc) -> Result<()> {
        match p.conn.recv() {
            Ok(Some(Msg::Ready { error })) if error.is_empty() => Ok(()),
            Ok(Some(Msg::Ready { error })) => Err(anyhow!(error)),
            _ => bail!(
                "worker process for {} failed to start",
                self.pools[f].spec.name
            ),
        }
    }

    fn lost(&mut self, f: usize, i: usize) -> anyhow::Error {
        let name = self.pools[f].spec.name.clone();
        let p = &mut self.pools[f].procs[i];
        let status = p
            .child
            .wait()
            .map(|s| s.to_string())
            .unwrap_or_else(|e| e.to_string());
        anyhow!(
            "worker process for {name} (pid {}) died: {status}",
            p.child.id()
        )
    }

    /// An idle process of function `f`, started if none is idle and the
    /// pool is not full; `None` when every process is busy and it is.
    fn idle(&mut self, f: usize) -> Result<Option<usize>> {
        if let Some(i) = self.pools[f].procs.iter().position(|p| !p.busy) {
            return Ok(Some(i));
        }
        if self.pools[f].procs.len() >= self.pools[f].limits.max {
            return Ok(None);
        }
        let mut p = spawn(&self.pools[f].spec, &self.exe)?;
        self.ready(f, &mut p)?;
        self.pools[f].procs.push(p);
        Ok(Some(self.pools[f].procs.len() - 1))
    }

    /// Run function `f` at `depth` for `caller` in an idle process,
    /// relaying its nested calls recursively. `Err` is a broken deployment
    /// (a process died, a protocol error); a request that cannot be served
    /// fails through `self.error`.
    fn serve(&mut self, caller: &str, f: usize, depth: u32, input: Vec<u8>) -> Result<CallResult> {
        let Some(i) = self.idle(f)? else {
            let pool = &self.pools[f];
            let name = &pool.spec.name;
            self.error.get_or_insert(format!(
                "{caller} calls {name}, but all {} worker processes of {name} (its maxWorkers) \
                 are busy on this request's call stack; nightcore would wait forever for an \
                 idle one (raise maxWorkers of {name})",
                pool.limits.max
            ));
            return Ok(CallResult::failed());
        };
        self.pools[f].procs[i].busy = true;
        let call = Msg::Call {
            depth: depth as i32,
            input,
        };
        if self.pools[f].procs[i].conn.send(&call).is_err() {
            return Err(self.lost(f, i));
        }
        loop {
            let msg = match self.pools[f].procs[i].conn.recv() {
                Ok(Some(m)) => m,
                _ => return Err(self.lost(f, i)),
            };
            match msg {
                Msg::Invoke {
                    depth: at,
                    name,
                    input,
                } => {
                    // A fused image's callee calls from deeper than its
                    // process's call.
                    let from = depth.max(at.max(0) as u32);
                    let r = if from + 1 > MAX_DEPTH {
                        // Calls past the depth limit fail without being served.
                        CallResult::failed()
                    } else {
                        *self.counts.entry((f, name.clone())).or_default() += 1;
                        match self.pools.iter().position(|p| p.spec.name.as_bytes() == name) {
                            Some(t) => {
                                let me = self.pools[f].spec.name.clone();
                                self.serve(&me, t, from + 1, input)?
                            }
                            None => CallResult::failed(),
                        }
                    };
                    let reply = Msg::Reply {
                        rc: r.rc,
                        output: r.output,
                    };
                    if self.pools[f].procs[i].conn.send(&reply).is_err() {
                        return Err(self.lost(f, i));
                    }
                }
                Msg::Result { rc, output } => {
                    self.pools[f].procs[i].busy = false;
                    return Ok(CallResult { rc, output });
                }
                other => bail!(
                    "protocol error: worker process for {} sent an unexpected {} while running a call",
                    self.pools[f].spec.name,
                    other.kind()
                ),
            }
        }
    }
}

fn spawn(spec: &FunctionSpec, exe: &Path) -> Result<Proc> {
    let (ours, theirs) = UnixStream::pair().context("socketpair")?;
    let fd = theirs.as_raw_fd();
    let mut cmd = Command::new(exe);
    cmd.arg(WORKER_SUBCOMMAND)
        .arg("--fd")
        .arg("3")
        .arg("--name")
        .arg(&spec.name)
        .arg(&spec.path)
        .stdin(Stdio::null());
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if fd == 3 {
                let flags = libc::fcntl(3, libc::F_GETFD);
                libc::fcntl(3, libc::F_SETFD, flags & !libc::FD_CLOEXEC);
            } else if libc::dup2(fd, 3) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd
        .spawn()
        .with_context(|| format!("cannot start worker process {}", exe.display()))?;
    drop(theirs);
    Ok(Proc {
        child,
        conn: Conn::new(ours)?,
        busy: false,
    })
}

impl Engine for IpcEngine {
    fn request(&mut self, root: &str, input: &[u8]) -> Result<CallResult> {
        let f = self
            .pools
            .iter()
            .position(|p| p.spec.name == root)
            .ok_or_else(|| anyhow!("function {root} is not deployed"))?;
        self.error = None;
        let r = self.serve("the engine", f, 0, input.to_vec())?;
        match self.error.take() {
            Some(e) => Err(anyhow!("request to {root} failed: {e}")),
            None => Ok(r),
        }
    }

    fn call_counts(&self) -> super::CallCounts {
        let mut out = super::CallCounts::new();
        for ((f, name), n) in &self.counts {
            *out.entry(self.pools[*f].spec.name.clone())
                .or_default()
                .entry(String::from_utf8_lossy(name).into_owned())
                .or_default() += n;
        }
        out
    }

    fn instances(&self) -> BTreeMap<String, u64> {
        self.pools
            .iter()
            .map(|p| (p.spec.name.clone(), p.procs.len() as u64))
            .collect()
    }

    fn shutdown(mut self: Box<Self>) -> Result<Vec<u64>> {
        let mut times = Vec::new();
        for pool in &mut self.pools {
            for p in &mut pool.procs {
                p.conn.send(&Msg::Shutdown)?;
                if let Ok(Some(Msg::Stats { times: t })) = p.conn.recv() {
                    times.extend(
                        t.chunks_exact(8)
                            .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes"))),
                    );
                }
                let status = p.child.wait()?;
                if !status.success() {
                    bail!("worker process for {} exited with {status}", pool.spec.name);
                }
            }
        }
        Ok(times)
    }
}

impl Drop for IpcEngine {
    fn drop(&mut self) {
        for p in self.pools.iter_mut().flat_map(|p| &mut p.procs) {
            if let Ok(None) = p.child.try_wait() {
                let _ = p.child.kill();
                let _ = p.child.wait();
            }
        }
    }
}

/// The worker side of a nested call: ask the engine and wait for its
/// reply. The process runs one call at a time, so nothing else may arrive.
struct IpcRouter {
    conn: RefCell<Conn>,
    name: String,
}

impl Router for IpcRouter {
    fn invoke(&self, _caller: &str, depth: u32, name: &[u8], input: &[u8]) -> CallResult {
        let mut c = self.conn.borrow_mut();
        let sent = c.send(&Msg::Invoke {
            depth: depth.min(i32::MAX as u32) as i32,
            name: name.to_vec(),
            input: input.to_vec(),
        });
        let got = sent.and_then(|()| c.recv());
        match got {
            Ok(Some(Msg::Reply { rc, output })) => CallResult { rc, output },
            Ok(Some(other)) => {
                eprintln!(
                    "faasfuse: worker process for {}: protocol error: the engine sent {} \
                     instead of the reply to a nested call",
                    self.name,
                    other.kind()
                );
                std::process::exit(3)
            }
            // The engine is gone: nothing sensible is left to do.
            _ => std::process::exit(3),
        }
    }
}

/// Entry point of a worker process (`faasfuse __worker --fd N --name NAME LIB`).
pub fn worker_main(fd: i32, name: &str, path: &std::path::Path) -> Result<()> {
    // SAFETY: the engine passed us this socket as descriptor `fd`.
    let stream = unsafe { UnixStream::from_raw_fd(fd) };
    let router = IpcRouter {
        conn: RefCell::new(Conn::new(stream)?),
        name: name.to_string(),
    };
    let times = TimeLog::default();
    // Load the library, run faas_init once, create the one worker.
    let loaded = super::open_libraries(&[FunctionSpec {
        name: name.to_string(),
        path: path.to_path_buf(),
    }])
    .and_then(|mut libs| {
        let lib = libs.pop().expect("one library");
        lib.init()?;
        let router: &dyn Router = &router;
        // SAFETY (of the erased lifetime): the router lives until this
        // function returns, and the process exits then.
        let router = unsafe {
            std::mem::transmute::<*const (dyn Router + '_), *const (dyn Router + 'static)>(router)
        };
        lib.create_worker(router, &times)
    });
    let frame = match loaded {
        Ok(f) => {
            crate::stop_for_tracer();
            router.conn.borrow_mut().send(&Msg::Ready {
                error: String::new(),
            })?;
            f
        }
        Err(e) => {
            router.conn.borrow_mut().send(&Msg::Ready {
                error: faasfuse_core::error::one_line(&e),
            })?;
            return Ok(());
        }
    };
    loop {
        let msg = router.conn.borrow_mut().recv()?;
        match msg {
            Some(Msg::Call { depth, input }) => {
                let r = frame.call(depth.max(0) as u32, &input);
                router.conn.borrow_mut().send(&Msg::Result {
                    rc: r.rc,
                    output: r.output,
                })?;
            }
            Some(Msg::Shutdown) => {
                // nightcore never destroys a worker nor unloads a library:
                // report the nested-call times and exit.
                let times: Vec<u8> = std::mem::take(&mut *times.borrow_mut())
                    .iter()
                    .flat_map(|t| t.to_le_bytes())
                    .collect();
                router.conn.borrow_mut().send(&Msg::Stats { times })?;
                return Ok(());
            }
            None => return Ok(()),
            Some(other) => bail!(
                "protocol error: unexpected {} from the engine while idle",
                other.kind()
            ),
        }
    }
}
