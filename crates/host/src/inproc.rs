//! In-process mode: every library loaded into this process once, with one
//! worker each, created before the first request and reused; a nested call
//! is a direct call into the callee's worker.
//!
//! nightcore never re-enters a busy worker process: a call to a function
//! that is already running goes to another process of it. One process
//! cannot do that, so such a call fails the request with a clear error,
//! unless the function is declared re-entrant; then an extra worker per
//! nesting depth serves it.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};

use anyhow::{anyhow, Result};

use super::library::{CallResult, Frame, Router, TimeLog, MAX_DEPTH};
use super::{open_libraries, Engine, FunctionSpec};
use crate::library::Library;

pub struct InProcess {
    host: Box<Host>,
}

struct Host {
    libs: Vec<Library>,
    reentrant: Vec<bool>,
    /// The one worker of each library, created before the first request.
    primary: RefCell<Vec<&'static Frame>>,
    /// Extra workers of re-entrant libraries, by (library, depth).
    extras: RefCell<HashMap<(usize, u32), &'static Frame>>,
    counts: RefCell<BTreeMap<(String, Vec<u8>), u64>>,
    times: TimeLog,
    /// Why the current request fails, whatever its root returns.
    error: RefCell<Option<String>>,
}

impl Host {
    fn find(&self, name: &[u8]) -> Option<usize> {
        self.libs.iter().position(|l| l.name.as_bytes() == name)
    }

    fn create(&self, lib: usize) -> Result<&'static Frame> {
        let router: &dyn Router = self;
        // SAFETY (of the erased lifetime): the host is boxed and outlives
        // every call; frames of a dropped host are never called again.
        let router = unsafe {
            std::mem::transmute::<*const (dyn Router + '_), *const (dyn Router + 'static)>(router)
        };
        self.libs[lib].create_worker(router, &self.times)
    }

    fn fail(&self, msg: String) -> CallResult {
        self.error.borrow_mut().get_or_insert(msg);
        CallResult::failed()
    }

    /// Call library `lib` at `depth` on behalf of `caller`.
    fn call(&self, caller: &str, lib: usize, depth: u32, input: &[u8]) -> CallResult {
        let primary = self.primary.borrow()[lib];
        let frame = if !primary.busy() {
            primary
        } else if self.reentrant[lib] {
            let existing = self.extras.borrow().get(&(lib, depth)).copied();
            match existing {
                Some(f) => f,
                None => match self.create(lib) {
                    Ok(f) => {
                        self.extras.borrow_mut().insert((lib, depth), f);
                        f
                    }
                    Err(e) => {
                        eprintln!("faasfuse: {}", faasfuse_core::error::one_line(&e));
                        return CallResult::failed();
                    }
                },
            }
        } else {
            let name = &self.libs[lib].name;
            return self.fail(format!(
                "{caller} calls {name} while {name} is already running in this process: \
                 the in-process host cannot re-enter a function (nightcore sends the call \
                 to another process); use --ipc, or declare {name} re-entrant \
                 (--reentrant {name})"
            ));
        };
        if frame.busy() {
            return self.fail(format!(
                "worker of {} at depth {depth} is busy",
                self.libs[lib].name
            ));
        }
        frame.call(depth, input)
    }
}

impl Router for Host {
    fn invoke(&self, caller: &str, depth: u32, name: &[u8], input: &[u8]) -> CallResult {
        let depth = depth + 1;
        if depth > MAX_DEPTH {
            // Calls past the depth limit fail without being served.
            return CallResult::failed();
        }
        *self
            .counts
            .borrow_mut()
            .entry((caller.to_string(), name.to_vec()))
            .or_default() += 1;
        match self.find(name) {
            Some(lib) => self.call(caller, lib, depth, input),
            None => CallResult::failed(),
        }
    }
}

impl InProcess {
    pub fn start(specs: &[FunctionSpec], reentrant: &[String]) -> Result<InProcess> {
        let libs = open_libraries(specs)?;
        for lib in &libs {
            lib.init()?;
        }
        let host = Box::new(Host {
            reentrant: libs.iter().map(|l| reentrant.contains(&l.name)).collect(),
            libs,
            primary: RefCell::default(),
            extras: RefCell::default(),
            counts: RefCell::default(),
            times: TimeLog::default(),
            error: RefCell::default(),
        });
        // One worker per library, in deployment order, before any request.
        for lib in 0..host.libs.len() {
            let f = host.create(lib)?;
            host.primary.borrow_mut().push(f);
        }
        // Libraries loaded and initialised: a branch recorder starts here.
        crate::stop_for_tracer();
        Ok(InProcess { host })
    }
}

impl Engine for InProcess {
    fn request(&mut self, root: &str, input: &[u8]) -> Result<CallResult> {
        let lib = self
            .host
            .find(root.as_bytes())
            .ok_or_else(|| anyhow!("function {root} is not deployed"))?;
        self.host.error.borrow_mut().take();
        let r = self.host.call("the engine", lib, 0, input);
        match self.host.error.borrow_mut().take() {
            Some(e) => Err(anyhow!("request to {root} failed: {e}")),
            None => Ok(r),
        }
    }

    fn call_counts(&self) -> super::CallCounts {
        let mut out = super::CallCounts::new();
        for ((caller, name), n) in self.host.counts.borrow().iter() {
            *out.entry(caller.clone())
                .or_default()
                .entry(String::from_utf8_lossy(name).into_owned())
                .or_default() += n;
        }
        out
    }

    fn instances(&self) -> BTreeMap<String, u64> {
        let mut out: BTreeMap<String, u64> =
            self.host.libs.iter().map(|l| (l.name.clone(), 1)).collect();
        for (lib, _) in self.host.extras.borrow().keys() {
            *out.entry(self.host.libs[*lib].name.clone()).or_default() += 1;
        }
        out
    }

    fn shutdown(self: Box<Self>) -> Result<Vec<u64>> {
        // Workers are never destroyed and libraries never unloaded, as on
        // nightcore: just report.
        Ok(std::mem::take(&mut *self.host.times.borrow_mut()))
    }
}
