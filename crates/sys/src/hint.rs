//! Hints to the CPU that change speed, never results.

/// Start loading the cache line at `p` (a prefetch never faults, whatever
/// the address).
#[inline(always)]
pub fn prefetch<T>(p: *const T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch is a hint; it does not fault on any address.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p.cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// Ask for huge pages under the unused capacity of `v` (before it is
/// written): a large hash table probed at random then costs one TLB entry
/// per 2 MiB instead of one per 4 KiB. Only whole 2 MiB pages inside the
/// buffer are advised; a kernel without transparent huge pages ignores it.
pub fn huge_pages<T>(v: &Vec<T>) {
    #[cfg(target_os = "linux")]
    {
        const HUGE: usize = 2 << 20;
        let start = v.as_ptr() as usize + v.len() * std::mem::size_of::<T>();
        let end = v.as_ptr() as usize + v.capacity() * std::mem::size_of::<T>();
        let lo = start.next_multiple_of(HUGE);
        let hi = end & !(HUGE - 1);
        if hi > lo {
            // SAFETY: the range lies inside `v`'s allocation, which the
            // process owns; MADV_HUGEPAGE changes how the kernel backs the
            // pages, never their contents.
            unsafe {
                libc::madvise(lo as *mut libc::c_void, hi - lo, libc::MADV_HUGEPAGE);
            }
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = v;
}
