//! Decoding and counting samples on several threads. The reading thread
//! frames records, applies address-space events and puts samples in time
//! order relative to them (perf's rule: release what is older than the
//! round before, as [`perfdata::Ordered`] does, within a memory bound);
//! samples are not decoded there but copied, as they are, into chunks
//! shared with the counting threads, in batches that carry a snapshot of
//! the mappings each sample is resolved in. Every thread counts into its
//! own [`Counter`]; the counters are summed at the end, so the result is
//! the one a single thread gets.

use std::collections::HashSet;
use std::sync::{mpsc, Arc, Mutex};

use super::counter::Counter;
use super::images::{AddressSpaces, Lib, Snapshot};
use super::perfdata::attr::Attr;
use super::perfdata::reader::{Next, RawSample};
use super::perfdata::{event, Event, FormatError, Reader};

/// Queued bytes beyond which the oldest events are released early (as in
/// [`perfdata::Ordered`]).
const MAX_QUEUED: usize = 64 << 20;
/// Samples per batch handed to a counting thread.
const BATCH: usize = 2048;
/// Bytes per chunk of copied sample records.
const CHUNK: usize = 4 << 20;

pub(crate) struct Setup<'a> {
    pub libs: &'a [Lib],
    pub returns: &'a [HashSet<u64>],
    pub threads: usize,
    pub lenient: bool,
    pub progress: Option<&'a dyn crate::progress::Bar>,
}

/// One sample of a batch: where its body is and what the reader knew.
#[derive(Clone, Copy)]
struct Item {
    chunk: u32,
    start: u32,
    len: u32,
    snap: u32,
    seq: u64,
    raw: RawSample,
}

#[derive(Default)]
struct Batch {
    /// Chunks from id `first_chunk` on.
    first_chunk: u32,
    chunks: Vec<Option<Arc<Vec<u8>>>>,
    snaps: Vec<Arc<Snapshot>>,
    items: Vec<Item>,
}

/// A sample waiting for its place in time.
struct Pending {
    time: u64,
    seq: u64,
    chunk: u32,
    start: u32,
    len: u32,
    raw: RawSample,
}

/// What a counting thread found wrong: bad samples skipped (lenient) or
/// the first error in file order.
#[derive(Default)]
struct Errors {
    skipped: u64,
    first: Option<(u64, FormatError)>,
}

impl Errors {
    fn add(&mut self, seq: u64, e: FormatError, lenient: bool) {
        if lenient {
            self.skipped += 1;
        } else if !matches!(&self.first, Some((s, _)) if *s <= seq) {
            self.first = Some((seq, e));
        }
    }
}

/// Decode and count every sample of `b`.
fn count(b: &Batch, attrs: &[Attr], c: &mut Counter, errs: &mut Errors, lenient: bool) {
    // One sample decoded after another into the same vectors.
    let mut s = super::perfdata::Sample::default();
    for it in &b.items {
        let Some(chunk) = b
            .chunks
            .get((it.chunk - b.first_chunk) as usize)
            .and_then(|c| c.as_ref())
        else {
            continue;
        };
        let body = &chunk[it.start as usize..(it.start + it.len) as usize];
        let attr = &attrs[it.raw.attr];
        match event::sample_into(attr, it.raw.attr, it.raw.misc, body, &mut s) {
            Ok(()) => {
                let proc = b.snaps[it.snap as usize].process(s.pid);
                c.sample(&s, Some(attr), &proc, None);
            }
            Err(reason) => {
                let reason = if it.raw.compressed {
                    format!("{reason} (in compressed data)")
                } else {
                    reason
                };
                errs.add(
                    it.seq,
                    FormatError {
                        offset: it.raw.offset,
                        reason,
                    },
                    lenient,
                );
            }
        }
    }
}

/// Where batches go: counted here, or sent to the counting threads.
enum Sink<'a, 'l> {
    Inline {
        counter: &'a mut Counter<'l>,
        errs: Errors,
    },
    Pool(mpsc::SyncSender<Batch>),
}

