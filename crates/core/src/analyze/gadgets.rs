//! Byte sequences that write PKRU: `WRPKRU` (`0F 01 EF`), `XRSTOR`
//! (`0F AE /5`, a memory operand: it loads PKRU from an XSAVE area when
//! the area says so) and `XRSTORS` (`0F C7 /3`, a memory operand), with
//! or without REX.W and any prefix (the three opcode bytes must be there
//! either way). Code that jumps to such bytes, wherever they lie (in an
//! immediate, across two instructions, in data that shares a page with
//! code), can reopen protection keys, so the scan looks at every byte
//! offset of every byte the dynamic linker maps executable, not at
//! instruction starts.

use iced_x86::{Decoder, DecoderOptions, Mnemonic};
use serde::Serialize;

use crate::elf::Segment;

/// The page the dynamic linker maps segments by on x86-64.
const PAGE: u64 = 4096;

/// A byte sequence that writes PKRU.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Sequence {
    Wrpkru,
    Xrstor,
    Xrstors,
}

impl Sequence {
    pub fn name(self) -> &'static str {
        match self {
            Sequence::Wrpkru => "WRPKRU",
            Sequence::Xrstor => "XRSTOR",
            Sequence::Xrstors => "XRSTORS",
        }
    }
}

/// Bytes every sequence spans.
pub const SEQUENCE_LEN: usize = 3;

/// The sequence that starts at `b[0]`, if one does.
pub fn sequence_at(b: &[u8]) -> Option<Sequence> {
    let memory_reg = |m: u8, reg: u8| m >> 6 != 3 && (m >> 3) & 7 == reg;
    match *b {
        [0x0f, 0x01, 0xef, ..] => Some(Sequence::Wrpkru),
        [0x0f, 0xae, m, ..] if memory_reg(m, 5) => Some(Sequence::Xrstor),
        [0x0f, 0xc7, m, ..] if memory_reg(m, 3) => Some(Sequence::Xrstors),
        _ => None,
    }
}

/// Bytes the dynamic linker maps executable: a `PF_X` segment's file bytes
/// with the rest of its first and last pages (whatever the file holds
/// there is mapped with it).
#[derive(Debug, Clone, Copy)]
pub struct Run<'a> {
    pub vaddr: u64,
    /// File offset of `bytes`.
    pub offset: u64,
    pub bytes: &'a [u8],
    /// The segment's own file bytes, `[start, end)` addresses.
    pub segment: (u64, u64),
}

/// The executable runs of the file `data` whose `PT_LOAD` segments are
/// `loads`, by address.
pub fn executable_runs<'a>(data: &'a [u8], loads: &[Segment]) -> Vec<Run<'a>> {
    let len = data.len() as u64;
    let mut runs: Vec<Run> = loads
        .iter()
        .filter(|s| s.executable && s.filesz > 0 && s.offset < len)
        .map(|s| {
            let filesz = s.filesz.min(len - s.offset);
            // The file's pages from the one holding its first byte.
            let lead = if s.vaddr % PAGE == s.offset % PAGE {
                s.offset % PAGE
            } else {
                0
            };
            let end = s.offset + filesz;
            // Beyond p_filesz the last page holds the file's next bytes,
            // unless the segment has bss there (the loader zeroes it).
            let end = if s.memsz > s.filesz {
                end
            } else {
                end.div_ceil(PAGE).saturating_mul(PAGE).min(len)
            };
            Run {
                vaddr: s.vaddr - lead,
                offset: s.offset - lead,
                bytes: &data[(s.offset - lead) as usize..end as usize],
                segment: (s.vaddr, s.vaddr + filesz),
            }
        })
        .collect();
    runs.sort_by_key(|r| r.vaddr);
    runs
}

/// One sequence found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hit {
    pub address: u64,
    /// File offset of its first byte.
    pub offset: u64,
    pub sequence: Sequence,
    /// It starts in a `PF_X` segment's own bytes (not in the rest of a page
    /// mapped with it).
    pub in_segment: bool,
}

/// Every sequence at every byte offset of `runs` (sorted by address),
/// those spanning two runs that meet in memory included.
pub fn scan(runs: &[Run]) -> Vec<Hit> {
    scan_with(runs, None).expect("no file to read")
}

