//! `--ipc` mode: every function runs in its own worker process and the
//! engine (this process) relays every call over a Unix socket, so a nested
//! call pays a real inter-process round trip, as on a FaaS platform.

use std::cell::RefCell;
use std::io::{BufReader, BufWriter};
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use anyhow::{anyhow, bail, Context, Result};

use super::library::{CallResult, Router, Workers, MAX_DEPTH};
use super::wire::Msg;
use super::{Engine, FunctionSpec};

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

struct WorkerProc {
    name: String,
    child: Child,
    conn: Conn,
}

/// The engine side: one worker process per function.
pub struct IpcEngine {
    procs: Vec<WorkerProc>,
    /// Nested calls relayed, by (calling worker, callee name).
    counts: std::collections::HashMap<(usize, Vec<u8>), u64>,
}

impl IpcEngine {
    pub fn start(specs: &[FunctionSpec], worker_exe: &Path) -> Result<IpcEngine> {
        let mut procs = Vec::new();
        for spec in specs {
            procs.push(spawn(spec, worker_exe)?);
        }
        // Wait for every worker to load its library and run faas_init.
        for p in &mut procs {
            match p.conn.recv() {
                Ok(Some(Msg::Ready { error })) if error.is_empty() => {}
                Ok(Some(Msg::Ready { error })) => return Err(anyhow!(error)),
                _ => bail!("worker process for {} failed to start", p.name),
            }
        }
        Ok(IpcEngine {
            procs,
            counts: Default::default(),
        })
    }

    fn find(&self, name: &[u8]) -> Option<usize> {
        self.procs.iter().position(|p| p.name.as_bytes() == name)
    }

    fn lost(&mut self, w: usize) -> anyhow::Error {
        let p = &mut self.procs[w];
        let status = p
            .child
            .wait()
            .map(|s| s.to_string())
            .unwrap_or_else(|e| e.to_string());
        anyhow!(
            "worker process for {} (pid {}) died: {status}",
            p.name,
            p.child.id()
        )
    }

    /// Run function `w` at `depth`, relaying its nested calls recursively.
    fn serve(&mut self, w: usize, depth: i32, input: Vec<u8>) -> Result<CallResult> {
        if self.procs[w]
            .conn
            .send(&Msg::Call { depth, input })
            .is_err()
        {
            return Err(self.lost(w));
        }
        loop {
            let msg = match self.procs[w].conn.recv() {
                Ok(Some(m)) => m,
                _ => return Err(self.lost(w)),
            };
            match msg {
                Msg::Invoke { name, input } => {
                    *self.counts.entry((w, name.clone())).or_default() += 1;
                    let r = match self.find(&name) {
                        Some(t) if depth < MAX_DEPTH as i32 => self.serve(t, depth + 1, input)?,
                        _ => CallResult::failed(),
                    };
                    let reply = Msg::Reply {
                        rc: r.rc,
                        output: r.output,
                    };
                    if self.procs[w].conn.send(&reply).is_err() {
                        return Err(self.lost(w));
                    }
                }
                Msg::Result { rc, output } => return Ok(CallResult { rc, output }),
                other => bail!(
                    "worker process for {} sent an unexpected {other:?}",
                    self.procs[w].name
                ),
            }
        }
    }
}

fn spawn(spec: &FunctionSpec, exe: &Path) -> Result<WorkerProc> {
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
    Ok(WorkerProc {
        name: spec.name.clone(),
        child,
        conn: Conn::new(ours)?,
    })
}

impl Engine for IpcEngine {
    fn request(&mut self, root: &str, input: &[u8]) -> Result<CallResult> {
        let w = self
            .find(root.as_bytes())
            .ok_or_else(|| anyhow!("function {root} is not deployed"))?;
        self.serve(w, 0, input.to_vec())
    }

    fn call_counts(&self) -> super::CallCounts {
        let mut out = super::CallCounts::new();
        for ((w, name), n) in &self.counts {
            *out.entry(self.procs[*w].name.clone())
                .or_default()
                .entry(String::from_utf8_lossy(name).into_owned())
                .or_default() += n;
        }
        out
    }

