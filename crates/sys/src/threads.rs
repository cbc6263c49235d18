//! How many threads a parallel stage uses.

/// Every core, unless `FAASFUSE_THREADS` says otherwise (at most 64).
pub fn worker_threads() -> usize {
    std::env::var("FAASFUSE_THREADS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|&n| n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .min(64)
}

/// `f` of each of `items`, on up to [`worker_threads`] threads at once, in
/// `items`' order (whatever finished first). A panic in `f` is the caller's.
pub fn map_ordered<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;
    let next = AtomicUsize::new(0);
    let done: Vec<Mutex<Option<R>>> = items.iter().map(|_| Mutex::new(None)).collect();
    std::thread::scope(|s| {
        for _ in 0..worker_threads().min(items.len()) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(item) = items.get(i) else { break };
                let r = f(item);
                *done[i].lock().unwrap_or_else(|p| p.into_inner()) = Some(r);
            });
        }
    });
    done.into_iter()
        .map(|d| {
            d.into_inner()
                .unwrap_or_else(|p| p.into_inner())
                .expect("each item mapped")
        })
        .collect()
}
