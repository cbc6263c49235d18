//! Streaming the record section: a bounded buffer over the file (memory
//! does not grow with the file), zstd-compressed records expanded in place,
//! every record decoded or skipped, errors located by byte offset.

use std::collections::HashMap;
use std::io::Read;

use super::abi::*;
use super::attr::{Attr, Trailer};
use super::cursor::u64_at;
use super::event::{self, Event};
use super::header::Header;
use super::FormatError;

/// Bytes read from the file per refill.
const CHUNK: usize = 1 << 20;
/// Most decompressed bytes held at once (a bound against zstd bombs).
const MAX_PENDING: usize = 256 << 20;

/// One decoded record with its position and timestamp.
#[derive(Debug)]
pub struct Timed {
    pub offset: u64,
    pub time: Option<u64>,
    pub event: Event,
}

/// A sample record handed out undecoded ([`Reader::raw_samples`]): its
/// body is [`Reader::raw_body`] until the next call.
#[derive(Debug, Clone, Copy)]
pub struct RawSample {
    pub offset: u64,
    pub time: Option<u64>,
    /// Index of its event attribute.
    pub attr: usize,
    pub misc: u16,
    /// Read from a compressed record (errors say so).
    pub compressed: bool,
}

/// What [`Reader::next_item`] gives.
#[derive(Debug)]
pub enum Next {
    Event(Timed),
    Sample(RawSample),
}

/// Counts of what the stream held.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct Stats {
    pub records: u64,
    pub samples: u64,
    /// Records that could not be decoded (skipped with `--lenient`).
    pub bad_records: u64,
    /// Samples the kernel reported lost (PERF_RECORD_LOST).
    pub lost_samples: u64,
    pub compressed_records: u64,
    /// Where a damaged record stream was cut short (`--lenient`).
    pub truncated_at: Option<u64>,
}

/// How records are laid out, from the event attributes.
#[derive(Default)]
struct Layout {
    attrs: Vec<Attr>,
    by_id: HashMap<u64, usize>,
    trailer: Trailer,
    id_word: Option<usize>,
    timed: bool,
}

impl Layout {
    fn new(attrs: Vec<Attr>) -> Layout {
        let mut by_id = HashMap::new();
        for (i, a) in attrs.iter().enumerate() {
            for &id in &a.ids {
                by_id.insert(id, i);
            }
        }
        let first = attrs.first().cloned().unwrap_or_default();
        Layout {
            by_id,
            trailer: first.trailer(),
            id_word: first.sample_id_word(),
            timed: !attrs.is_empty() && attrs.iter().all(|a| a.has(PERF_SAMPLE_TIME)),
            attrs,
        }
    }

    /// Which attribute a sample belongs to.
    fn attr_of(&self, body: &[u8]) -> usize {
        if self.attrs.len() <= 1 {
            return 0;
        }
        self.id_word
            .and_then(|w| u64_at(body, w * 8))
            .and_then(|id| self.by_id.get(&id).copied())
            .unwrap_or(0)
    }

    fn trailer_time(&self, body: &[u8]) -> Option<u64> {
        let from_end = self.trailer.time_from_end?;
        u64_at(body, body.len().checked_sub(from_end)?)
    }
}

/// What one raw record turned into.
enum Item {
    Event(Timed),
    Attr(Attr),
    /// An event's name (pipe output): the event with this sample id.
    Name(u64, String),
    /// The host the profile was recorded on (a pipe's HEADER_HOSTNAME).
    Hostname(String),
    Compressed,
    /// Skip this many bytes of payload that follow the record.
    Skip(u64),
    /// An undecoded sample at `body[start..end]` of the buffer it came from.
    Raw(RawSample, usize, usize),
    Nothing,
}

pub struct Reader<R: Read> {
    src: R,
    buf: Vec<u8>,
    lo: usize,
    hi: usize,
    /// File offset of `buf[lo]`.
    pos: u64,
    end: u64,
    src_done: bool,
    layout: Layout,
    zstd: Option<zstd::stream::raw::Decoder<'static>>,
    pending: Vec<u8>,
    pending_lo: usize,
    /// File offset of the compressed record `pending` came from.
    pending_origin: u64,
    lenient: bool,
    /// Hand samples out undecoded.
    raw: bool,
    /// Where the last raw sample's body lies: (in `pending`, start, end).
    raw_at: (bool, usize, usize),
    pub header: Header,
    pub stats: Stats,
}