/// The reading thread's state: time order, chunks, the batch being built.
struct Feed<'a, 'l, 's> {
    spaces: &'a mut AddressSpaces<'s>,
    attrs: &'a [Attr],
    lenient: bool,
    sink: Sink<'a, 'l>,
    timed: bool,
    bound: u64,
    round_max: u64,
    max_time: u64,
    seq: u64,
    queued: usize,
    /// Waiting samples; sorted by (time, seq) from `head` on when `sorted`.
    samples: Vec<Pending>,
    head: usize,
    sorted: bool,
    /// Waiting events, sorted by (time, seq).
    events: Vec<(u64, u64, Event)>,
    /// Sealed chunks from id `first_chunk` on (None once unused), and how
    /// many samples (waiting or batched) still use each.
    first_chunk: u32,
    chunks: Vec<Option<Arc<Vec<u8>>>>,
    uses: Vec<u32>,
    /// The chunk being filled (id `first_chunk + chunks.len()`).
    cur: Vec<u8>,
    cur_uses: u32,
    batch: Batch,
}

impl Feed<'_, '_, '_> {
    fn cur_id(&self) -> u32 {
        self.first_chunk + self.chunks.len() as u32
    }

    fn seal(&mut self) {
        let cur = std::mem::replace(&mut self.cur, Vec::with_capacity(CHUNK));
        self.chunks.push(Some(Arc::new(cur)));
        self.uses.push(self.cur_uses);
        self.cur_uses = 0;
    }

    /// Copy a sample's body into the current chunk.
    fn store(&mut self, body: &[u8]) -> (u32, u32) {
        if self.cur.len() + body.len() > CHUNK && !self.cur.is_empty() {
            self.seal();
        }
        let start = self.cur.len() as u32;
        self.cur.extend_from_slice(body);
        self.cur_uses += 1;
        (self.cur_id(), start)
    }

    fn sample(&mut self, raw: RawSample, body: &[u8]) -> Result<(), FormatError> {
        let time = raw.time.unwrap_or(self.max_time);
        self.max_time = self.max_time.max(time);
        self.seq += 1;
        let (chunk, start) = self.store(body);
        let p = Pending {
            time,
            seq: self.seq,
            chunk,
            start,
            len: body.len() as u32,
            raw,
        };
        if !self.timed || time <= self.bound {
            return self.ready(p);
        }
        if self.samples.len() > self.head {
            let last = &self.samples[self.samples.len() - 1];
            self.sorted &= (last.time, last.seq) <= (time, p.seq);
        }
        self.queued += 64 + body.len();
        self.samples.push(p);
        self.overflow()
    }

    fn event(&mut self, time: Option<u64>, ev: Event) -> Result<(), FormatError> {
        if matches!(ev, Event::FinishedRound) {
            self.bound = self.bound.max(self.round_max);
            self.round_max = self.max_time;
            return self.release(self.bound);
        }
        if matches!(ev, Event::BuildId { .. }) {
            // Holds for its file name whenever it comes: at once.
            self.apply(ev);
            return Ok(());
        }
        let time = time.unwrap_or(self.max_time);
        self.max_time = self.max_time.max(time);
        self.seq += 1;
        if !self.timed || time <= self.bound {
            self.apply(ev);
            return Ok(());
        }
        self.queued += 64
            + match &ev {
                Event::Mmap(m) => m.filename.len(),
                _ => 0,
            };
        let at = self
            .events
            .partition_point(|e| (e.0, e.1) <= (time, self.seq));
        self.events.insert(at, (time, self.seq, ev));
        self.overflow()
    }

    /// Release the oldest while more than the bound waits.
    fn overflow(&mut self) -> Result<(), FormatError> {
        while self.queued > MAX_QUEUED {
            self.sort();
            let s = self.samples.get(self.head).map(|p| p.time);
            let e = self.events.first().map(|e| e.0);
            let Some(t) = s.into_iter().chain(e).min() else {
                break;
            };
            self.bound = self.bound.max(t);
            self.release(self.bound)?;
        }
        Ok(())
    }

    fn sort(&mut self) {
        if !self.sorted {
            self.samples[self.head..].sort_unstable_by_key(|p| (p.time, p.seq));
            self.sorted = true;
        }
    }

    /// Release everything waiting up to `t`, in time order.
    fn release(&mut self, t: u64) -> Result<(), FormatError> {
        self.sort();
        let n = self.samples[self.head..].partition_point(|p| p.time <= t);
        let ne = self.events.partition_point(|e| e.0 <= t);
        let mut events = self
            .events
            .drain(..ne)
            .collect::<Vec<_>>()
            .into_iter()
            .peekable();
        for k in self.head..self.head + n {
            let key = (self.samples[k].time, self.samples[k].seq);
            while events.peek().is_some_and(|e| (e.0, e.1) < key) {
                if let Some((_, _, ev)) = events.next() {
                    self.queued = self.queued.saturating_sub(64);
                    self.apply(ev);
                }
            }
            let p = Pending { ..self.samples[k] };
            self.queued = self.queued.saturating_sub(64 + p.len as usize);
            self.ready(p)?;
        }
        for (_, _, ev) in events {
            self.queued = self.queued.saturating_sub(64);
            self.apply(ev);
        }
        self.head += n;
        if self.head == self.samples.len() {
            self.samples.clear();
            self.head = 0;
        } else if self.head > self.samples.len() / 2 {
            self.samples.drain(..self.head);
            self.head = 0;
        }
        Ok(())
    }

    fn apply(&mut self, ev: Event) {
        match ev {
            Event::Mmap(m) => {
                self.spaces.mmap(&m);
            }
            Event::Comm {
                pid,
                tid,
                exec: true,
                ..
            } if pid == tid => self.spaces.clear(pid),
            Event::Fork { pid, ppid } => self.spaces.fork(pid, ppid),
            Event::BuildId { build_id, filename } => self.spaces.add_build_id(build_id, filename),
            _ => {}
        }
    }

    /// A sample whose place is known: into the batch, resolved in the
    /// mappings as they are now.
    fn ready(&mut self, p: Pending) -> Result<(), FormatError> {
        let snap = self.spaces.snapshot();
        let b = &mut self.batch;
        if !b.snaps.last().is_some_and(|s| Arc::ptr_eq(s, &snap)) {
            b.snaps.push(snap);
        }
        b.items.push(Item {
            chunk: p.chunk,
            start: p.start,
            len: p.len,
            snap: (b.snaps.len() - 1) as u32,
            seq: p.seq,
            raw: p.raw,
        });
        if b.items.len() >= BATCH {
            self.send()?;
        }
        Ok(())
    }

    /// Hand the batch over, with the chunks its samples lie in.
    fn send(&mut self) -> Result<(), FormatError> {
        if self.batch.items.is_empty() {
            return Ok(());
        }
        let mut b = std::mem::take(&mut self.batch);
        let cur = self.cur_id();
        if b.items.iter().any(|it| it.chunk == cur) {
            self.seal();
        }
        let lo = b.items.iter().map(|it| it.chunk).min().unwrap_or(0);
        let hi = b.items.iter().map(|it| it.chunk).max().unwrap_or(0);
        b.first_chunk = lo;
        b.chunks = (lo..=hi)
            .map(|id| {
                self.chunks
                    .get((id - self.first_chunk) as usize)
                    .cloned()
                    .flatten()
            })
            .collect();
        for it in &b.items {
            let i = (it.chunk - self.first_chunk) as usize;
            self.uses[i] -= 1;
            if self.uses[i] == 0 {
                self.chunks[i] = None;
            }
        }
        // Forget chunks no sample uses any more.
        let unused = self.chunks.iter().take_while(|c| c.is_none()).count();
        self.chunks.drain(..unused);
        self.uses.drain(..unused);
        self.first_chunk += unused as u32;
        match &mut self.sink {
            Sink::Inline { counter, errs } => {
                count(&b, self.attrs, counter, errs, self.lenient);
                Ok(())
            }
            // A counting thread that stopped leaves its error for the end.
            Sink::Pool(tx) => {
                let _ = tx.send(b);
                Ok(())
            }
        }
    }

    /// Release everything and hand over the last batch.
    fn finish(&mut self) -> Result<(), FormatError> {
        self.release(u64::MAX)?;
        self.send()
    }
}

