//! Messages between the engine and its worker processes in `--ipc` mode.
//!
//! Every message is one frame: a 1-byte tag, a 4-byte little-endian `i32`
//! (depth or return code), and a length-prefixed payload (u32 length of the
//! name/text part, u64 length of the data part). Calls nest strictly, so
//! replies need no identifiers: the innermost pending call is answered first.

use std::io::{self, Read, Write};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Msg {
    /// worker → engine: library loaded and initialised (`text` empty) or not.
    Ready {
        error: String,
    },
    /// engine → worker: run the function (its call is at this depth).
    Call {
        depth: i32,
        input: Vec<u8>,
    },
    /// worker → engine: the function returned.
    Result {
        rc: i32,
        output: Vec<u8>,
    },
    /// worker → engine: nested call to `name` from a call at `depth` (a
    /// fused image's callee runs deeper than its process's call).
    Invoke {
        depth: i32,
        name: Vec<u8>,
        input: Vec<u8>,
    },
    /// engine → worker: result of the worker's pending nested call.
    Reply {
        rc: i32,
        output: Vec<u8>,
    },
    /// engine → worker: exit (the worker is not destroyed, the library not
    /// unloaded, as on nightcore); the worker answers with `Stats` carrying
    /// its nested-call times (ns, little-endian u64s).
    Shutdown,
    Stats {
        times: Vec<u8>,
    },
}

const MAX_FRAME: u64 = 1 << 30;

impl Msg {
    /// The message's name, for protocol errors.
    pub fn kind(&self) -> &'static str {
        match self {
            Msg::Ready { .. } => "Ready",
            Msg::Call { .. } => "Call",
            Msg::Result { .. } => "Result",
            Msg::Invoke { .. } => "Invoke",
            Msg::Reply { .. } => "Reply",
            Msg::Shutdown => "Shutdown",
            Msg::Stats { .. } => "Stats",
        }
    }

    fn parts(&self) -> (u8, i32, &[u8], &[u8]) {
        match self {
            Msg::Ready { error } => (1, 0, error.as_bytes(), &[]),
            Msg::Call { depth, input } => (2, *depth, &[], input),
            Msg::Result { rc, output } => (3, *rc, &[], output),
            Msg::Invoke { depth, name, input } => (4, *depth, name, input),
            Msg::Reply { rc, output } => (5, *rc, &[], output),
            Msg::Shutdown => (6, 0, &[], &[]),
            Msg::Stats { times } => (7, 0, &[], times),
        }
    }

    pub fn write_to(&self, w: &mut impl Write) -> io::Result<()> {
        let (tag, num, text, data) = self.parts();
        let mut head = [0u8; 17];
        head[0] = tag;
        head[1..5].copy_from_slice(&num.to_le_bytes());
        head[5..9].copy_from_slice(&(text.len() as u32).to_le_bytes());
        head[9..17].copy_from_slice(&(data.len() as u64).to_le_bytes());
        w.write_all(&head)?;
        w.write_all(text)?;
        w.write_all(data)?;
        w.flush()
    }

    /// Read one frame; `Ok(None)` at a clean end of stream.
    pub fn read_from(r: &mut impl Read) -> io::Result<Option<Msg>> {
        let mut head = [0u8; 17];
        match r.read_exact(&mut head[..1]) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(e),
        }
        r.read_exact(&mut head[1..])?;
        let num = i32::from_le_bytes(head[1..5].try_into().expect("4 bytes"));
        let text_len = u32::from_le_bytes(head[5..9].try_into().expect("4 bytes")) as u64;
        let data_len = u64::from_le_bytes(head[9..17].try_into().expect("8 bytes"));
        if text_len + data_len > MAX_FRAME {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "frame too large",
            ));
        }
        let mut text = vec![0u8; text_len as usize];
        r.read_exact(&mut text)?;
        let mut data = vec![0u8; data_len as usize];
        r.read_exact(&mut data)?;
        let bad = || io::Error::new(io::ErrorKind::InvalidData, "unknown message tag");
        Ok(Some(match head[0] {
            1 => Msg::Ready {
                error: String::from_utf8_lossy(&text).into_owned(),
            },
            2 => Msg::Call {
                depth: num,
                input: data,
            },
            3 => Msg::Result {
                rc: num,
                output: data,
            },
            4 => Msg::Invoke {
                depth: num,
                name: text,
                input: data,
            },
            5 => Msg::Reply {
                rc: num,
                output: data,
            },
            6 => Msg::Shutdown,
            7 => Msg::Stats { times: data },
            _ => return Err(bad()),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip() {
        let msgs = vec![
            Msg::Ready {
                error: "boom".into(),
            },
            Msg::Call {
                depth: 3,
                input: b"abc".to_vec(),
            },
            Msg::Result {
                rc: -1,
                output: vec![0, 1, 2],
            },
            Msg::Invoke {
                depth: 2,
                name: b"Bar".to_vec(),
                input: vec![],
            },
            Msg::Reply {
                rc: 0,
                output: b"x".to_vec(),
            },
            Msg::Shutdown,
            Msg::Stats { times: vec![9; 16] },
        ];
        let mut buf = Vec::new();
        for m in &msgs {
            m.write_to(&mut buf).unwrap();
        }
        let mut r = &buf[..];
        for m in &msgs {
            assert_eq!(Msg::read_from(&mut r).unwrap().as_ref(), Some(m));
        }
        assert_eq!(Msg::read_from(&mut r).unwrap(), None);
        // A frame cut short is an error, not a clean end.
        let mut cut = &buf[..buf.len() - 1];
        for _ in 0..msgs.len() - 1 {
            Msg::read_from(&mut cut).unwrap();
        }
        assert!(Msg::read_from(&mut cut).is_err());
    }
}
