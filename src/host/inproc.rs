//! In-process mode: every library loaded into this process, nested calls
//! served by a direct call into the callee's worker.

use anyhow::{anyhow, Result};

use super::library::{CallResult, Router, Workers};
use super::{open_libraries, Engine, FunctionSpec};

pub struct InProcess {
    workers: Workers,
}

struct LocalRouter<'a> {
    workers: &'a Workers,
}

impl Router for LocalRouter<'_> {
    fn invoke(&self, name: &[u8], input: &[u8], depth: u32) -> CallResult {
        match self.workers.find(name) {
            Some(lib) => self.workers.call(lib, depth, input, self),
            None => CallResult::failed(),
        }
    }
}

impl InProcess {
    pub fn start(specs: &[FunctionSpec]) -> Result<InProcess> {
        let workers = Workers::new(open_libraries(specs)?)?;
        // Libraries loaded and initialised: a branch recorder starts here.
        crate::profile::record::stop_for_tracer();
        Ok(InProcess { workers })
    }
}

impl Engine for InProcess {
    fn request(&mut self, root: &str, input: &[u8]) -> Result<CallResult> {
        let lib = self
            .workers
            .find(root.as_bytes())
            .ok_or_else(|| anyhow!("function {root} is not deployed"))?;
        let router = LocalRouter {
            workers: &self.workers,
        };
        Ok(self.workers.call(lib, 0, input, &router))
    }

    fn call_counts(&self) -> super::CallCounts {
        self.workers.call_counts()
    }

    fn shutdown(self: Box<Self>) -> Result<Vec<u64>> {
        let times = self.workers.take_nested_times();
        drop(self);
        Ok(times)
    }
}