/// Read every record of `reader`, counting samples into `counter` with
/// `setup.threads` threads.
pub(crate) fn run<R: std::io::Read>(
    reader: &mut Reader<R>,
    spaces: &mut AddressSpaces,
    counter: &mut Counter,
    setup: &Setup,
) -> Result<(), FormatError> {
    reader.raw_samples(true);
    let attrs = reader.attrs().to_vec();
    let lenient = setup.lenient;
    let data_offset = reader.header.data_offset;
    let feed = |sink: Sink, reader: &mut Reader<R>, spaces: &mut AddressSpaces| {
        let mut f = Feed {
            spaces,
            attrs: &attrs,
            lenient,
            sink,
            timed: reader.timed(),
            bound: 0,
            round_max: 0,
            max_time: 0,
            seq: 0,
            queued: 0,
            samples: Vec::new(),
            head: 0,
            sorted: true,
            events: Vec::new(),
            first_chunk: 0,
            chunks: Vec::new(),
            uses: Vec::new(),
            cur: Vec::with_capacity(CHUNK),
            cur_uses: 0,
            batch: Batch::default(),
        };
        let mut n = 0u64;
        let r = (|| {
            while let Some(next) = reader.next_item()? {
                n += 1;
                if n % 65536 == 0 {
                    if let Some(b) = setup.progress {
                        b.set(reader.position() - data_offset);
                    }
                }
                match next {
                    Next::Sample(raw) => f.sample(raw, reader.raw_body())?,
                    Next::Event(t) => f.event(t.time, t.event)?,
                }
            }
            f.finish()
        })();
        let errs = match f.sink {
            Sink::Inline { errs, .. } => errs,
            Sink::Pool(_) => Errors::default(),
        };
        (r, errs)
    };
    let threads = setup.threads.max(1);
    let (result, mut errs) = if threads == 1 {
        feed(
            Sink::Inline {
                counter,
                errs: Errors::default(),
            },
            reader,
            spaces,
        )
    } else {
        let (tx, rx) = mpsc::sync_channel::<Batch>(threads * 2);
        let rx = Mutex::new(rx);
        let (libs, returns) = (setup.libs, setup.returns);
        std::thread::scope(|sc| {
            let workers: Vec<_> = (0..threads)
                .map(|_| {
                    let (rx, attrs) = (&rx, &attrs);
                    sc.spawn(move || {
                        let mut c = Counter::new(libs, returns);
                        let mut errs = Errors::default();
                        loop {
                            let b = match rx.lock() {
                                Ok(r) => r.recv(),
                                Err(_) => break,
                            };
                            let Ok(b) = b else { break };
                            count(&b, attrs, &mut c, &mut errs, lenient);
                        }
                        (c, errs)
                    })
                })
                .collect();
            let (r, mut errs) = feed(Sink::Pool(tx), reader, spaces);
            for w in workers {
                if let Ok((c, e)) = w.join() {
                    counter.merge(c, threads);
                    errs.skipped += e.skipped;
                    if let Some((seq, fe)) = e.first {
                        errs.add(seq, fe, false);
                    }
                }
            }
            (r, errs)
        })
    };
    counter.merge_bad(errs.skipped);
    // The first error in file order: a sample's (found while counting)
    // precedes the reader's, which stopped reading.
    if let Some((_, e)) = errs.first.take() {
        return Err(e);
    }
    result
}
