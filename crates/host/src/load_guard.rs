//! While a library's initializers run inside `dlopen`, a fault in them
//! (SIGSEGV, SIGBUS, SIGILL, SIGTRAP, SIGFPE) ends the host with one line
//! naming the library and exit code 2, instead of a bare signal death. A
//! fault outside a load, or one a handler installed by the library passes
//! on, takes the default action, as it would without the guard.

use std::ffi::c_int;
use std::path::Path;
use std::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};

const SIGNALS: [(c_int, &str); 5] = [
    (libc::SIGSEGV, "SIGSEGV"),
    (libc::SIGBUS, "SIGBUS"),
    (libc::SIGILL, "SIGILL"),
    (libc::SIGTRAP, "SIGTRAP"),
    (libc::SIGFPE, "SIGFPE"),
];

/// The message prefix of the load in progress (null when none is).
static MESSAGE: AtomicPtr<u8> = AtomicPtr::new(std::ptr::null_mut());
static MESSAGE_LEN: AtomicUsize = AtomicUsize::new(0);

extern "C" fn on_fault(sig: c_int) {
    let msg = MESSAGE.load(Ordering::SeqCst);
    if !msg.is_null() {
        let len = MESSAGE_LEN.load(Ordering::SeqCst);
        let name = SIGNALS
            .iter()
            .find(|(s, _)| *s == sig)
            .map_or("a signal", |(_, n)| n);
        // SAFETY: write(2) and _exit(2) are async-signal-safe; the message
        // buffer lives until the load ends, and the load has not ended.
        unsafe {
            libc::write(2, msg.cast(), len);
            libc::write(2, name.as_ptr().cast(), name.len());
            libc::write(2, b")\n".as_ptr().cast(), 2);
            libc::_exit(2);
        }
    }
    // Not loading: the default action, as without the guard.
    // SAFETY: resetting this signal's disposition and raising it again.
    unsafe {
        libc::signal(sig, libc::SIG_DFL);
        libc::raise(sig);
    }
}

/// Run `load` (a `dlopen` of `path`) with the guard on.
pub fn guarded<T>(path: &Path, load: impl FnOnce() -> T) -> T {
    let text = format!(
        "faasfuse: error: {}: crashed in its initializers while being loaded (",
        faasfuse_core::error::escape_controls(&path.display().to_string())
    )
    .into_bytes()
    .into_boxed_slice();
    let len = text.len();
    let ptr = Box::into_raw(text) as *mut u8;
    MESSAGE_LEN.store(len, Ordering::SeqCst);
    MESSAGE.store(ptr, Ordering::SeqCst);
    let mut old: Vec<(c_int, libc::sigaction)> = Vec::new();
    for (sig, _) in SIGNALS {
        // SAFETY: installing a handler with a zeroed, then filled sigaction.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_fault as extern "C" fn(c_int) as usize;
            libc::sigemptyset(&mut sa.sa_mask);
            let mut prev: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(sig, &sa, &mut prev) == 0 {
                old.push((sig, prev));
            }
        }
    }
    let r = load();
    for (sig, prev) in old {
        // SAFETY: restoring the previous handler unless the library put in
        // one of its own (which then chains to the guard: not loading any
        // more, the guard takes the default action).
        unsafe {
            let mut cur: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(sig, std::ptr::null(), &mut cur) == 0
                && cur.sa_sigaction == on_fault as extern "C" fn(c_int) as usize
            {
                libc::sigaction(sig, &prev, std::ptr::null_mut());
            }
        }
    }
    MESSAGE.store(std::ptr::null_mut(), Ordering::SeqCst);
    // SAFETY: the pointer came from Box::into_raw above with this length,
    // and the handler no longer reads it (MESSAGE is null).
    drop(unsafe { Box::from_raw(std::ptr::slice_from_raw_parts_mut(ptr, len)) });
    r
}
