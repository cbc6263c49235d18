//! A function library opened with `dlopen`, its four worker_v1 entry points
//! and the per-depth workers the host creates for it.

use std::cell::RefCell;
use std::collections::HashMap;
use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::path::{Path, PathBuf};

use anyhow::{bail, Result};

use crate::error::InputError;

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
type DestroyFn = unsafe extern "C" fn(*mut c_void) -> c_int;
type CallFn = unsafe extern "C" fn(*mut c_void, *const c_char, usize) -> c_int;

/// Deepest nesting the host serves; a deeper nested call fails, as a
/// platform's call-depth limit would, instead of overflowing the stack.
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

/// Where a worker's nested calls go: straight to another library in this
/// process, or to the engine over a socket.
pub trait Router {
    fn invoke(&self, name: &[u8], input: &[u8], depth: u32) -> CallResult;
}

/// A loaded function library.
pub struct Library {
    pub name: String,
    pub path: PathBuf,
    handle: *mut c_void,
    init: InitFn,
    create: CreateFn,
    destroy: DestroyFn,
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
        // RTLD_LOCAL keeps each library's exports (`helper`, `g_state`) out of
        // the other libraries' symbol lookup, as separate processes would.
        // SAFETY: loading a shared object runs its initializers; the file was
        // validated as an x86-64 shared object beforehand.
        let handle = unsafe { libc::dlopen(cpath.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
        if handle.is_null() {
            return Err(InputError::new(path, format!("dlopen failed: {}", dl_error())).into());
        }
        let sym = |s: &str| -> Result<*mut c_void> {
            let c = CString::new(s).expect("static symbol name");
            // SAFETY: handle is a live dlopen handle.
            let p = unsafe { libc::dlsym(handle, c.as_ptr()) };
            if p.is_null() {
                Err(InputError::new(path, format!("missing export {s}")).into())
            } else {
                Ok(p)
            }
        };
        // SAFETY: the symbols are the worker_v1 entry points with these types.
        unsafe {
            Ok(Library {
                name: name.to_string(),
                path: path.to_path_buf(),
                handle,
                init: std::mem::transmute::<*mut c_void, InitFn>(sym("faas_init")?),
                create: std::mem::transmute::<*mut c_void, CreateFn>(sym(
                    "faas_create_func_worker",
                )?),
                destroy: std::mem::transmute::<*mut c_void, DestroyFn>(sym(
                    "faas_destroy_func_worker",
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
}

impl Drop for Library {
    fn drop(&mut self) {
        // SAFETY: every worker of this library was destroyed before (Workers
        // is dropped first), so no code of it runs any more.
        unsafe {
            libc::dlclose(self.handle);
        }
    }
}

/// One worker of one library at one nesting depth. Its address is the
/// `caller_ctx` the library passes back to `invoke` and `append`.
struct Frame {
    lib: usize,
    depth: u32,
    handle: *mut c_void,
    router: *const dyn Router,
    output: Vec<u8>,
    /// Outputs of nested calls, kept alive until the current call ends.
    nested: Vec<Vec<u8>>,
    /// Where nested-call round-trip times (ns) are recorded.
    times: *const RefCell<Vec<u64>>,
    /// Where nested calls are counted by (caller library, callee name).
    counts: *const EdgeCounts,
}

/// Nested calls by (caller library, callee name).
type EdgeCounts = RefCell<HashMap<(usize, Vec<u8>), u64>>;

unsafe extern "C" fn host_invoke(
    ctx: *mut c_void,
    func_name: *const c_char,
    input: *const c_char,
    input_len: usize,
    output: *mut *const c_char,
    output_len: *mut usize,
) -> c_int {
    let frame = ctx as *mut Frame;
    if frame.is_null() || func_name.is_null() || output.is_null() || output_len.is_null() {
        return -1;
    }
    *output = std::ptr::null();
    *output_len = 0;
    let name = CStr::from_ptr(func_name).to_bytes().to_vec();
    let input = if input_len == 0 || input.is_null() {
        Vec::new()
    } else {
        std::slice::from_raw_parts(input as *const u8, input_len).to_vec()
    };
    let depth = (*frame).depth + 1;
    if depth <= MAX_DEPTH {
        // Calls past the depth limit fail without being served.
        *(*(*frame).counts)
            .borrow_mut()
            .entry(((*frame).lib, name.clone()))
            .or_default() += 1;
    }
    let start = std::time::Instant::now();
    let result = if depth > MAX_DEPTH {
        CallResult::failed()
    } else {
        (*(*frame).router).invoke(&name, &input, depth)
    };
    (*(*frame).times)
        .borrow_mut()
        .push(start.elapsed().as_nanos() as u64);
    if result.rc != 0 {
        return -1;
    }
    let nested = &mut (*frame).nested;
    nested.push(result.output);
    let kept = nested.last().expect("just pushed");
    *output = kept.as_ptr() as *const c_char;
    *output_len = kept.len();
    0
}

unsafe extern "C" fn host_append(ctx: *mut c_void, data: *const c_char, len: usize) {
    let frame = ctx as *mut Frame;
    if frame.is_null() || data.is_null() || len == 0 {
        return;
    }
    (*frame)
        .output
        .extend_from_slice(std::slice::from_raw_parts(data as *const u8, len));
}

/// The libraries of one process and their workers, created lazily per
/// (library, depth) so that re-entrant calls use different workers.
pub struct Workers {
    frames: RefCell<HashMap<(usize, u32), Box<Frame>>>,
    libs: Vec<Library>,
    nested_times: Box<RefCell<Vec<u64>>>,
    counts: Box<EdgeCounts>,
}

impl Workers {
    /// Take ownership of opened libraries and run each one's `faas_init`,
    /// in the given order.
    pub fn new(libs: Vec<Library>) -> Result<Workers> {
        for lib in &libs {
            lib.init()?;
        }
        Ok(Workers {
            frames: Default::default(),
            libs,
            nested_times: Box::default(),
            counts: Box::default(),
        })
    }

    /// Nested calls made by this process's workers, by caller and callee.
    pub fn call_counts(&self) -> super::CallCounts {
        let mut out = super::CallCounts::new();
        for ((lib, name), n) in self.counts.borrow().iter() {
            *out.entry(self.libs[*lib].name.clone())
                .or_default()
                .entry(String::from_utf8_lossy(name).into_owned())
                .or_default() += n;
        }
        out
    }

    pub fn find(&self, name: &[u8]) -> Option<usize> {
        self.libs.iter().position(|l| l.name.as_bytes() == name)
    }

    /// Durations (ns) of every nested call made by this process's workers.
    pub fn take_nested_times(&self) -> Vec<u64> {
        std::mem::take(&mut self.nested_times.borrow_mut())
    }

    fn frame(&self, lib: usize, depth: u32, router: &dyn Router) -> Result<*mut Frame> {
        let mut frames = self.frames.borrow_mut();
        if let Some(f) = frames.get_mut(&(lib, depth)) {
            // SAFETY: only the lifetime is erased; `router` outlives every call.
            f.router = unsafe { erase(router) };
            return Ok(&mut **f as *mut Frame);
        }
        let mut frame = Box::new(Frame {
            lib,
            depth,
            handle: std::ptr::null_mut(),
            // SAFETY: as above.
            router: unsafe { erase(router) },
            output: Vec::new(),
            nested: Vec::new(),
            times: &*self.nested_times,
            counts: &*self.counts,
        });
        let l = &self.libs[lib];
        let ctx = &mut *frame as *mut Frame as *mut c_void;
        let mut handle = std::ptr::null_mut();
        // SAFETY: entry point of a loaded library; ctx stays valid (boxed).
        let rc = unsafe { (l.create)(ctx, host_invoke, host_append, &mut handle) };
        if rc != 0 {
            bail!(
                "{}: faas_create_func_worker of {} returned {rc}",
                l.path.display(),
                l.name
            );
        }
        frame.handle = handle;
        let ptr = &mut *frame as *mut Frame;
        frames.insert((lib, depth), frame);
        Ok(ptr)
    }

    /// Call library `lib` at nesting `depth` (0 for a request from outside).
    pub fn call(&self, lib: usize, depth: u32, input: &[u8], router: &dyn Router) -> CallResult {
        let frame = match self.frame(lib, depth, router) {
            Ok(f) => f,
            Err(e) => {
                eprintln!("faasfuse: {}", crate::error::one_line(&e));
                return CallResult::failed();
            }
        };
        // SAFETY: the frame is boxed and not borrowed elsewhere while its own
        // worker runs; nested calls use frames of greater depth.
        unsafe {
            (*frame).output.clear();
            (*frame).nested.clear();
            let call = self.libs[lib].call;
            let rc = call(
                (*frame).handle,
                input.as_ptr() as *const c_char,
                input.len(),
            );
            let output = std::mem::take(&mut (*frame).output);
            (*frame).nested.clear();
            debug_assert_eq!((*frame).lib, lib);
            CallResult { rc, output }
        }
    }
}

/// Forget the lifetime of a router reference; the caller guarantees the
/// router outlives every call made through the frame.
unsafe fn erase(r: &dyn Router) -> *const dyn Router {
    std::mem::transmute::<&dyn Router, &'static dyn Router>(r) as *const dyn Router
}

impl Drop for Workers {
    fn drop(&mut self) {
        let mut frames = std::mem::take(&mut *self.frames.borrow_mut())
            .into_iter()
            .collect::<Vec<_>>();
        // Deterministic teardown: by library, then deepest worker first.
        frames.sort_by_key(|((lib, depth), _)| (*lib, std::cmp::Reverse(*depth)));
        for ((lib, _), frame) in frames {
            // SAFETY: entry point of a loaded library, called once per worker.
            unsafe {
                (self.libs[lib].destroy)(frame.handle);
            }
        }
        // Libraries are closed in reverse load order.
        while let Some(lib) = self.libs.pop() {
            drop(lib);
        }
    }
}