impl<R: Read> Reader<R> {
    /// `src` is positioned at `header.data_offset`.
    pub fn new(src: R, header: Header, lenient: bool) -> Reader<R> {
        Reader {
            src,
            buf: vec![0; CHUNK],
            lo: 0,
            hi: 0,
            pos: header.data_offset,
            end: header.data_end,
            src_done: false,
            layout: Layout::new(header.attrs.clone()),
            zstd: None,
            pending: Vec::new(),
            pending_lo: 0,
            pending_origin: 0,
            lenient,
            raw: false,
            raw_at: (false, 0, 0),
            header,
            stats: Stats::default(),
        }
    }

    /// Hand samples out undecoded from [`next_item`](Self::next_item), so
    /// they can be decoded elsewhere (in parallel); other records are
    /// decoded as before. Samples whose time cannot be read are still
    /// decoded here, so their error is reported in place.
    pub fn raw_samples(&mut self, raw: bool) {
        self.raw = raw;
    }

    /// The body of the sample [`next_item`](Self::next_item) gave last.
    pub fn raw_body(&self) -> &[u8] {
        let (pending, a, b) = self.raw_at;
        if pending {
            &self.pending[a..b]
        } else {
            &self.buf[a..b]
        }
    }

    /// Bytes of the file consumed so far.
    pub fn position(&self) -> u64 {
        self.pos
    }

    /// Every event carries a timestamp, so records can be put in time order.
    pub fn timed(&self) -> bool {
        self.layout.timed
    }

    pub fn attrs(&self) -> &[Attr] {
        &self.layout.attrs
    }

