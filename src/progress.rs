//! Progress bars on the terminal, for the library's long work (reading a
//! large profile): drawn only when both standard error and standard output
//! are terminals, so logs and pipes stay clean.

use std::io::IsTerminal;

use faasfuse_core::progress::{Bar, Sink};

/// Inputs smaller than this read too fast for a bar to help.
const LARGE: u64 = 64 << 20;

pub struct Terminal;

struct Drawn(indicatif::ProgressBar);

impl Bar for Drawn {
    fn set(&self, done: u64) {
        self.0.set_position(done);
    }
    fn finish(&self) {
        self.0.finish_and_clear();
    }
}

impl Sink for Terminal {
    fn bytes(&self, _what: &str, total: u64) -> Option<Box<dyn Bar>> {
        if total < LARGE || !std::io::stderr().is_terminal() || !std::io::stdout().is_terminal() {
            return None;
        }
        let b = indicatif::ProgressBar::new(total);
        if let Ok(style) = indicatif::ProgressStyle::with_template(
            "{spinner} reading {bytes}/{total_bytes} [{wide_bar}] {bytes_per_sec}, {eta} left",
        ) {
            b.set_style(style);
        }
        Some(Box::new(Drawn(b)))
    }
}
