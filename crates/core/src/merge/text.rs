//! Writes the new code (a thunk per lowered RPC site, entry stubs) and the record of every site.

use anyhow::{bail, Result};

use super::input::Part;
use super::layout::{align_up, InAddr, OutAddr, Placement, Slot};
use crate::lower::{self, Dest, SitePlan, SiteRecord};

/// A function of the new code, for `.symtab`.
pub struct CodeSymbol {
    pub(super) name: String,
    pub(super) addr: OutAddr,
    pub(super) size: u64,
}

/// The new code to write, sized before it is placed.
pub struct NewCode<'a> {
    plans: &'a [Vec<SitePlan>],
    /// Images whose entry stub some site calls, ascending.
    stub_images: Vec<usize>,
    thunks_size: u64,
}

/// The new code, encoded at its place.
pub struct Code {
    pub(super) bytes: Vec<u8>,
    /// Bytes replacing each lowered site's call in the copied images.
    pub(super) site_patches: Vec<(OutAddr, Vec<u8>)>,
    pub(super) symbols: Vec<CodeSymbol>,
    /// Every RPC site, with its tier, at its fused address.
    pub(super) records: Vec<SiteRecord>,
}

impl NewCode<'_> {
    /// The code `plans` (one list per part) calls for.
    pub fn new(plans: &[Vec<SitePlan>]) -> NewCode<'_> {
        let mut stub_images: Vec<usize> = plans
            .iter()
            .flatten()
            .filter_map(|p| match p.lowered.as_ref()?.dest {
                Dest::Image(k) => Some(k),
                Dest::Dispatch => None,
            })
            .collect();
        stub_images.sort_unstable();
        stub_images.dedup();
        let thunks_size: u64 = plans
            .iter()
            .flatten()
            .filter_map(|p| p.lowered.as_ref())
            .map(|l| align_up(l.thunk_size, 16))
            .sum();
        NewCode {
            plans,
            stub_images,
            thunks_size,
        }
    }

    pub fn size(&self) -> u64 {
        self.thunks_size + lower::STUB_SIZE * self.stub_images.len() as u64
    }

    /// Encode the code at `text` (`None` when there is none), for `parts`
    /// (root first, runtime last) placed at `placements`.
    pub fn encode(
        &self,
        parts: &[Part],
        placements: &[Placement],
        text: Option<Slot>,
    ) -> Result<Code> {
        let runtime_index = parts.len() - 1;
        let rt_disp = placements[runtime_index].disp;
        let rt_symbol = |name: &str| {
            parts[runtime_index]
                .symbols
                .iter()
                .find(|s| s.name == name)
                .map(|s| s.value + rt_disp)
                .ok_or_else(|| anyhow::anyhow!("fusion runtime lacks {name}"))
        };
        let mut code = Vec::new();
        let mut site_patches = Vec::new();
        let mut code_symbols = Vec::new();
        let mut records = Vec::new();
        let dispatch = if text.is_some() {
            Some((
                rt_symbol("faasfuse_rt_dispatch")?,
                rt_symbol("faasfuse_rt_call_image")?,
            ))
        } else {
            None
        };
        let text_start = text.map_or(0, |t| t.vaddr.0);
        let mut at = text_start;
        let stub_at = |k: usize| {
            let i = self.stub_images.iter().position(|&x| x == k).unwrap_or(0) as u64;
            text_start + self.thunks_size + lower::STUB_SIZE * i
        };
        for ((p, pl), list) in parts.iter().zip(placements).zip(self.plans) {
            for plan in list {
                let mut thunk = None;
                if let (Some(l), Some((dispatch, _))) = (&plan.lowered, dispatch) {
                    let dest = match l.dest {
                        Dest::Dispatch => dispatch,
                        Dest::Image(k) => stub_at(k),
                    };
                    let mut b = lower::thunk_bytes(l, pl.disp, at, dispatch, dest)?;
                    if b.len() as u64 != l.thunk_size {
                        bail!("internal error: thunk size changed with its address");
                    }
                    b.resize(align_up(l.thunk_size, 16) as usize, 0xcc);
                    code.extend_from_slice(&b);
                    let (vaddr, bytes) = lower::patch_site(l, pl.disp, at)?;
                    site_patches.push((OutAddr(vaddr), bytes));
                    let to = match l.dest {
                        Dest::Dispatch => "dispatch".to_string(),
                        Dest::Image(k) => format!("to_{}", parts[k].name),
                    };
                    code_symbols.push(CodeSymbol {
                        name: format!("{}::{to}@{:#x}", p.name, plan.site.address),
                        addr: OutAddr(at),
                        size: l.thunk_size,
                    });
                    thunk = Some(at);
                    at += b.len() as u64;
                }
                records.push(SiteRecord {
                    image: p.name.clone(),
                    function: plan.site.function.clone(),
                    input_address: plan.site.address,
                    address: pl.out(InAddr(plan.site.address)).0,
                    callee: plan.site.callee.clone(),
                    tier: plan.tier(),
                    thunk,
                    reason: plan.reason.clone(),
                });
            }
        }
        if let Some((_, call_image)) = dispatch {
            for &k in &self.stub_images {
                let here = stub_at(k);
                code.extend(lower::stub_bytes(k, here, call_image)?);
                code_symbols.push(CodeSymbol {
                    name: format!("{}::entry_stub", parts[k].name),
                    addr: OutAddr(here),
                    size: 10,
                });
            }
        }
        Ok(Code {
            bytes: code,
            site_patches,
            symbols: code_symbols,
            records,
        })
    }
}