    /// Make at least `need` bytes available in `buf[lo..hi]`; false at the
    /// end of the data.
    fn fill(&mut self, need: usize) -> Result<bool, FormatError> {
        if self.hi - self.lo >= need {
            return Ok(true);
        }
        if self.lo > 0 {
            self.buf.copy_within(self.lo..self.hi, 0);
            self.hi -= self.lo;
            self.lo = 0;
        }
        if self.buf.len() < need {
            self.buf.resize(need, 0);
        }
        while self.hi < need && !self.src_done {
            let left = self.end.saturating_sub(self.pos + self.hi as u64);
            let room = (self.buf.len() - self.hi).min(usize::try_from(left).unwrap_or(usize::MAX));
            if room == 0 {
                self.src_done = true;
                break;
            }
            match self.src.read(&mut self.buf[self.hi..self.hi + room]) {
                Ok(0) => self.src_done = true,
                Ok(n) => self.hi += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    return Err(FormatError {
                        offset: self.pos + self.hi as u64,
                        reason: format!("cannot read: {e}"),
                    })
                }
            }
        }
        Ok(self.hi - self.lo >= need)
    }

    /// The next event in file order, or `None` at the end.
    pub fn next_record(&mut self) -> Result<Option<Timed>, FormatError> {
        loop {
            match self.next_item()? {
                None => return Ok(None),
                Some(Next::Event(t)) => return Ok(Some(t)),
                // Only in raw mode.
                Some(Next::Sample(_)) => {}
            }
        }
    }

    /// The next event or (in raw mode) undecoded sample in file order, or
    /// `None` at the end.
    pub fn next_item(&mut self) -> Result<Option<Next>, FormatError> {
        loop {
            if let Some(t) = self.next_pending()? {
                return Ok(Some(t));
            }
            if !self.fill(8)? {
                if self.hi > self.lo {
                    return self.cut(
                        self.pos,
                        format!("{} stray bytes after the last record", self.hi - self.lo),
                    );
                }
                // A pipe or a file from a killed perf: a clean end of records.
                if self.pending.len() > self.pending_lo {
                    return self.cut(
                        self.pending_origin,
                        "compressed data ends inside a record".into(),
                    );
                }
                return Ok(None);
            }
            let offset = self.pos;
            let h = &self.buf[self.lo..self.lo + 8];
            let kind = u32::from_le_bytes([h[0], h[1], h[2], h[3]]);
            let misc = u16::from_le_bytes([h[4], h[5]]);
            let size = u16::from_le_bytes([h[6], h[7]]) as usize;
            if size < 8 {
                return self.cut(
                    offset,
                    format!("record size {size} is below 8 (type {kind})"),
                );
            }
            if !self.fill(size)? {
                return self.cut(
                    offset,
                    format!(
                        "record of type {kind} and {size} bytes is cut off: the file is truncated"
                    ),
                );
            }
            let body = &self.buf[self.lo + 8..self.lo + size];
            let item = if kind == PERF_RECORD_COMPRESSED || kind == PERF_RECORD_COMPRESSED2 {
                expand(
                    &mut self.zstd,
                    &mut self.pending,
                    &mut self.pending_lo,
                    kind,
                    body,
                )
                .map(|()| Item::Compressed)
            } else if self.raw && kind == PERF_RECORD_SAMPLE {
                raw(&self.layout, misc, body, offset, false)
                    .map(|(r, a, b)| Item::Raw(r, self.lo + 8 + a, self.lo + 8 + b))
                    .map_or_else(|| decode(&self.layout, kind, misc, body, offset), Ok)
            } else {
                decode(&self.layout, kind, misc, body, offset)
            };
            self.lo += size;
            self.pos += size as u64;
            self.stats.records += 1;
            match item {
                Ok(Item::Compressed) => {
                    self.stats.compressed_records += 1;
                    self.pending_origin = offset;
                }
                Ok(item) => {
                    if let Some(t) = self.settle(item, offset, false)? {
                        return Ok(Some(t));
                    }
                }
                Err(reason) => self.bad(offset, reason)?,
            }
        }
    }

    /// The next record from decompressed data, when a whole one is there.
    fn next_pending(&mut self) -> Result<Option<Next>, FormatError> {
        loop {
            let avail = &self.pending[self.pending_lo..];
            if avail.len() < 8 {
                if avail.is_empty() && !self.pending.is_empty() {
                    self.pending.clear();
                    self.pending_lo = 0;
                }
                return Ok(None);
            }
            let kind = u32::from_le_bytes([avail[0], avail[1], avail[2], avail[3]]);
            let misc = u16::from_le_bytes([avail[4], avail[5]]);
            let size = u16::from_le_bytes([avail[6], avail[7]]) as usize;
            let origin = self.pending_origin;
            if size < 8 {
                self.pending.clear();
                self.pending_lo = 0;
                self.cut::<()>(
                    origin,
                    format!("compressed record holds a record of size {size}"),
                )?;
                return Ok(None);
            }
            if avail.len() < size {
                // The rest arrives with the next compressed record.
                return Ok(None);
            }
            let body = &avail[8..size];
            let item = if self.raw && kind == PERF_RECORD_SAMPLE {
                let lo = self.pending_lo + 8;
                raw(&self.layout, misc, body, origin, true)
                    .map(|(r, a, b)| Item::Raw(r, lo + a, lo + b))
                    .map_or_else(|| decode(&self.layout, kind, misc, body, origin), Ok)
            } else {
                decode(&self.layout, kind, misc, body, origin)
            };
            let in_pending = matches!(item, Ok(Item::Raw(..)));
            self.pending_lo += size;
            self.stats.records += 1;
            match item {
                Ok(item) => {
                    if let Some(t) = self.settle(item, origin, in_pending)? {
                        return Ok(Some(t));
                    }
                }
                Err(reason) => self.bad(origin, format!("{reason} (in compressed data)"))?,
            }
        }
    }

    /// Apply what a record means to the reader; the event to hand out.
    fn settle(
        &mut self,
        item: Item,
        offset: u64,
        in_pending: bool,
    ) -> Result<Option<Next>, FormatError> {
        match item {
            Item::Event(t) => {
                match &t.event {
                    Event::Sample(_) => self.stats.samples += 1,
                    Event::Lost(n) => self.stats.lost_samples += n,
                    _ => {}
                }
                Ok(Some(Next::Event(t)))
            }
            Item::Raw(r, a, b) => {
                // Counted as a sample when decoded (a bad one is not).
                self.raw_at = (in_pending, a, b);
                Ok(Some(Next::Sample(r)))
            }
            Item::Attr(a) => {
                let mut attrs = std::mem::take(&mut self.layout.attrs);
                attrs.push(a);
                self.header.attrs = attrs.clone();
                self.layout = Layout::new(attrs);
                Ok(None)
            }
            Item::Name(id, name) => {
                if let Some(&i) = self.layout.by_id.get(&id) {
                    if let Some(h) = self.header.attrs.get_mut(i) {
                        h.name = Some(name.clone());
                    }
                    self.layout.attrs[i].name = Some(name);
                }
                Ok(None)
            }
            Item::Hostname(h) => {
                self.header.hostname = Some(h);
                Ok(None)
            }
            Item::Skip(n) => {
                let mut left = n;
                while left > 0 {
                    if !self.fill(1)? {
                        return self.cut::<Next>(
                            offset,
                            "payload (auxtrace or tracing data) is cut off".into(),
                        );
                    }
                    let take = left.min((self.hi - self.lo) as u64) as usize;
                    self.lo += take;
                    self.pos += take as u64;
                    left -= take as u64;
                }
                Ok(None)
            }
            Item::Compressed | Item::Nothing => Ok(None),
        }
    }

    /// A record that cannot be decoded: an error, or skipped and counted.
    fn bad(&mut self, offset: u64, reason: String) -> Result<(), FormatError> {
        if self.lenient {
            self.stats.bad_records += 1;
            Ok(())
        } else {
            Err(FormatError { offset, reason })
        }
    }

    /// The record stream cannot go on: an error, or (lenient) its end.
    fn cut<T>(&mut self, offset: u64, reason: String) -> Result<Option<T>, FormatError> {
        if self.lenient {
            self.stats.bad_records += 1;
            self.stats.truncated_at = Some(offset);
            self.lo = self.hi;
            self.src_done = true;
            self.pending.clear();
            self.pending_lo = 0;
            Ok(None)
        } else {
            Err(FormatError { offset, reason })
        }
    }
}

