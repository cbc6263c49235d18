//! The perf.data file header: the event attributes, where the record stream
//! lies, and the feature sections after it (build-ids).

use std::io::{Read, Seek, SeekFrom};

use super::abi::{
    HEADER_BUILD_ID, HEADER_EVENT_DESC, HEADER_HOSTNAME, PERF_ATTR_SIZE_VER0,
    PERF_FILE_HEADER_SIZE, PERF_MAGIC, PERF_PIPE_HEADER_SIZE,
};
use super::attr::Attr;
use super::cursor::Cursor;
use super::event;
use super::FormatError;

/// "PERFILE2", read as a little-endian u64.
pub const MAGIC: u64 = u64::from_le_bytes(PERF_MAGIC);
/// The same magic written by a big-endian machine.
const MAGIC_SWAPPED: u64 = u64::from_be_bytes(PERF_MAGIC);
/// Largest attr table or feature section read into memory.
const MAX_TABLE: u64 = 64 << 20;

/// What the header says about the file.
#[derive(Debug, Clone, Default)]
pub struct Header {
    /// Written to a pipe (`perf record -o -`): no sections, attributes
    /// arrive as records.
    pub pipe: bool,
    pub attrs: Vec<Attr>,
    pub data_offset: u64,
    pub data_end: u64,
    /// Build-ids from the HEADER_BUILD_ID feature: (id, file name).
    pub build_ids: Vec<(Vec<u8>, String)>,
    /// Feature bits set in the header.
    pub features: Vec<usize>,
    /// The host the profile was recorded on (HEADER_HOSTNAME, or in a
    /// pipe its feature record), if the file says.
    pub hostname: Option<String>,
}

fn err(offset: u64, reason: impl Into<String>) -> FormatError {
    FormatError {
        offset,
        reason: reason.into(),
    }
}

fn read_exact_at<R: Read + Seek>(
    f: &mut R,
    offset: u64,
    len: u64,
    file_len: u64,
    what: &str,
) -> Result<Vec<u8>, FormatError> {
    if len > MAX_TABLE || offset.checked_add(len).map_or(true, |end| end > file_len) {
        return Err(err(
            offset,
            format!("{what} ({len} bytes) runs past the end of the file ({file_len} bytes): the file is truncated"),
        ));
    }
    let mut buf = vec![0u8; len as usize];
    f.seek(SeekFrom::Start(offset))
        .and_then(|_| f.read_exact(&mut buf))
        .map_err(|e| err(offset, format!("cannot read {what}: {e}")))?;
    Ok(buf)
}

/// The attribute table: `attrs_size` bytes of `attr_size`-byte entries at
/// `attrs_off`, each with its sample id table.
fn read_attrs<R: Read + Seek>(
    f: &mut R,
    attrs_off: u64,
    attrs_size: u64,
    attr_size: u64,
    file_len: u64,
) -> Result<Vec<Attr>, FormatError> {
    let table = read_exact_at(f, attrs_off, attrs_size, file_len, "attribute table")?;
    let mut attrs = Vec::new();
    for (i, entry) in table.chunks_exact(attr_size as usize).enumerate() {
        let at = attrs_off + i as u64 * attr_size;
        let body = &entry[..entry.len() - 16];
        let mut attr = Attr::parse(body).map_err(|r| err(at, r))?;
        let mut ids = Cursor::new(&entry[entry.len() - 16..]);
        let (ids_off, ids_size) = (ids.u64().unwrap_or(0), ids.u64().unwrap_or(0));
        if ids_size > 0 {
            let raw = read_exact_at(f, ids_off, ids_size, file_len, "sample id table")?;
            attr.ids = raw
                .chunks_exact(8)
                .map(|w| u64::from_le_bytes(w.try_into().unwrap_or_default()))
                .collect();
        }
        attrs.push(attr);
    }
    Ok(attrs)
}

