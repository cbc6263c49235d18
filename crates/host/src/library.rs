//! A function library opened with `dlopen`, its worker_v1 entry points, and
//! the workers (frames) the host creates for it.
//!
//! The process model is nightcore's (`src/worker/v1/` in ut-osa/nightcore):
//! a library is loaded `RTLD_LAZY` and never unloaded, `faas_init` runs once,
//! a worker is created once and reused for every call, one call at a time,
//! and `faas_destroy_func_worker` is never called. Every call gets a private
//! copy of its input followed by a NUL byte, as nightcore's message buffers
//! provide.

use std::cell::UnsafeCell;
use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use anyhow::{bail, Result};

use faasfuse_core::error::InputError;

pub type InvokeFn = unsafe extern "C" fn(
    caller_ctx: *mut c_void,
    func_name: *const c_char,
    input: *const c_char,
    input_len: usize,
    output: *mut *const c_char,
    output_len: *mut usize,
) -> c_int;
pub type AppendFn = unsafe extern "C" fn(caller_ctx: *mut c_void, data: *const c_char, len: usize);
type InitFn = unsafe extern "C" fn() -> c_int;
type CreateFn = unsafe extern "C" fn(*mut c_void, InvokeFn, AppendFn, *mut *mut c_void) -> c_int;
type CallFn = unsafe extern "C" fn(*mut c_void, *const c_char, usize) -> c_int;

/// Deepest nesting the host serves (a request runs at depth 0); a deeper
/// nested call fails with -1, as a platform's call-depth limit would,
/// instead of overflowing the stack or exhausting the process pool.
pub const MAX_DEPTH: u32 = 64;

/// What one call of a function produced.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CallResult {
    pub rc: i32,
    pub output: Vec<u8>,
}

impl CallResult {
    pub fn failed() -> Self {
        CallResult {
            rc: -1,
            output: Vec::new(),
        }
    }
}

/// Where a worker's nested calls go: to another library in this process,
/// or to the engine over a socket. `caller` is the calling function's name,
/// `depth` the depth of the calling call.
pub trait Router {
    fn invoke(&self, caller: &str, depth: u32, name: &[u8], input: &[u8]) -> CallResult;
}

/// A loaded function library. It is never unloaded: nightcore never calls
/// `dlclose`, functions may rely on that (a thread or an `atexit` handler
/// left behind keeps running its code), and a library with `STB_GNU_UNIQUE`
/// symbols (C++ inline statics, template statics) could not be unloaded
/// anyway.
pub struct Library {
    pub name: String,
    pub path: PathBuf,
    init: InitFn,
    create: CreateFn,
    call: CallFn,
}

fn dl_error() -> String {
    // SAFETY: dlerror returns NULL or a valid C string owned by libc.
    unsafe {
        let e = libc::dlerror();
        if e.is_null() {
            "unknown dynamic loader error".into()
        } else {
            CStr::from_ptr(e).to_string_lossy().into_owned()
        }
    }
}

