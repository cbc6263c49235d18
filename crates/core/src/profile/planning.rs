//! Profiles as inputs of `plan`, `build` and `merge --profile`: any
//! profile `faasfuse profile` reads, recognised by its content, read over
//! the deployment's own libraries (matched by build-id, as `faasfuse
//! profile --lib` does).

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::Result;

use super::aggregate::Profile;
use super::images::Lib;
use super::{fdata, ingest, perfdata};
use crate::error::InputError;

/// What a profile file holds, by its content (never its name).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// perf.data, file or pipe format (`PERFILE2` magic).
    PerfData,
    /// A JSON object: a `faasfuse profile` profile, a weights file or a
    /// `faasfuse run --json` report.
    Json,
    /// BOLT `.fdata` or pre-aggregated text.
    Bolt,
}

impl Kind {
    pub fn describe(self) -> &'static str {
        match self {
            Kind::PerfData => "perf.data",
            Kind::Json => "JSON",
            Kind::Bolt => "BOLT profile",
        }
    }
}

/// A `--profile` argument: `FILE`, or `NAME=FILE` for an `.fdata` of the
/// function NAME (an `.fdata` names no image).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProfileArg {
    pub function: Option<String>,
    pub path: PathBuf,
}

impl ProfileArg {
    /// `NAME=FILE` when FILE names no existing file as a whole and NAME
    /// has no `/`; else the whole argument is the file.
    pub fn parse(arg: &Path) -> ProfileArg {
        let whole = ProfileArg {
            function: None,
            path: arg.to_path_buf(),
        };
        if arg.exists() {
            return whole;
        }
        match arg.to_str().and_then(|s| s.split_once('=')) {
            Some((name, file)) if !name.is_empty() && !name.contains('/') && !file.is_empty() => {
                ProfileArg {
                    function: Some(name.to_string()),
                    path: PathBuf::from(file),
                }
            }
            _ => whole,
        }
    }
}

fn cannot_read(path: &Path, e: std::io::Error) -> anyhow::Error {
    InputError::new(path, format!("cannot read: {e}")).into()
}

/// A profile file's content, as far as telling a perf.data from text needs.
pub enum Content {
    /// A perf.data (`PERFILE2` magic); read it as a stream.
    PerfData,
    /// Anything else, whole, as UTF-8 text.
    Text(String),
}

/// Read `path` far enough to tell a perf.data from a text profile: the
/// first 8 bytes, and the whole file unless they are perf's magic. An
/// empty file, text over [`crate::files::MAX_TEXT_BYTES`] or bytes that
/// are not UTF-8 are errors naming the file.
pub fn read_content(path: &Path) -> Result<Content> {
    let (f, len) = crate::files::open_regular(path, u64::MAX, "a profile")?;
    let mut f = f.take(crate::files::MAX_TEXT_BYTES);
    let mut head = [0u8; 8];
    let mut n = 0;
    while n < head.len() {
        match f.read(&mut head[n..]).map_err(|e| cannot_read(path, e))? {
            0 => break,
            k => n += k,
        }
    }
    if n == 0 {
        return Err(InputError::new(path, "empty file: no profile in it").into());
    }
    if perfdata::is_perf_data(&head[..n]) {
        // The reader that follows reads it from this open file.
        crate::files::keep_open(path, f.into_inner());
        return Ok(Content::PerfData);
    }
    if len > crate::files::MAX_TEXT_BYTES {
        return Err(InputError::new(
            path,
            format!(
                "not a perf.data (no PERFILE2 magic), and {len} bytes is too large for a text profile"
            ),
        )
        .into());
    }
    let mut bytes = head[..n].to_vec();
    f.read_to_end(&mut bytes)
        .map_err(|e| cannot_read(path, e))?;
    let text = String::from_utf8(bytes).map_err(|e| {
        InputError::new(
            path,
            format!(
                "not a profile: neither a perf.data (no PERFILE2 magic) nor text (not UTF-8 at byte {})",
                e.utf8_error().valid_up_to()
            ),
        )
    })?;
    Ok(Content::Text(text))
}