/// Read and check the header of a perf.data file of `file_len` bytes.
pub fn read<R: Read + Seek>(f: &mut R, file_len: u64) -> Result<Header, FormatError> {
    let mut head = [0u8; 16];
    if file_len < PERF_PIPE_HEADER_SIZE {
        return Err(err(
            0,
            format!("not a perf.data file: only {file_len} bytes"),
        ));
    }
    f.read_exact(&mut head)
        .map_err(|e| err(0, format!("cannot read: {e}")))?;
    let mut c = Cursor::new(&head);
    let magic = c.u64().unwrap_or(0);
    let size = c.u64().unwrap_or(0);
    if magic == MAGIC_SWAPPED {
        return Err(err(0, "big-endian perf.data files are not supported"));
    }
    if magic != MAGIC {
        return Err(err(
            0,
            "not a perf.data file (no PERFILE2 magic; perf.data version 1 is not supported)",
        ));
    }
    if size == PERF_PIPE_HEADER_SIZE {
        return Ok(Header {
            pipe: true,
            data_offset: PERF_PIPE_HEADER_SIZE,
            data_end: u64::MAX,
            ..Header::default()
        });
    }
    if size < PERF_FILE_HEADER_SIZE {
        return Err(err(
            8,
            format!("header size {size} is below {PERF_FILE_HEADER_SIZE}"),
        ));
    }
    let rest = read_exact_at(f, 16, PERF_FILE_HEADER_SIZE - 16, file_len, "file header")?;
    let mut c = Cursor::new(&rest);
    let attr_size = c.u64().unwrap_or(0);
    let (attrs_off, attrs_size) = (c.u64().unwrap_or(0), c.u64().unwrap_or(0));
    let (data_off, data_size) = (c.u64().unwrap_or(0), c.u64().unwrap_or(0));
    let _event_types = c.skip(16);
    let bitmap: Vec<u64> = (0..4).map(|_| c.u64().unwrap_or(0)).collect();

    if attr_size < PERF_ATTR_SIZE_VER0 as u64 + 16 || attr_size > 4096 {
        return Err(err(
            16,
            format!("attribute entry size {attr_size} is not plausible"),
        ));
    }
    if attrs_size % attr_size != 0 || attrs_size == 0 {
        return Err(err(
            32,
            format!("attribute table size {attrs_size} is not a multiple of {attr_size}"),
        ));
    }
    let attrs = read_attrs(f, attrs_off, attrs_size, attr_size, file_len)?;

    let data_end = data_off
        .checked_add(data_size)
        .ok_or_else(|| err(48, "data section size overflows"))?;
    if data_off < PERF_FILE_HEADER_SIZE || data_end > file_len {
        return Err(err(
            40,
            format!(
                "data section {data_off}..{data_end} lies outside the file ({file_len} bytes): the file is truncated"
            ),
        ));
    }

    let features: Vec<usize> = (0..256)
        .filter(|&b| bitmap[b / 64] & (1 << (b % 64)) != 0)
        .collect();
    let mut header = Header {
        pipe: false,
        attrs,
        data_offset: data_off,
        data_end,
        build_ids: Vec::new(),
        features: features.clone(),
        hostname: None,
    };
    // Every feature section must lie in the file: a cut-off file shows here.
    let table = read_exact_at(
        f,
        data_end,
        features.len() as u64 * 16,
        file_len,
        "feature section table",
    )?;
    for (slot, (&bit, sec)) in features.iter().zip(table.chunks_exact(16)).enumerate() {
        let mut c = Cursor::new(sec);
        let (off, size) = (c.u64().unwrap_or(0), c.u64().unwrap_or(0));
        if off.checked_add(size).map_or(true, |end| end > file_len) {
            return Err(err(
                data_end + slot as u64 * 16,
                format!("feature section {bit} ({size} bytes at {off}) runs past the end of the file ({file_len} bytes): the file is truncated"),
            ));
        }
        if bit == HEADER_BUILD_ID as usize {
            let raw = read_exact_at(f, off, size, file_len, "build-id table")?;
            header.build_ids = build_id_table(&raw, off)?;
        }
        if bit == HEADER_HOSTNAME as usize {
            let raw = read_exact_at(f, off, size, file_len, "host name")?;
            header.hostname = perf_string(&raw);
        }
        if bit == HEADER_EVENT_DESC as usize {
            let raw = read_exact_at(f, off, size, file_len, "event description table")?;
            name_events(&mut header.attrs, &event_desc(&raw));
        }
    }
    Ok(header)
}