/// [`scan`], reading each run's bytes from `file` (at its file offsets) a
/// window at a time when one is given: a large image's code is then read
/// once without staying resident in this process.
pub fn scan_with(runs: &[Run], file: Option<&std::fs::File>) -> std::io::Result<Vec<Hit>> {
    let mut hits = Vec::new();
    for (i, r) in runs.iter().enumerate() {
        let mut push = |at: usize, sequence| {
            let address = r.vaddr + at as u64;
            hits.push(Hit {
                address,
                offset: r.offset + at as u64,
                sequence,
                in_segment: address >= r.segment.0 && address < r.segment.1,
            })
        };
        match file {
            Some(f) => each_in_file(f, r.offset, r.bytes.len(), &mut push)?,
            None => each_in(r.bytes, r.bytes.len(), 0, &mut push),
        }
        // Where the next run starts right after this one's last byte.
        let Some(next) = runs.get(i + 1) else {
            continue;
        };
        let tail = r.bytes.len().saturating_sub(SEQUENCE_LEN - 1);
        if r.vaddr + r.bytes.len() as u64 == next.vaddr {
            let mut seam = r.bytes[tail..].to_vec();
            seam.extend(next.bytes.iter().take(SEQUENCE_LEN - 1));
            for k in 0..r.bytes.len() - tail {
                if let (Some(s), true) = (sequence_at(&seam[k..]), tail + k + 3 > r.bytes.len()) {
                    push(tail + k, s);
                }
            }
        }
    }
    Ok(hits)
}

/// Each sequence starting before `limit` in `bytes` (whole, within
/// `bytes`), reported at its index plus `base`. Candidates by their first
/// byte (SIMD), then matched whole.
fn each_in(bytes: &[u8], limit: usize, base: usize, push: &mut impl FnMut(usize, Sequence)) {
    for at in memchr::memchr_iter(0x0f, bytes) {
        if at >= limit {
            break;
        }
        if let Some(s) = sequence_at(&bytes[at..]) {
            push(base + at, s);
        }
    }
}

/// [`each_in`] over `len` bytes of `file` from `offset`, read a window at
/// a time; a window's last two bytes start the next one, so no sequence
/// is missed or found twice.
fn each_in_file(
    file: &std::fs::File,
    offset: u64,
    len: usize,
    push: &mut impl FnMut(usize, Sequence),
) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    const WINDOW: usize = 4 << 20;
    let keep = SEQUENCE_LEN - 1;
    let mut buf = vec![0u8; WINDOW + keep];
    let (mut done, mut carry) = (0usize, 0usize);
    while done + carry < len {
        let want = (len - done - carry).min(WINDOW);
        file.read_exact_at(
            &mut buf[carry..carry + want],
            offset + (done + carry) as u64,
        )?;
        let n = carry + want;
        let limit = if done + n == len { n } else { n - keep };
        each_in(&buf[..n], limit, done, push);
        buf.copy_within(limit..n, 0);
        carry = n - limit;
        done += limit;
    }
    Ok(())
}

/// The address of the `0F 01 EF` bytes of every `WRPKRU` instruction of
/// `code` (at `ip`), decoded from its start.
pub fn wrpkru_instructions(code: &[u8], ip: u64) -> Vec<u64> {
    Decoder::with_ip(64, code, ip, DecoderOptions::NONE)
        .into_iter()
        .filter(|i| i.mnemonic() == Mnemonic::Wrpkru)
        .map(|i| i.next_ip() - SEQUENCE_LEN as u64)
        .collect()
}