/// A sample left undecoded, with its time read (`None` when the body is
/// too short for it: it is then decoded, to report the error), and where
/// its body lies within `body` (all of it).
fn raw(
    layout: &Layout,
    misc: u16,
    body: &[u8],
    offset: u64,
    compressed: bool,
) -> Option<(RawSample, usize, usize)> {
    if layout.attrs.is_empty() {
        return None;
    }
    let index = layout.attr_of(body);
    let attr = &layout.attrs[index];
    let time = if attr.has(PERF_SAMPLE_TIME) {
        let before = (attr.sample_type
            & (PERF_SAMPLE_IDENTIFIER | PERF_SAMPLE_IP | PERF_SAMPLE_TID))
            .count_ones();
        Some(u64_at(body, before as usize * 8)?)
    } else {
        None
    };
    Some((
        RawSample {
            offset,
            time,
            attr: index,
            misc,
            compressed,
        },
        0,
        body.len(),
    ))
}

/// Decode one record body.
fn decode(layout: &Layout, kind: u32, misc: u16, body: &[u8], offset: u64) -> Result<Item, String> {
    let timed = |event: Event, time: Option<u64>| {
        Item::Event(Timed {
            offset,
            time,
            event,
        })
    };
    let trailer_len = layout.trailer.size.min(body.len());
    let own = &body[..body.len() - trailer_len];
    match kind {
        PERF_RECORD_SAMPLE => {
            if layout.attrs.is_empty() {
                return Err("sample before any event attribute".into());
            }
            let index = layout.attr_of(body);
            let attr = &layout.attrs[index];
            let s = event::sample(attr, index, misc, body)?;
            let time = attr.has(PERF_SAMPLE_TIME).then_some(s.time);
            Ok(timed(Event::Sample(s), time))
        }
        PERF_RECORD_MMAP | PERF_RECORD_MMAP2 => {
            let ev = event::mmap(kind, misc, own)?;
            Ok(ev.map_or(Item::Nothing, |e| timed(e, layout.trailer_time(body))))
        }
        PERF_RECORD_COMM => {
            let ev = event::comm(misc, own)?;
            Ok(ev.map_or(Item::Nothing, |e| timed(e, layout.trailer_time(body))))
        }
        PERF_RECORD_FORK | PERF_RECORD_EXIT => {
            let ev = event::fork_exit(kind, body)?;
            // FORK/EXIT carry their own time after pid, ppid, tid, ptid.
            let time = u64_at(body, 16);
            Ok(ev.map_or(Item::Nothing, |e| timed(e, time)))
        }
        PERF_RECORD_LOST => {
            let lost = u64_at(body, 8).ok_or("truncated LOST record")?;
            Ok(timed(Event::Lost(lost), layout.trailer_time(body)))
        }
        PERF_RECORD_LOST_SAMPLES => {
            let lost = u64_at(body, 0).ok_or("truncated LOST_SAMPLES record")?;
            Ok(timed(Event::Lost(lost), layout.trailer_time(body)))
        }
        PERF_RECORD_FINISHED_ROUND => Ok(timed(Event::FinishedRound, None)),
        PERF_RECORD_HEADER_ATTR => {
            let attr_size = Attr::attr_size(body).ok_or("truncated attribute record")?;
            if attr_size > body.len() {
                return Err(format!(
                    "attribute record of size {attr_size} overruns its record"
                ));
            }
            let mut attr = Attr::parse(body)?;
            attr.ids = body[attr_size..]
                .chunks_exact(8)
                .map(|w| u64::from_le_bytes(w.try_into().unwrap_or_default()))
                .collect();
            Ok(Item::Attr(attr))
        }
        PERF_RECORD_EVENT_UPDATE => {
            // type, id, then (for a name) the name, NUL-terminated.
            match (u64_at(body, 0), u64_at(body, 8)) {
                (Some(PERF_EVENT_UPDATE_NAME), Some(id)) => Ok(Item::Name(
                    id,
                    super::cursor::c_string(body.get(16..).unwrap_or_default()),
                )),
                _ => Ok(Item::Nothing),
            }
        }
        PERF_RECORD_HEADER_BUILD_ID => {
            let (build_id, filename) = event::build_id(misc, body)?;
            Ok(timed(Event::BuildId { build_id, filename }, None))
        }
        PERF_RECORD_HEADER_FEATURE => match u64_at(body, 0) {
            Some(id) if id == u64::from(HEADER_HOSTNAME) => Ok(body
                .get(8..)
                .and_then(super::header::perf_string)
                .map_or(Item::Nothing, Item::Hostname)),
            _ => Ok(Item::Nothing),
        },
        PERF_RECORD_HEADER_TRACING_DATA => Ok(Item::Skip(u64::from(
            body.get(..4)
                .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .ok_or("truncated TRACING_DATA record")?,
        ))),
        PERF_RECORD_AUXTRACE => Ok(Item::Skip(
            u64_at(body, 0).ok_or("truncated AUXTRACE record")?,
        )),
        _ => Ok(Item::Nothing),
    }
}