/// A string feature (HEADER_HOSTNAME, ...): a u32 length, then that many
/// bytes, NUL-padded. `None` when it does not parse or is empty.
pub fn perf_string(raw: &[u8]) -> Option<String> {
    let mut c = Cursor::new(raw);
    let len = c.u32()? as usize;
    let s = super::cursor::c_string(c.bytes(len)?);
    (!s.is_empty()).then_some(s)
}

/// The HEADER_EVENT_DESC feature, as (name, sample ids) per event: a
/// count and an attr size, then per event its attr, its number of ids,
/// its name (a u32 length and that many bytes, NUL-padded) and its ids.
/// A table that does not parse names nothing (names only classify
/// events; the attrs themselves come from the attr table).
pub fn event_desc(raw: &[u8]) -> Vec<(String, Vec<u64>)> {
    let mut c = Cursor::new(raw);
    let mut out = Vec::new();
    let (Some(nr), Some(attr_size)) = (c.u32(), c.u32()) else {
        return out;
    };
    for _ in 0..nr {
        let Some(()) = c.skip(attr_size as usize) else {
            break;
        };
        let (Some(nr_ids), Some(len)) = (c.u32(), c.u32()) else {
            break;
        };
        let Some(name) = c.bytes(len as usize) else {
            break;
        };
        let Some(ids) = (nr_ids as usize).checked_mul(8).and_then(|n| c.bytes(n)) else {
            break;
        };
        let name = super::cursor::c_string(name);
        let ids = ids
            .chunks_exact(8)
            .map(|w| u64::from_le_bytes(w.try_into().unwrap_or_default()))
            .collect();
        out.push((name, ids));
    }
    out
}

/// Give each attr its name from `desc`: the first entry that shares a
/// sample id with it, else (attrs without ids) the entry at its position
/// when the two lists are as long. Linear in the ids of both.
pub fn name_events(attrs: &mut [Attr], desc: &[(String, Vec<u64>)]) {
    let mut by_id: std::collections::HashMap<u64, usize> = Default::default();
    for (i, a) in attrs.iter().enumerate() {
        for &id in &a.ids {
            by_id.entry(id).or_insert(i);
        }
    }
    let mut named: Vec<Option<usize>> = vec![None; attrs.len()];
    for (j, (_, ids)) in desc.iter().enumerate() {
        if let Some(&i) = ids.iter().find_map(|id| by_id.get(id)) {
            named[i].get_or_insert(j);
        }
    }
    let same_len = attrs.len() == desc.len();
    for (i, a) in attrs.iter_mut().enumerate() {
        let j = named[i].or((same_len && a.ids.is_empty()).then_some(i));
        if let Some(j) = j {
            a.name = Some(desc[j].0.clone());
        }
    }
}

/// The HEADER_BUILD_ID feature: a run of build-id records.
fn build_id_table(raw: &[u8], base: u64) -> Result<Vec<(Vec<u8>, String)>, FormatError> {
    let mut out = Vec::new();
    let mut pos = 0usize;
    while pos + 8 <= raw.len() {
        let misc = u16::from_le_bytes([raw[pos + 4], raw[pos + 5]]);
        let size = u16::from_le_bytes([raw[pos + 6], raw[pos + 7]]) as usize;
        if size < 8 || pos + size > raw.len() {
            return Err(err(
                base + pos as u64,
                format!("build-id record of {size} bytes does not fit its table"),
            ));
        }
        let rec = event::build_id(misc, &raw[pos + 8..pos + size])
            .map_err(|r| err(base + pos as u64, r))?;
        out.push(rec);
        pos += size;
    }
    Ok(out)
}
