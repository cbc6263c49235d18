//! Each input library read, validated and searched for RPC sites once per
//! process: a command's stages (the profile's image matching, the plan's
//! static edges, the merge) share what the first of them loaded, instead
//! of each opening and parsing the file again.
//!
//! Keyed by the file's canonical path; a failed load is not kept (the next
//! stage that asks fails the same way, naming the file), nor is one of a
//! file changed since.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use anyhow::Result;

use crate::analyze::{find_rpc_sites, RpcSite};
use crate::elf::Image;

/// An input library and its RPC sites.
pub struct Analysed {
    pub image: Image,
    pub sites: Vec<RpcSite>,
}

type Cache = Mutex<HashMap<PathBuf, Arc<OnceLock<Arc<Analysed>>>>>;

fn cache() -> &'static Cache {
    static CACHE: OnceLock<Cache> = OnceLock::new();
    CACHE.get_or_init(Default::default)
}

/// `path` loaded and analysed, once per process.
pub fn load(path: &Path) -> Result<Arc<Analysed>> {
    let key = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
    // One slot per file, so that two threads asking for one file load it
    // once, and threads asking for others are not held up.
    let slot = {
        let mut cache = cache().lock().unwrap_or_else(|p| p.into_inner());
        let slot = cache.entry(key).or_default();
        // A file rewritten or replaced since it was loaded is loaded again
        // (its image maps the file, and would show the new bytes).
        if slot.get().is_some_and(|a| !a.image.is_current()) {
            *slot = Default::default();
        }
        slot.clone()
    };
    if let Some(a) = slot.get() {
        return Ok(a.clone());
    }
    let image = Image::load(path)?;
    let sites = find_rpc_sites(&image);
    Ok(slot
        .get_or_init(|| Arc::new(Analysed { image, sites }))
        .clone())
}

/// Each of `paths` [`load`]ed, several at once
/// ([`map_ordered`](crate::threads::map_ordered)); an error is the first in
/// `paths` order's, whatever finished first.
pub fn load_all(paths: &[&Path]) -> Result<Vec<Arc<Analysed>>> {
    crate::threads::map_ordered(paths, |p| load(p))
        .into_iter()
        .collect()
}

impl std::ops::Deref for Analysed {
    type Target = Image;
    fn deref(&self) -> &Image {
        &self.image
    }
}

/// Drop every image loaded so far: for a long-running user of the library
/// that rewrites its inputs in place between commands (a file rewritten
/// within one timestamp tick at the same size looks unchanged).
pub fn forget() {
    cache().lock().unwrap_or_else(|p| p.into_inner()).clear();
}
