//! Deployed functions as the command line names them: `[NAME=]LIB.so`.

use std::path::{Path, PathBuf};

use anyhow::Result;

use crate::error::InputError;

/// One deployed function: its name and its library.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunctionSpec {
    pub name: String,
    pub path: PathBuf,
}

/// The function name a library serves when none is given: the file name up
/// to its first dot, without a `lib` prefix (`libbar.so` → `bar`).
pub fn default_function_name(path: &Path) -> String {
    let file = path
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default();
    let stem = file.split('.').next().unwrap_or("");
    stem.strip_prefix("lib").unwrap_or(stem).to_string()
}

impl FunctionSpec {
    /// Parse `NAME=PATH` or `PATH`. Without a name, the file stem is matched
    /// case-insensitively against `known` (names callers use), so that
    /// `libcomposepost.so` serves `ComposePost`.
    pub fn parse(arg: &str, known: &[String]) -> FunctionSpec {
        if let Some((name, path)) = arg.split_once('=') {
            if !name.is_empty() && !name.contains('/') {
                return FunctionSpec {
                    name: name.to_string(),
                    path: PathBuf::from(path),
                };
            }
        }
        let path = PathBuf::from(arg);
        let stem = default_function_name(&path);
        let name = known
            .iter()
            .find(|k| k.eq_ignore_ascii_case(&stem))
            .cloned()
            .unwrap_or(stem);
        FunctionSpec { name, path }
    }
}

/// Check that no name is deployed twice.
pub fn check_unique(specs: &[FunctionSpec]) -> Result<()> {
    for (i, a) in specs.iter().enumerate() {
        if let Some(b) = specs[..i].iter().find(|b| b.name == a.name) {
            return Err(InputError::new(
                &a.path,
                format!(
                    "function name {} is already served by {}",
                    a.name,
                    b.path.display()
                ),
            )
            .into());
        }
    }
    Ok(())
}

/// Parse `[NAME=]LIB.so` arguments. Names are derived from file stems and
/// matched case-insensitively against the root's name and every constant
/// callee name the libraries' RPC sites use.
pub fn resolve_specs(args: &[String], root: Option<&str>) -> Result<Vec<FunctionSpec>> {
    let mut known: Vec<String> = root.map(str::to_string).into_iter().collect();
    // Names are read from the libraries' RPC sites only when some library
    // has none given: then every library is parsed once more later.
    let named = |a: &String| {
        a.split_once('=')
            .is_some_and(|(n, _)| !n.is_empty() && !n.contains('/'))
    };
    if !args.iter().all(named) {
        for a in args {
            let spec = FunctionSpec::parse(a, &[]);
            let lib = crate::loaded::load(&spec.path)?;
            known.extend(crate::analyze::constant_callees(&lib.sites));
        }
    }
    let specs: Vec<FunctionSpec> = args
        .iter()
        .map(|a| FunctionSpec::parse(a, &known))
        .collect();
    check_unique(&specs)?;
    Ok(specs)
}

/// How far a fused callee is kept apart from the code that calls it.
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Isolation {
    /// The callee runs on its caller's stack, in its caller's memory (the
    /// cheapest call).
    #[default]
    None,
    /// The callee runs on a stack of its own with a guard region: none of
    /// its callers' frames lies above its own, and a fault in it (a bad
    /// pointer, a stack overflow) fails its call with -1 instead of killing
    /// the process; the host serves the function from then on.
    Stack,
    /// As `Stack`, and the callee's writable memory, stack and the
    /// buffers its input and output cross through carry a protection key
    /// of its own; while it runs, the thread's PKRU denies every other key
    /// faasfuse gave out (its callers' data, the runtime's state, the
    /// other isolated callees'): it can neither read nor write them.
    Mpk,
}
