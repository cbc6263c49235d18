//! Collects the fused `.eh_frame`: every input's unwind table (checked), the new code's.

use anyhow::Result;

use super::eh_frame::{EhFrameInput, EhFrameLayout};
use super::input::Part;
use super::layout::{InAddr, Placement, Slot};
use crate::error::InputError;
use crate::lower;

/// Parse the unwind tables of `parts` at their places, and the new code's
/// at `text`.
pub fn collect(
    parts: &[Part],
    placements: &[Placement],
    text: Option<Slot>,
) -> Result<EhFrameLayout> {
    let mut eh_inputs: Vec<EhFrameInput> = parts
        .iter()
        .zip(placements)
        .filter_map(|(p, pl)| {
            let (addr, size) = p.eh_frame?;
            Some(EhFrameInput {
                bytes: p.bytes_at(addr, size)?,
                vaddr: pl.out(InAddr(addr)).0,
            })
        })
        .collect();
    let unwind = text.map(|t| lower::unwind_blob(t.vaddr.0, t.size));
    if let Some(b) = &unwind {
        eh_inputs.push(EhFrameInput { bytes: b, vaddr: 0 });
    }
    // A damaged table is the fault of its input: name it.
    for (p, pl) in parts.iter().zip(placements) {
        let Some((addr, size)) = p.eh_frame else {
            continue;
        };
        let Some(bytes) = p.bytes_at(addr, size) else {
            continue;
        };
        let one = [EhFrameInput {
            bytes,
            vaddr: addr + pl.disp,
        }];
        let layout = EhFrameLayout::parse(&one).map_err(|e| {
            let why = format!("{e:#}").replace(".eh_frame input 0 at", ".eh_frame at");
            InputError::new(&p.path, format!("malformed {why}"))
        })?;
        // Every FDE describes code of its own image.
        let (lo, hi) = p.span();
        let (lo, hi) = (lo + pl.disp, hi + pl.disp);
        for (b, e) in layout.fde_ranges(addr + pl.disp) {
            if e != b && (b < lo || e < b || e > hi) {
                return Err(InputError::new(
                    &p.path,
                    format!(
                        "malformed .eh_frame: an FDE covers {:#x}..{:#x}, outside the image",
                        b.wrapping_sub(pl.disp),
                        e.wrapping_sub(pl.disp)
                    ),
                )
                .into());
            }
        }
        // Every pointer of the table points into its own image (a
        // pointer elsewhere cannot be rebased, and points at nothing).
        if let Some(t) = layout
            .pcrel_targets()
            .into_iter()
            .find(|&t| t < lo || t > hi)
        {
            return Err(InputError::new(
                &p.path,
                format!(
                    "malformed .eh_frame: a pointer to {:#x}, outside the image",
                    t.wrapping_sub(pl.disp)
                ),
            )
            .into());
        }
    }
    EhFrameLayout::parse(&eh_inputs)
}