/// Which kind of profile `path` is; JSON and BOLT text come with the text.
pub fn sniff(path: &Path) -> Result<(Kind, Option<String>)> {
    let text = match read_content(path)? {
        Content::PerfData => return Ok((Kind::PerfData, None)),
        Content::Text(text) => text,
    };
    let kind = if text.trim_start().starts_with('{') {
        Kind::Json
    } else if looks_bolt(&text) {
        Kind::Bolt
    } else {
        return Err(InputError::new(
            path,
            "not a profile: neither a perf.data, JSON, a BOLT .fdata nor pre-aggregated text",
        )
        .into());
    };
    Ok((kind, Some(text)))
}

/// Whether the first record of `text` is one of BOLT's (`.fdata`: a
/// location kind or a header; pre-aggregated: a record letter).
fn looks_bolt(text: &str) -> bool {
    let first = text.lines().map(str::trim).find(|l| !l.is_empty());
    matches!(
        first.and_then(|l| l.split_whitespace().next()),
        Some("no_lbr" | "boltedcollection" | "0" | "1" | "2" | "3" | "4")
    ) || fdata::is_preaggregated(text)
}

/// Read a perf.data or BOLT profile over `libs` (the deployment's
/// libraries). `text` is the file's text for a BOLT profile (from
/// [`sniff`]). A perf.data that maps none of `libs` is an error naming
/// what it does map.
pub fn read_over(
    arg: &ProfileArg,
    kind: Kind,
    text: Option<&str>,
    libs: &[Lib],
) -> Result<Profile> {
    let path = arg.path.as_path();
    let named = match &arg.function {
        None => None,
        Some(f) => Some(libs.iter().position(|l| &l.name == f).ok_or_else(|| {
            InputError::new(
                path,
                format!(
                    "given as {f}=FILE, but {f} is not among the libraries ({})",
                    lib_names(libs)
                ),
            )
        })?),
    };
    match kind {
        Kind::PerfData => {
            if arg.function.is_some() {
                return Err(InputError::new(
                    path,
                    "a perf.data names its images by build-id: give it without NAME=",
                )
                .into());
            }
            let opts = ingest::Options {
                lenient: false,
                progress: true,
            };
            let (p, others) = ingest::ingest_perf_seen(path, libs, opts)?;
            if p.images.values().all(|i| i.mapped_as.is_empty()) {
                return Err(InputError::new(path, maps_none(&p, &others, libs)).into());
            }
            Ok(p)
        }
        Kind::Bolt => fdata::ingest_for(path, text.unwrap_or_default(), libs, named, false),
        Kind::Json => Err(InputError::new(path, "a JSON profile is read as weights").into()),
    }
}

fn lib_names(libs: &[Lib]) -> String {
    libs.iter()
        .map(|l| l.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The message for a perf.data that maps none of the libraries: what it
/// was looking for and what the file holds instead.
fn maps_none(p: &Profile, others: &[ingest::OtherImage], libs: &[Lib]) -> String {
    const SHOWN: usize = 8;
    let wanted: Vec<String> = libs
        .iter()
        .map(|l| {
            format!(
                "{} {} build-id {}",
                l.name,
                l.image
                    .path
                    .file_name()
                    .map(|f| f.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                l.build_id_hex().as_deref().unwrap_or("none")
            )
        })
        .collect();
    let lib_files: Vec<_> = libs
        .iter()
        .filter_map(|l| l.image.path.file_name())
        .collect();
    // Files named like one of the libraries first (another build of it).
    let mut seen: Vec<&ingest::OtherImage> = others.iter().collect();
    seen.sort_by_key(|o| {
        !lib_files
            .iter()
            .any(|f| Path::new(&o.path).file_name() == Some(f))
    });
    let mut shown: Vec<String> = seen
        .iter()
        .take(SHOWN)
        .map(|o| match &o.build_id {
            Some(id) => format!("{} (build-id {id})", o.path),
            None => o.path.clone(),
        })
        .collect();
    if seen.len() > SHOWN {
        shown.push(format!("and {} more", seen.len() - SHOWN));
    }
    format!(
        "maps none of the libraries ({}); it maps {} ({} samples)",
        wanted.join(", "),
        if shown.is_empty() {
            "no executable file".to_string()
        } else {
            shown.join(", ")
        },
        // Every sample read: on-CPU, off-CPU and of other events.
        p.stats.samples + p.stats.offcpu_samples + p.stats.other_samples
    )
}
