//! Where a command's time goes, printed when `FAASFUSE_TIMING` is set: one
//! line per command on standard error, each phase's seconds in order.

use std::time::Instant;

/// Phases of one command, timed back to back.
pub struct Phases {
    what: &'static str,
    on: bool,
    last: Instant,
    done: Vec<(&'static str, f64)>,
}

impl Phases {
    pub fn start(what: &'static str) -> Phases {
        Phases {
            what,
            on: std::env::var_os("FAASFUSE_TIMING").is_some(),
            last: Instant::now(),
            done: Vec::new(),
        }
    }

    /// The phase `name` ended now.
    pub fn mark(&mut self, name: &'static str) {
        if self.on {
            let now = Instant::now();
            self.done.push((name, (now - self.last).as_secs_f64()));
            self.last = now;
        }
    }
}

impl Drop for Phases {
    fn drop(&mut self) {
        if self.on && !self.done.is_empty() {
            let total: f64 = self.done.iter().map(|(_, s)| s).sum();
            let each: Vec<String> = self
                .done
                .iter()
                .map(|(n, s)| format!("{n} {s:.3}"))
                .collect();
            eprintln!(
                "faasfuse: {} in {total:.3} s: {}",
                self.what,
                each.join(", ")
            );
        }
    }
}
