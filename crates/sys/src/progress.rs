//! Progress of long work. The library reports it; whoever runs the work
//! decides whether and how to draw it (the command-line tool draws a bar
//! on a terminal; a library user sees nothing unless it installs a sink).

use std::sync::OnceLock;

/// One piece of long work in progress.
pub trait Bar: Send + Sync {
    /// `done` of the total units are complete.
    fn set(&self, done: u64);
    /// The work ended; remove whatever was drawn.
    fn finish(&self);
}

/// Makes a [`Bar`] for a piece of work, or none when it is not worth
/// drawing.
pub trait Sink: Send + Sync {
    /// A bar for reading `total` bytes of `what`.
    fn bytes(&self, what: &str, total: u64) -> Option<Box<dyn Bar>>;
}

static SINK: OnceLock<Box<dyn Sink>> = OnceLock::new();

/// Install the process's sink (once; later calls are ignored).
pub fn install(sink: Box<dyn Sink>) {
    let _ = SINK.set(sink);
}

/// A bar for reading `total` bytes of `what`, if a sink draws one.
pub fn bytes(what: &str, total: u64) -> Option<Box<dyn Bar>> {
    SINK.get()?.bytes(what, total)
}
