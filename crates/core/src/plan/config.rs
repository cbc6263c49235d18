//! The deployment description: nightcore's `func_config.json` (an array of
//! `funcName`, `funcId`, `minWorkers`, `maxWorkers`) extended per entry with
//! the function's `library` and optional `domain`, `entry`, `maxImageBytes`,
//! `cpuBudget`, `memoryBytes`, `maxMemoryBytes` and `reentrant`. Unknown fields are kept and written back.
//! nightcore's file unchanged (no `library`) works with the libraries given
//! by function name (`--lib NAME=PATH`).
//!
//! A config read from a file must be one nightcore itself would deploy
//! ([`check_nightcore`]): `plan`, `build` and `run --config` refuse the same
//! files, and `build` never writes a deployment nightcore's gateway would
//! refuse.

use std::collections::{BTreeSet, HashMap};
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
    /// Worker processes started up front; 0 or less: none (nightcore's
    /// engine starts none; faasfuse's host starts one on the first call).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_workers: Option<i64>,
    /// Most worker processes; 0 or less: no limit, as in nightcore.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_workers: Option<i64>,
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
    pub isolate: Option<crate::spec::Isolation>,
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
        let value: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| InputError::new(path, format!("not a function config: {e}")))?;
        check_nightcore(path, &value)?;
        let mut functions: Vec<FuncEntry> = Vec::new();
        for (i, e) in value.as_array().into_iter().flatten().enumerate() {
            let f = serde_json::from_value(e.clone())
                .map_err(|why| InputError::new(path, format!("{}: {why}", entry_label(i, e))))?;
            functions.push(f);
        }
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
        for f in &mut functions {
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

/// The largest `funcId`: nightcore routes a call by an 8-bit function id
/// (0 is no function).
pub const MAX_FUNC_ID: u64 = 255;
/// The most methods of a gRPC service: nightcore's method id has 6 bits.
pub const MAX_GRPC_METHODS: usize = 64;

/// `entry N (NAME)` (entries counted from 1), for messages.
fn entry_label(i: usize, e: &serde_json::Value) -> String {
    match e.get("funcName").and_then(|n| n.as_str()) {
        Some(name) => format!("entry {} ({name})", i + 1),
        None => format!("entry {}", i + 1),
    }
}

/// What kind of JSON value `v` is, for messages.
fn json_kind(v: &serde_json::Value) -> &'static str {
    use serde_json::Value as V;
    match v {
        V::Null => "null",
        V::Bool(_) => "a boolean",
        V::Number(n) if n.is_i64() || n.is_u64() => "an integer",
        V::Number(_) => "a fractional number",
        V::String(_) => "a string",
        V::Array(_) => "an array",
        V::Object(_) => "an object",
    }
}

/// Whether nightcore takes `name` as a `funcName`: ASCII letters and digits,
/// or a gRPC service `grpc:` followed by letters, digits, `.` and `_`.
/// (nightcore also takes an empty name; faasfuse does not.)
pub fn valid_func_name(name: &str) -> bool {
    match name.strip_prefix("grpc:") {
        Some(service) => service
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_'),
        None => !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric()),
    }
}

/// Refuse a `func_config.json` that nightcore's gateway, engine or launcher
/// would refuse when loading it, or that would drive its engine into
/// undefined behaviour: an array of objects, each with a `funcName` of
/// ASCII letters and digits (or `grpc:` and letters, digits, `.`, `_`, with
/// a `grpcMethods` array of distinct names, at most 64), used once, and an
/// integer `funcId` in 1..=255, used once; `minWorkers` and `maxWorkers`
/// optional 32-bit integers, a value of 0 or less meaning no limit, and not
/// `minWorkers > maxWorkers` when both are positive (nightcore clamps its
/// worker count between them, undefined when minimum > maximum);
/// `allowHttpGet` and `qsAsInput` booleans when present. Where nightcore
/// would convert a fractional number or a boolean to an integer, faasfuse
/// asks for an integer. One error naming the file, the entry (counted from
/// 1) and the field.
pub fn check_nightcore(path: &Path, config: &serde_json::Value) -> Result<(), InputError> {
    let Some(entries) = config.as_array() else {
        return Err(InputError::new(
            path,
            format!(
                "not a function config: nightcore's func_config.json is a JSON array of entries, this is {}",
                json_kind(config)
            ),
        ));
    };
    let mut names: HashMap<&str, usize> = HashMap::new();
    let mut ids: HashMap<u64, usize> = HashMap::new();
    for (i, e) in entries.iter().enumerate() {
        let at = entry_label(i, e);
        let bad = |why: String| InputError::new(path, format!("{at}: {why}"));
        let Some(obj) = e.as_object() else {
            return Err(bad(format!(
                "is {}, not an object with funcName and funcId",
                json_kind(e)
            )));
        };
        let name = func_name(obj).map_err(bad)?;
        if let Some(first) = names.insert(name, i) {
            return Err(bad(format!(
                "funcName {name} is listed twice (entries {} and {}); nightcore needs each name once",
                first + 1,
                i + 1
            )));
        }
        let id = func_id(obj).map_err(bad)?;
        if let Some(first) = ids.insert(id, i) {
            return Err(bad(format!(
                "funcId {id} is also the funcId of {}; nightcore needs each funcId once",
                entry_label(first, &entries[first])
            )));
        }
        entry_fields(name, obj).map_err(bad)?;
    }
    Ok(())
}

