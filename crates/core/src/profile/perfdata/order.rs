//! Putting events in time order. perf writes each CPU's buffer in turn, so
//! a sample can precede in the file the MMAP it depends on; perf marks with
//! FINISHED_ROUND the points before which every older event has been
//! written. Events are queued and released up to the newest time of the
//! round before (perf's own rule), within a memory bound.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io::Read;

use super::event::Event;
use super::reader::{Reader, Timed};
use super::FormatError;

/// Queued bytes beyond which the oldest events are released early.
const MAX_QUEUED: usize = 64 << 20;

struct Queued {
    time: u64,
    seq: u64,
    size: usize,
    /// Boxed: heap operations move only a pointer.
    event: Box<Event>,
}

impl PartialEq for Queued {
    fn eq(&self, o: &Self) -> bool {
        (self.time, self.seq) == (o.time, o.seq)
    }
}
impl Eq for Queued {}
impl PartialOrd for Queued {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Queued {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (self.time, self.seq).cmp(&(o.time, o.seq))
    }
}

pub struct Ordered<R: Read> {
    pub reader: Reader<R>,
    heap: BinaryHeap<Reverse<Queued>>,
    queued: usize,
    seq: u64,
    max_time: u64,
    round_max: u64,
    /// Events up to this time may be released.
    bound: u64,
    done: bool,
}

fn approx_size(e: &Event) -> usize {
    64 + match e {
        Event::Sample(s) => {
            s.branches.len() * 24 + s.callchain.len() * 8 + s.stack.len() + s.regs.len() * 8
        }
        Event::Mmap(m) => m.filename.len(),
        _ => 0,
    }
}

impl<R: Read> Ordered<R> {
    pub fn new(reader: Reader<R>) -> Self {
        Ordered {
            reader,
            heap: BinaryHeap::new(),
            queued: 0,
            seq: 0,
            max_time: 0,
            round_max: 0,
            bound: 0,
            done: false,
        }
    }

    fn pop(&mut self) -> Option<Event> {
        let Reverse(q) = self.heap.pop()?;
        self.queued -= q.size;
        self.bound = self.bound.max(q.time);
        Some(*q.event)
    }

    /// The next event in time order (file order when events lack times).
    pub fn next_event(&mut self) -> Result<Option<Event>, FormatError> {
        loop {
            if let Some(Reverse(top)) = self.heap.peek() {
                if self.done || top.time <= self.bound || self.queued > MAX_QUEUED {
                    return Ok(self.pop());
                }
            } else if self.done {
                return Ok(None);
            }
            let Some(Timed { time, event, .. }) = self.reader.next_record()? else {
                self.done = true;
                continue;
            };
            if matches!(event, Event::FinishedRound) {
                self.bound = self.bound.max(self.round_max);
                self.round_max = self.max_time;
                continue;
            }
            // A build-id holds for its file name whenever it comes (perf
            // inject puts it before the mapping, untimed): at once.
            if matches!(event, Event::BuildId { .. })
                || !self.reader.timed() && self.heap.is_empty()
            {
                return Ok(Some(event));
            }
            // Untimed events (build-ids, records without sample_id_all) stay
            // where they are relative to the newest time seen.
            let time = time.unwrap_or(self.max_time);
            self.max_time = self.max_time.max(time);
            let size = approx_size(&event);
            self.queued += size;
            self.seq += 1;
            self.heap.push(Reverse(Queued {
                time,
                seq: self.seq,
                size,
                event: Box::new(event),
            }));
        }
    }
}
