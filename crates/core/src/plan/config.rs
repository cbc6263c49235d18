//! The deployment description: nightcore's `func_config.json` (an array of
//! `funcName`, `funcId`, `minWorkers`, `maxWorkers`) extended per entry with
//! the function's `library` and optional `domain`, `entry`, `maxImageBytes`,
//! `cpuBudget`, `memoryBytes`, `maxMemoryBytes` and `reentrant`. Unknown fields are kept and written back.
//! nightcore's file unchanged (no `library`) works with the libraries given
//! by function name (`--lib NAME=PATH`).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::Result;
use serde::{Deserialize, Serialize};

use crate::error::InputError;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FuncEntry {
    pub func_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub func_id: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_workers: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_workers: Option<u64>,
    /// The function library (relative paths are relative to the config).
    /// nightcore's own file has none: then `--lib NAME=PATH` supplies it.
    #[serde(default)]
    pub library: PathBuf,
    /// Trust domain (tenant); functions of different domains never fuse.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    /// Invoked from outside the deployment (a fusion group may be rooted
    /// here). When no entry says, every function may root a group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entry: Option<bool>,
    /// Largest fused image rooted here, in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_image_bytes: Option<u64>,
    /// Largest sum of CPU shares (0..1 of all samples) in a group rooted here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_budget: Option<f64>,
    /// This function's memory (its worker's size); a fused group needs the
    /// sum of its members'.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_bytes: Option<u64>,
    /// Largest memory of a group rooted here (the sum of its members'
    /// `memoryBytes`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_memory_bytes: Option<u64>,
    /// The function tolerates being re-entered in one process (it keeps no
    /// per-process state across a nested call). nightcore never re-enters a
    /// busy worker process, so by default a call that would re-enter a
    /// fused image stays an RPC; a re-entrant function is served in-process
    /// by an extra worker instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reentrant: Option<bool>,
    /// How the function is kept apart from its callers when fused as a
    /// callee (`"none"`, `"stack"`; see `merge --isolate`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub isolate: Option<crate::merge::Isolation>,
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub path: PathBuf,
    pub functions: Vec<FuncEntry>,
}

impl Config {
    pub fn load(path: &Path) -> Result<Config> {
        Self::load_with(path, &[])
    }

    /// Load `path`, with libraries given per function name as `NAME=PATH`
    /// (`--lib`; relative to the working directory). A given library
    /// replaces the entry's `library`; an entry needs one or the other.
    pub fn load_with(path: &Path, libs: &[String]) -> Result<Config> {
        let text = crate::files::read_text(path, "a function config")?;
        let mut functions: Vec<FuncEntry> = serde_json::from_str(&text)
            .map_err(|e| InputError::new(path, format!("not a function config: {e}")))?;
        let mut given: Vec<(String, PathBuf)> = Vec::new();
        for l in libs {
            let Some((name, lib)) = l
                .split_once('=')
                .filter(|(n, p)| !n.is_empty() && !p.is_empty())
            else {
                return Err(InputError::new(
                    l,
                    "--lib takes NAME=PATH (the config's funcName and its library)",
                )
                .into());
            };
            if !functions.iter().any(|f| f.func_name == name) {
                return Err(InputError::new(
                    path,
                    format!("--lib names function {name}, which this config does not list"),
                )
                .into());
            }
            if given.iter().any(|(n, _)| n == name) {
                return Err(InputError::new(l, format!("--lib gives {name} twice")).into());
            }
            given.push((name.to_string(), std::path::absolute(lib)?));
        }
        let base = path.parent().unwrap_or(Path::new("."));
        let mut seen = BTreeSet::new();
        for f in &mut functions {
            if f.func_name.is_empty() {
                return Err(InputError::new(path, "an entry has an empty funcName").into());
            }
            if !seen.insert(f.func_name.clone()) {
                return Err(InputError::new(
                    path,
                    format!("function {} is listed twice", f.func_name),
                )
                .into());
            }
            if let Some((_, lib)) = given.iter().find(|(n, _)| *n == f.func_name) {
                f.library = lib.clone();
            } else if f.library.as_os_str().is_empty() {
                return Err(InputError::new(
                    path,
                    format!(
                        "function {} has no library: give --lib {}=PATH or a \"library\" field",
                        f.func_name, f.func_name
                    ),
                )
                .into());
            }
            if f.library.is_relative() {
                f.library = base.join(&f.library);
            }
            if !f.library.is_file() {
                return Err(InputError::new(
                    path,
                    format!(
                        "library of {} not found: {}",
                        f.func_name,
                        f.library.display()
                    ),
                )
                .into());
            }
            if let Some(c) = f.cpu_budget {
                if !(0.0..=1.0).contains(&c) {
                    return Err(InputError::new(
                        path,
                        format!("cpuBudget of {} must be within 0..1", f.func_name),
                    )
                    .into());
                }
            }
        }
        if functions.is_empty() {
            return Err(InputError::new(path, "no functions").into());
        }
        Ok(Config {
            path: path.to_path_buf(),
            functions,
        })
    }

    /// A deployment of just these libraries, the first one its entry (what
    /// `merge --profile` plans over).
    pub fn from_specs(specs: &[crate::spec::FunctionSpec]) -> Config {
        let functions = specs
            .iter()
            .enumerate()
            .map(|(i, s)| FuncEntry {
                func_name: s.name.clone(),
                func_id: None,
                min_workers: None,
                max_workers: None,
                library: s.path.clone(),
                domain: None,
                entry: Some(i == 0),
                max_image_bytes: None,
                cpu_budget: None,
                memory_bytes: None,
                max_memory_bytes: None,
                reentrant: None,
                isolate: None,
                extra: Default::default(),
            })
            .collect();
        Config {
            path: PathBuf::from("<command line>"),
            functions,
        }
    }

    pub fn get(&self, name: &str) -> Option<&FuncEntry> {
        self.functions.iter().find(|f| f.func_name == name)
    }
}