/// An entry's funcName, checked as nightcore checks it.
fn func_name(obj: &serde_json::Map<String, serde_json::Value>) -> Result<&str, String> {
    let name = match obj.get("funcName") {
        None => return Err("funcName is missing (nightcore needs one per entry)".into()),
        Some(serde_json::Value::String(s)) => s.as_str(),
        Some(other) => return Err(format!("funcName is {}, not a string", json_kind(other))),
    };
    if name.is_empty() {
        return Err("funcName is empty".into());
    }
    if !valid_func_name(name) {
        return Err(format!(
            "funcName {name:?} is not a name nightcore takes: ASCII letters and digits only (a gRPC service: grpc: then letters, digits, '.' and '_')"
        ));
    }
    Ok(name)
}

/// An entry's funcId, checked as nightcore checks it.
fn func_id(obj: &serde_json::Map<String, serde_json::Value>) -> Result<u64, String> {
    let id = match obj.get("funcId") {
        None => {
            return Err(format!(
                "funcId is missing (nightcore needs an id in 1..={MAX_FUNC_ID} for every function)"
            ))
        }
        Some(v) => match v.as_i64() {
            Some(id) if (1..=MAX_FUNC_ID as i64).contains(&id) => id as u64,
            Some(_) => {
                return Err(format!(
                    "funcId {v} is outside 1..={MAX_FUNC_ID} (nightcore routes calls by an 8-bit function id, 0 being none)"
                ))
            }
            None if v.is_u64() => {
                return Err(format!("funcId {v} is outside 1..={MAX_FUNC_ID}"))
            }
            None => {
                return Err(format!(
                    "funcId is {} ({v}), not an integer in 1..={MAX_FUNC_ID}",
                    json_kind(v)
                ))
            }
        },
    };
    Ok(id)
}

/// An entry's worker counts and its service or HTTP fields.
fn entry_fields(
    name: &str,
    obj: &serde_json::Map<String, serde_json::Value>,
) -> Result<(), String> {
    let mut workers = [None, None];
    for (k, field) in ["minWorkers", "maxWorkers"].into_iter().enumerate() {
        let Some(v) = obj.get(field) else { continue };
        match v.as_i64() {
            Some(n) if i32::try_from(n).is_ok() => workers[k] = Some(n),
            Some(_) => return Err(format!("{field} {v} does not fit nightcore's 32-bit int")),
            None if v.is_u64() => {
                return Err(format!("{field} {v} does not fit nightcore's 32-bit int"))
            }
            None => return Err(format!("{field} is {} ({v}), not an integer", json_kind(v))),
        }
    }
    if let [Some(min), Some(max)] = workers {
        if min > 0 && max > 0 && min > max {
            return Err(format!(
                "minWorkers {min} exceeds maxWorkers {max}: nightcore's engine clamps a function's worker count between them, which is undefined behaviour when the minimum exceeds the maximum (0 or less means no limit)"
            ));
        }
    }
    if name.starts_with("grpc:") {
        let methods = match obj.get("grpcMethods") {
            None => {
                return Err(
                    "grpcMethods is missing (nightcore needs the methods of a gRPC service)".into(),
                )
            }
            Some(serde_json::Value::Array(m)) => m,
            Some(other) => {
                return Err(format!(
                    "grpcMethods is {}, not an array of method names",
                    json_kind(other)
                ))
            }
        };
        if methods.len() > MAX_GRPC_METHODS {
            return Err(format!(
                "grpcMethods has {} methods, more than nightcore's {MAX_GRPC_METHODS}",
                methods.len()
            ));
        }
        let mut seen = BTreeSet::new();
        for m in methods {
            let Some(m) = m.as_str() else {
                return Err(format!(
                    "grpcMethods holds {} ({m}), not a method name",
                    json_kind(m)
                ));
            };
            if !seen.insert(m) {
                return Err(format!("grpcMethods lists {m:?} twice"));
            }
        }
    } else {
        for field in ["allowHttpGet", "qsAsInput"] {
            if let Some(v) = obj.get(field).filter(|v| !v.is_boolean()) {
                return Err(format!("{field} is {} ({v}), not a boolean", json_kind(v)));
            }
        }
    }
    Ok(())
}