impl Library {
    /// `dlopen` a library that has already been validated as a worker_v1
    /// function library (see `elf::Image::require_entry_points`).
    pub fn open(name: &str, path: &Path) -> Result<Library> {
        // A path without a slash would make dlopen search the library path.
        let abs = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
        let cpath = CString::new(abs.as_os_str().as_encoded_bytes())
            .map_err(|_| InputError::new(path, "path contains a NUL byte"))?;
        // RTLD_LAZY as nightcore loads a function; RTLD_LOCAL keeps each
        // library's exports (`helper`, `g_state`) out of the other
        // libraries' symbol lookup, as separate processes would.
        // SAFETY: loading a shared object runs its initializers; the file was
        // validated as an x86-64 shared object beforehand.
        let handle = crate::load_guard::guarded(path, || unsafe {
            libc::dlopen(cpath.as_ptr(), libc::RTLD_LAZY | libc::RTLD_LOCAL)
        });
        if handle.is_null() {
            return Err(InputError::new(path, format!("dlopen failed: {}", dl_error())).into());
        }
        let sym = |s: &str| -> Result<*mut c_void> {
            let c = CString::new(s).expect("static symbol name");
            // SAFETY: handle is a live dlopen handle (never closed).
            let p = unsafe { libc::dlsym(handle, c.as_ptr()) };
            if p.is_null() {
                Err(InputError::new(path, format!("missing export {s}")).into())
            } else {
                Ok(p)
            }
        };
        // faas_destroy_func_worker is required by validation but never
        // called: nightcore never destroys a worker.
        sym("faas_destroy_func_worker")?;
        // SAFETY: the symbols are the worker_v1 entry points with these types.
        unsafe {
            Ok(Library {
                name: name.to_string(),
                path: path.to_path_buf(),
                init: std::mem::transmute::<*mut c_void, InitFn>(sym("faas_init")?),
                create: std::mem::transmute::<*mut c_void, CreateFn>(sym(
                    "faas_create_func_worker",
                )?),
                call: std::mem::transmute::<*mut c_void, CallFn>(sym("faas_func_call")?),
            })
        }
    }

    /// Run `faas_init` (once per library).
    pub fn init(&self) -> Result<()> {
        // SAFETY: entry point of a loaded library.
        let rc = unsafe { (self.init)() };
        if rc != 0 {
            bail!(
                "{}: faas_init of {} returned {rc}",
                self.path.display(),
                self.name
            );
        }
        Ok(())
    }

    /// Create a worker with `faas_create_func_worker`. Its frame lives as
    /// long as the process (nightcore never destroys a worker, and a thread
    /// the function left behind may still hold its `caller_ctx`).
    pub fn create_worker(
        &self,
        router: *const dyn Router,
        times: *const TimeLog,
    ) -> Result<&'static Frame> {
        let frame: &'static Frame = Box::leak(Box::new(Frame {
            name: self.name.clone(),
            call: self.call,
            handle: UnsafeCell::new(std::ptr::null_mut()),
            owner: AtomicU64::new(0),
            retired: AtomicBool::new(false),
            state: UnsafeCell::new(CallState::default()),
            router,
            times,
        }));
        let ctx = frame as *const Frame as *mut c_void;
        let mut handle = std::ptr::null_mut();
        // Created outside of any call: an invoke from inside
        // faas_create_func_worker fails (no call is running).
        // SAFETY: entry point of a loaded library; ctx stays valid forever.
        let rc = unsafe { (self.create)(ctx, faasfuse_host_invoke, host_append, &mut handle) };
        if rc != 0 {
            bail!(
                "{}: faas_create_func_worker of {} returned {rc}",
                self.path.display(),
                self.name
            );
        }
        // SAFETY: no call runs on this frame yet.
        unsafe { *frame.handle.get() = handle };
        Ok(frame)
    }
}

/// Nested-call round-trip times (ns) of the workers of one process.
pub type TimeLog = std::cell::RefCell<Vec<u64>>;

#[derive(Default)]
struct CallState {
    depth: u32,
    /// Where this call's frame lies in this thread's [`ACTIVE`] stack.
    slot: usize,
    output: Vec<u8>,
    /// Outputs of nested calls, kept alive until the current call ends.
    nested: Vec<Vec<u8>>,
}

/// One worker of one library. Its address is the `caller_ctx` the library
/// passes back to `invoke` and `append`.
pub struct Frame {
    name: String,
    call: CallFn,
    handle: UnsafeCell<*mut c_void>,
    /// `pthread_self()` of the thread running this worker's current call,
    /// 0 while it is idle. Only this is read by other threads.
    owner: AtomicU64,
    /// Its code faulted on a fused image's isolated stack: never called
    /// again (see [`abandon_above`]).
    retired: AtomicBool,
    /// Touched only by the owner thread during a call.
    state: UnsafeCell<CallState>,
    router: *const dyn Router,
    times: *const TimeLog,
}