/// Append the decompressed contents of a compressed record to `pending`.
fn expand(
    zstd: &mut Option<zstd::stream::raw::Decoder<'static>>,
    pending: &mut Vec<u8>,
    pending_lo: &mut usize,
    kind: u32,
    body: &[u8],
) -> Result<(), String> {
    use zstd::stream::raw::{InBuffer, Operation, OutBuffer};
    let data = if kind == PERF_RECORD_COMPRESSED2 {
        let size = u64_at(body, 0).ok_or("truncated compressed record")?;
        let size = usize::try_from(size).map_err(|_| "compressed size overflows")?;
        body.get(8..8usize.saturating_add(size))
            .ok_or("compressed data size exceeds its record")?
    } else {
        body
    };
    if zstd.is_none() {
        *zstd = Some(zstd::stream::raw::Decoder::new().map_err(|e| format!("zstd: {e}"))?);
    }
    let dec = zstd.as_mut().ok_or("zstd decoder")?;
    // Drop what was already handed out before appending.
    pending.drain(..*pending_lo);
    *pending_lo = 0;
    let mut input = InBuffer::around(data);
    let mut chunk = vec![0u8; 256 << 10];
    loop {
        let before = input.pos();
        let mut out = OutBuffer::around(&mut chunk[..]);
        dec.run(&mut input, &mut out)
            .map_err(|e| format!("corrupt zstd data: {e}"))?;
        let n = out.pos();
        pending.extend_from_slice(&chunk[..n]);
        if pending.len() > MAX_PENDING {
            return Err("compressed record expands beyond 256 MiB".into());
        }
        if input.pos() >= data.len() && n < chunk.len() {
            return Ok(());
        }
        if n == 0 && input.pos() == before {
            return Err("corrupt zstd data: no progress".into());
        }
    }
}