    fn shutdown(mut self: Box<Self>) -> Result<Vec<u64>> {
        let mut times = Vec::new();
        for p in &mut self.procs {
            p.conn.send(&Msg::Shutdown)?;
            if let Ok(Some(Msg::Stats { times: t })) = p.conn.recv() {
                times.extend(
                    t.chunks_exact(8)
                        .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes"))),
                );
            }
            let status = p.child.wait()?;
            if !status.success() {
                bail!("worker process for {} exited with {status}", p.name);
            }
        }
        Ok(times)
    }
}

impl Drop for IpcEngine {
    fn drop(&mut self) {
        for p in &mut self.procs {
            if let Ok(None) = p.child.try_wait() {
                let _ = p.child.kill();
                let _ = p.child.wait();
            }
        }
    }
}

/// The worker side of a nested call: ask the engine, and serve re-entrant
/// calls into this function (deeper depths) while waiting for the reply.
struct IpcRouter<'a> {
    conn: RefCell<Conn>,
    workers: &'a Workers,
}

impl IpcRouter<'_> {
    fn exchange(&self, m: &Msg) -> Option<Msg> {
        let mut c = self.conn.borrow_mut();
        c.send(m).ok()?;
        c.recv().ok()?
    }
}

impl Router for IpcRouter<'_> {
    fn invoke(&self, name: &[u8], input: &[u8], _depth: u32) -> CallResult {
        let mut next = self.exchange(&Msg::Invoke {
            name: name.to_vec(),
            input: input.to_vec(),
        });
        loop {
            match next {
                Some(Msg::Reply { rc, output }) => return CallResult { rc, output },
                Some(Msg::Call { depth, input }) => {
                    let r = self.workers.call(0, depth as u32, &input, self);
                    next = self.exchange(&Msg::Result {
                        rc: r.rc,
                        output: r.output,
                    });
                }
                // The engine is gone or confused: nothing sensible is left to do.
                _ => std::process::exit(3),
            }
        }
    }
}

/// Entry point of a worker process (`faasfuse __worker --fd N --name NAME LIB`).
pub fn worker_main(fd: i32, name: &str, path: &std::path::Path) -> Result<()> {
    // SAFETY: the engine passed us this socket as descriptor `fd`.
    let stream = unsafe { UnixStream::from_raw_fd(fd) };
    let mut conn = Conn::new(stream)?;
    let loaded = super::open_libraries(&[FunctionSpec {
        name: name.to_string(),
        path: path.to_path_buf(),
    }])
    .and_then(Workers::new);
    let workers = match loaded {
        Ok(w) => {
            crate::profile::record::stop_for_tracer();
            conn.send(&Msg::Ready {
                error: String::new(),
            })?;
            w
        }
        Err(e) => {
            conn.send(&Msg::Ready {
                error: crate::error::one_line(&e),
            })?;
            return Ok(());
        }
    };
    let router = IpcRouter {
        conn: RefCell::new(conn),
        workers: &workers,
    };
    loop {
        let msg = router.conn.borrow_mut().recv()?;
        match msg {
            Some(Msg::Call { depth, input }) => {
                let r = workers.call(0, depth as u32, &input, &router);
                router.conn.borrow_mut().send(&Msg::Result {
                    rc: r.rc,
                    output: r.output,
                })?;
            }
            Some(Msg::Shutdown) => {
                let times: Vec<u8> = workers
                    .take_nested_times()
                    .iter()
                    .flat_map(|t| t.to_le_bytes())
                    .collect();
                let mut conn = router.conn.into_inner();
                // Destroy workers and close the library before answering, so
                // the engine sees finalizers complete.
                drop(workers);
                conn.send(&Msg::Stats { times })?;
                return Ok(());
            }
            None => return Ok(()),
            Some(other) => bail!("unexpected message from the engine: {other:?}"),
        }
    }
}