thread_local! {
    /// The frames whose calls run on this thread, outermost first. A fused
    /// image that recovers from a fault on an isolated stack
    /// (`merge --isolate stack`) resumes its caller's code past the host's
    /// frames of the calls it served in-process on that stack: they never
    /// return, and stay here until [`abandon_above`] finds them.
    static ACTIVE: std::cell::RefCell<Vec<*const Frame>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Frames at `ACTIVE[len..]` belong to calls that were abandoned: a frame
/// below them runs again (it invokes, or its call returned). The innermost
/// ran when the fault happened: its worker is retired (later calls of it
/// fail with -1), as the fused image retires a fused worker whose code
/// faulted; the others' calls failed with the fault and their workers are
/// idle again.
fn abandon_above(len: usize) {
    let stale = ACTIVE.with(|a| {
        let mut a = a.borrow_mut();
        let n = a.len().min(len);
        a.split_off(n)
    });
    for (i, &f) in stale.iter().enumerate() {
        // SAFETY: frames are leaked: they live as long as the process.
        let f = unsafe { &*f };
        if i + 1 == stale.len() {
            f.retired.store(true, Ordering::Release);
            eprintln!(
                "faasfuse: {} faulted while the host ran it on a fused image's isolated stack: \
                 its call failed, and its worker is retired (later calls of it fail with -1)",
                f.name
            );
        }
        f.owner.store(0, Ordering::Release);
    }
}

fn this_thread() -> u64 {
    // SAFETY: pthread_self has no preconditions.
    unsafe { libc::pthread_self() as u64 }
}

impl Frame {
    /// Whether a call of this worker is running (it is on the call stack).
    pub fn busy(&self) -> bool {
        self.owner.load(Ordering::Acquire) != 0
    }

    /// Run one call at `depth` on this thread, with a private NUL-terminated
    /// copy of `input`. The caller guarantees the worker is idle, and that
    /// the frame's router and time log outlive the call.
    pub fn call(&self, depth: u32, input: &[u8]) -> CallResult {
        debug_assert!(!self.busy());
        if self.retired.load(Ordering::Acquire) {
            return CallResult::failed();
        }
        let slot = ACTIVE.with(|a| {
            let mut a = a.borrow_mut();
            a.push(self as *const Frame);
            a.len() - 1
        });
        let mut copy = Vec::with_capacity(input.len() + 1);
        copy.extend_from_slice(input);
        copy.push(0);
        // SAFETY: the worker is idle, so nothing else touches its state; the
        // state is only touched by this thread until `owner` is cleared.
        unsafe {
            {
                let s = &mut *self.state.get();
                s.depth = depth;
                s.slot = slot;
                s.output.clear();
                s.nested.clear();
            }
            self.owner.store(this_thread(), Ordering::Release);
            let rc = (self.call)(
                *self.handle.get(),
                copy.as_ptr() as *const c_char,
                input.len(),
            );
            self.owner.store(0, Ordering::Release);
            abandon_above(slot + 1);
            ACTIVE.with(|a| a.borrow_mut().truncate(slot));
            let s = &mut *self.state.get();
            s.nested.clear();
            CallResult {
                rc,
                output: std::mem::take(&mut s.output),
            }
        }
    }
}

/// The callee name of an invoke, for messages.
unsafe fn name_of(func_name: *const c_char) -> String {
    if func_name.is_null() {
        "(null)".into()
    } else {
        CStr::from_ptr(func_name).to_string_lossy().into_owned()
    }
}

/// The `invoke_fn` every worker gets. Exported by name from the
/// `faasfuse` binary, with [`faasfuse_host_depth`] and
/// [`faasfuse_host_invoke_at`]: the fusion runtime of a fused image checks
/// that its invoke is this one before it uses them.
///
/// # Safety
/// `ctx` is the `caller_ctx` of a worker this host created; the other
/// pointers are as worker_v1's `invoke_fn` has them.
#[no_mangle]
pub unsafe extern "C" fn faasfuse_host_invoke(
    ctx: *mut c_void,
    func_name: *const c_char,
    input: *const c_char,
    input_len: usize,
    output: *mut *const c_char,
    output_len: *mut usize,
) -> c_int {
    invoke_at(ctx, 0, func_name, input, input_len, output, output_len)
}

/// The depth of the call running on worker `ctx` (0 when none runs on
/// this thread). A fused image reads it when its root's call begins: its
/// fused calls nest below that depth.
///
/// # Safety
/// `ctx` is the `caller_ctx` of a worker this host created.
#[no_mangle]
pub unsafe extern "C" fn faasfuse_host_depth(ctx: *mut c_void) -> u32 {
    let frame = ctx as *const Frame;
    if frame.is_null() || (*frame).owner.load(Ordering::Acquire) != this_thread() {
        return 0;
    }
    (*(*frame).state.get()).depth
}

/// [`faasfuse_host_invoke`] from a call at `depth` (or deeper: the depth
/// of the call running on `ctx`): a fused image's callee calling the host
/// passes its own depth, so host RPCs and fused calls count against one
/// [`MAX_DEPTH`]. The platform's ABI carries no depth; nightcore has no
/// such limit (an INVOKE_FUNC message names only the parent call).
///
/// # Safety
/// As [`faasfuse_host_invoke`].
#[no_mangle]
pub unsafe extern "C" fn faasfuse_host_invoke_at(
    ctx: *mut c_void,
    depth: u32,
    func_name: *const c_char,
    input: *const c_char,
    input_len: usize,
    output: *mut *const c_char,
    output_len: *mut usize,
) -> c_int {
    invoke_at(ctx, depth, func_name, input, input_len, output, output_len)
}

unsafe fn invoke_at(
    ctx: *mut c_void,
    at: u32,
    func_name: *const c_char,
    input: *const c_char,
    input_len: usize,
    output: *mut *const c_char,
    output_len: *mut usize,
) -> c_int {
    let frame = ctx as *const Frame;
    if frame.is_null() || func_name.is_null() || output.is_null() || output_len.is_null() {
        return -1;
    }
    let frame = &*frame;
    *output = std::ptr::null();
    *output_len = 0;
    let owner = frame.owner.load(Ordering::Acquire);
    if owner != this_thread() {
        let why = if owner == 0 {
            "while no call of it is running"
        } else {
            "from a second thread"
        };
        eprintln!(
            "faasfuse: {} invoked {} {why}; one call at a time per process, on the thread \
             that runs it",
            frame.name,
            name_of(func_name)
        );
        return -1;
    }
    let name = CStr::from_ptr(func_name).to_bytes();
    let input = if input_len == 0 || input.is_null() {
        &[][..]
    } else {
        std::slice::from_raw_parts(input as *const u8, input_len)
    };
    // Calls this thread ran above this one and abandoned (a fault
    // recovered on an isolated stack).
    abandon_above((*frame.state.get()).slot + 1);
    let depth = (*frame.state.get()).depth.max(at);
    let start = std::time::Instant::now();
    let result = (*frame.router).invoke(&frame.name, depth, name, input);
    (*frame.times)
        .borrow_mut()
        .push(start.elapsed().as_nanos() as u64);
    if result.rc != 0 {
        return -1;
    }
    // SAFETY: this thread owns the frame; nested calls are done with it.
    let nested = &mut (*frame.state.get()).nested;
    nested.push(result.output);
    let kept = nested.last().expect("just pushed");
    *output = kept.as_ptr() as *const c_char;
    *output_len = kept.len();
    0
}

unsafe extern "C" fn host_append(ctx: *mut c_void, data: *const c_char, len: usize) {
    let frame = ctx as *const Frame;
    if frame.is_null() || data.is_null() || len == 0 {
        return;
    }
    let frame = &*frame;
    if frame.owner.load(Ordering::Acquire) != this_thread() {
        eprintln!(
            "faasfuse: {} appended output from a thread that does not run its current call \
             (or while no call is running); ignored",
            frame.name
        );
        return;
    }
    (*frame.state.get())
        .output
        .extend_from_slice(std::slice::from_raw_parts(data as *const u8, len));
}