/// Where a sequence at `at` lies among the instructions of `code` (at
/// `ip`, decoded from its start): the instruction itself, inside one
/// (an immediate, a displacement), or across two.
pub fn placement(code: &[u8], ip: u64, at: u64) -> &'static str {
    let end = at + SEQUENCE_LEN as u64;
    for i in Decoder::with_ip(64, code, ip, DecoderOptions::NONE) {
        if i.next_ip() <= at {
            continue;
        }
        if i.ip() > at {
            break;
        }
        let own = matches!(
            i.mnemonic(),
            Mnemonic::Wrpkru
                | Mnemonic::Xrstor
                | Mnemonic::Xrstor64
                | Mnemonic::Xrstors
                | Mnemonic::Xrstors64
        );
        return match (end <= i.next_ip(), own) {
            (true, true) => "the instruction itself",
            (true, false) => "inside one instruction",
            (false, _) => "spanning two instructions",
        };
    }
    "outside the instructions decoded"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequences_need_their_operand_form() {
        assert_eq!(sequence_at(&[0x0f, 0x01, 0xef]), Some(Sequence::Wrpkru));
        assert_eq!(sequence_at(&[0x0f, 0x01, 0xee]), None); // rdpkru
        assert_eq!(sequence_at(&[0x0f, 0xae, 0x2f]), Some(Sequence::Xrstor));
        assert_eq!(sequence_at(&[0x0f, 0xae, 0x6d]), Some(Sequence::Xrstor));
        assert_eq!(sequence_at(&[0x0f, 0xae, 0xe8]), None); // lfence
        assert_eq!(sequence_at(&[0x0f, 0xae, 0x27]), None); // xsave
        assert_eq!(sequence_at(&[0x0f, 0xc7, 0x1f]), Some(Sequence::Xrstors));
        assert_eq!(sequence_at(&[0x0f, 0xc7, 0x0f]), None); // cmpxchg8b
        assert_eq!(sequence_at(&[0x0f, 0x01]), None);
    }

    #[test]
    fn reading_a_file_by_windows_finds_what_the_bytes_hold() {
        // 9 MiB of code with sequences across both 4 MiB window seams, at
        // the very start and at the very end; a file read back by windows
        // gives the same hits as the bytes in memory.
        let len = 9 << 20;
        let mut data = vec![0x90u8; len];
        let at = [
            0,
            (4 << 20) - 2,
            (4 << 20) + 7,
            5 << 20,
            (8 << 20) - 1,
            len - 3,
        ];
        for &a in &at {
            data[a..a + 3].copy_from_slice(&[0x0f, 0x01, 0xef]);
        }
        data[(8 << 20) - 9..(8 << 20) - 6].copy_from_slice(&[0x0f, 0xae, 0x2f]);
        let run = Run {
            vaddr: 0x1000,
            offset: 0,
            bytes: &data,
            segment: (0x1000, 0x1000 + len as u64),
        };
        let path = std::env::temp_dir().join(format!("ff-gadgets-{}", std::process::id()));
        std::fs::write(&path, &data).unwrap();
        let file = std::fs::File::open(&path).unwrap();
        let by_file = scan_with(&[run], Some(&file)).unwrap();
        std::fs::remove_file(&path).unwrap();
        let in_memory = scan(&[run]);
        assert_eq!(by_file, in_memory);
        assert_eq!(by_file.len(), at.len() + 1, "{by_file:?}");
        for a in [(4 << 20) - 2, (8 << 20) - 1, len - 3] {
            assert!(
                by_file.iter().any(|h| h.offset == a as u64),
                "{a:#x}: {by_file:?}"
            );
        }
    }

    #[test]
    fn the_rest_of_a_code_page_is_scanned_too() {
        // Code at file 0x800..0x900, mapped at 0x1800: the page holds the
        // file's bytes 0..0x1000, whatever lies there.
        let mut data = vec![0u8; 0x2000];
        data[0x10..0x13].copy_from_slice(&[0x0f, 0x01, 0xef]);
        data[0x880..0x883].copy_from_slice(&[0x0f, 0xae, 0x2f]);
        data[0xf00..0xf03].copy_from_slice(&[0x0f, 0xc7, 0x1f]);
        data[0x1000..0x1003].copy_from_slice(&[0x0f, 0x01, 0xef]);
        let seg = |memsz| Segment {
            vaddr: 0x1800,
            memsz,
            offset: 0x800,
            filesz: 0x100,
            executable: true,
        };
        let runs = executable_runs(&data, &[seg(0x100)]);
        let got: Vec<(u64, bool)> = scan(&runs)
            .iter()
            .map(|h| (h.address, h.in_segment))
            .collect();
        assert_eq!(got, [(0x1010, false), (0x1880, true), (0x1f00, false)]);
        // With bss after its bytes, the loader zeroes the rest of the page.
        let runs = executable_runs(&data, &[seg(0x200)]);
        assert_eq!(scan(&runs).len(), 2);
    }

    #[test]
    fn every_offset_and_the_seam_of_runs_that_meet() {
        let a = [0x90, 0xb8, 0x0f, 0x01, 0xef, 0x00, 0x0f, 0x01];
        let b = [0xef, 0xc3];
        let seg = |v: u64, n: usize| (v, v + n as u64);
        let runs = [
            Run {
                vaddr: 0x1000,
                offset: 0,
                bytes: &a,
                segment: seg(0x1000, a.len()),
            },
            Run {
                vaddr: 0x1008,
                offset: 0x100,
                bytes: &b,
                segment: seg(0x1008, b.len()),
            },
        ];
        let got: Vec<u64> = scan(&runs).iter().map(|h| h.address).collect();
        assert_eq!(got, [0x1002, 0x1006]);
        // mov eax, 0x00ef010f; wrpkru: one inside, one the instruction.
        let code = [0xb8, 0x0f, 0x01, 0xef, 0x00, 0x0f, 0x01, 0xef];
        assert_eq!(placement(&code, 0, 1), "inside one instruction");
        assert_eq!(placement(&code, 0, 5), "the instruction itself");
        assert_eq!(wrpkru_instructions(&code, 0), [5]);
        // `add al, 0x0f; add edi, ebp`: 0f | 01 ef.
        let code = [0x04, 0x0f, 0x01, 0xef];
        assert_eq!(placement(&code, 0, 1), "spanning two instructions");
    }
}
