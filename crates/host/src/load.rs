//! The load test's child side (`faasfuse __load`): load a library in this
//! process the way the platform will, and find its entry points.

use std::path::Path;

use anyhow::{bail, Result};

/// The child side of the load test: load, look up the entry points, close.
pub fn load_in_this_process(path: &Path) -> Result<()> {
    use std::ffi::{CStr, CString};
    use std::os::unix::ffi::OsStrExt;
    let abs = if path.starts_with("/proc/self/fd") {
        path.to_path_buf()
    } else {
        std::fs::canonicalize(path)?
    };
    let c = CString::new(abs.as_os_str().as_bytes())?;
    // SAFETY: dlopen/dlsym/dlclose with valid C strings; the handle is
    // closed before returning.
    unsafe {
        let h = libc::dlopen(c.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL);
        if h.is_null() {
            bail!("{}", CStr::from_ptr(libc::dlerror()).to_string_lossy());
        }
        for name in faasfuse_core::elf::ENTRY_POINTS {
            let n = CString::new(name)?;
            if libc::dlsym(h, n.as_ptr()).is_null() {
                bail!("{name} not found by dlsym");
            }
        }
        libc::dlclose(h);
    }
    Ok(())
}
