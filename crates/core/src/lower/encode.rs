//! Machine code for lowered sites: the rewritten site, its thunk, the
//! per-callee entry stubs, and the unwind entry that covers them.

use anyhow::{anyhow, Result};
use gimli::constants::{DW_EH_PE_pcrel, DW_EH_PE_sdata4};
use iced_x86::{Code, Encoder, Instruction, MemoryOperand, OpKind, Register};

use super::{Lowered, Target};

/// Size reserved for one entry stub (`mov esi, k; jmp call_image`).
pub const STUB_SIZE: u64 = 16;

fn encode_all(insns: &[Instruction], at: u64) -> Result<Vec<u8>> {
    let mut enc = Encoder::new(64);
    let mut rip = at;
    for x in insns {
        let n = enc
            .encode(x, rip)
            .map_err(|e| anyhow!("encoding `{x}`: {e}"))?;
        rip += n as u64;
    }
    Ok(enc.take_buffer())
}

/// The destination of `mov r64, rsp` (either encoding), the one form of
/// reading rsp as a value that moves (as `lea r64, [rsp+8]`).
pub fn mov_from_rsp(x: &Instruction) -> Option<Register> {
    let is_mov = matches!(x.code(), Code::Mov_r64_rm64 | Code::Mov_rm64_r64)
        && x.op0_kind() == OpKind::Register
        && x.op1_kind() == OpKind::Register
        && x.op1_register() == Register::RSP;
    is_mov.then(|| x.op0_register())
}

/// The moved instructions as they must run in the thunk: displaced by
/// `disp`, with `rsp`-based operands 8 higher and `mov r64, rsp` read as
/// `lea r64, [rsp+8]` (the return address is pushed).
fn relocate(x: &Instruction, disp: u64) -> Instruction {
    if let Some(r) = mov_from_rsp(x) {
        return Instruction::with2(
            Code::Lea_r64_m,
            r,
            MemoryOperand::with_base_displ(Register::RSP, 8),
        )
        .expect("lea r64, [rsp+8]");
    }
    let mut y = *x;
    if y.is_ip_rel_memory_operand() {
        y.set_memory_displacement64(x.ip_rel_memory_address().wrapping_add(disp));
    } else if y.memory_base() == Register::RSP {
        y.set_memory_displacement64(x.memory_displacement64().wrapping_add(8));
        // 1 = the shortest form that fits (the encoder widens it).
        y.set_memory_displ_size(1);
    }
    y
}

/// The `call [mem]` operand as the thunk addresses it.
fn target_operand(call: &Instruction, disp: u64) -> MemoryOperand {
    let m = relocate(call, disp);
    let displ = m.memory_displacement64() as i64;
    MemoryOperand::new(
        m.memory_base(),
        m.memory_index(),
        m.memory_index_scale(),
        displ,
        if displ == 0 { 0 } else { 1 },
        false,
        m.memory_segment(),
    )
}

/// The thunk of a lowered site placed at `at`, the site's image displaced
/// by `disp`; `dispatch` is the runtime's dispatcher and `dest` where the
/// guarded call goes. A target in memory is compared and, when it is not
/// the dispatcher, jumped to in place (no load into a register first).
pub fn thunk_bytes(l: &Lowered, disp: u64, at: u64, dispatch: u64, dest: u64) -> Result<Vec<u8>> {
    let mut insns: Vec<Instruction> = l.moved.iter().map(|x| relocate(x, disp)).collect();
    let uses = |target: Target, r: Register| match target {
        Target::Reg(t) | Target::Retpoline(t, _) => t == r,
        Target::Mem(call) => call.memory_base() == r || call.memory_index() == r,
    };
    let mut target = l.target;
    if uses(target, Register::R10) && uses(target, Register::R11) {
        // No scratch register is left beside the operand: load the target.
        let Target::Mem(call) = target else {
            unreachable!("a register target uses one register")
        };
        insns.push(Instruction::with2(
            Code::Mov_r64_rm64,
            Register::R11,
            target_operand(&call, disp),
        )?);
        target = Target::Reg(Register::R11);
    }
    // The register that holds the dispatcher's address: r10, unless the
    // target's register or memory operand uses it.
    let scratch = if uses(target, Register::R10) {
        Register::R11
    } else {
        Register::R10
    };
    insns.push(Instruction::with2(
        Code::Lea_r64_m,
        scratch,
        MemoryOperand::with_base_displ(Register::RIP, dispatch as i64),
    )?);
    insns.push(match target {
        Target::Reg(r) | Target::Retpoline(r, _) => {
            Instruction::with2(Code::Cmp_rm64_r64, r, scratch)?
        }
        Target::Mem(call) => {
            Instruction::with2(Code::Cmp_rm64_r64, target_operand(&call, disp), scratch)?
        }
    });
    // Sizes do not depend on addresses (rel32 and disp32 forms), so the
    // fallback's address is known from a first encoding.
    let mut jne = Instruction::with_branch(Code::Jne_rel32_64, at)?;
    let jmp = Instruction::with_branch(Code::Jmp_rel32_64, dest)?;
    let head = encode_all(&insns, at)?.len() as u64;
    jne.set_near_branch64(at + head + 6 + 5);
    insns.push(jne);
    insns.push(jmp);
    insns.push(match target {
        Target::Reg(r) => Instruction::with1(Code::Jmp_rm64, r)?,
        Target::Mem(call) => Instruction::with1(Code::Jmp_rm64, target_operand(&call, disp))?,
        // Not the dispatcher: through the retpoline thunk, as before.
        Target::Retpoline(_, thunk) => {
            Instruction::with_branch(Code::Jmp_rel32_64, thunk.wrapping_add(disp))?
        }
    });
    encode_all(&insns, at)
}

/// An entry stub for fused image `k`: the dispatcher's arguments with the
/// name replaced by the image's index, to the runtime's `call_image`.
pub fn stub_bytes(k: usize, at: u64, call_image: u64) -> Result<Vec<u8>> {
    let insns = [
        Instruction::with2(Code::Mov_r32_imm32, Register::ESI, k as u32)?,
        Instruction::with_branch(Code::Jmp_rel32_64, call_image)?,
    ];
    let mut b = encode_all(&insns, at)?;
    b.resize(STUB_SIZE as usize, 0xcc);
    Ok(b)
}

/// The rewritten site: NOPs where the moved instructions were, then a
/// `call rel32` to the thunk ending at the original return address.
/// Returns the output address of the first byte and the bytes.
pub fn patch_site(l: &Lowered, disp: u64, thunk: u64) -> Result<(u64, Vec<u8>)> {
    let start = l.window_start + disp;
    let end = l.call_end + disp;
    let room = end
        .checked_sub(start)
        .filter(|n| *n >= 5)
        .ok_or_else(|| anyhow::anyhow!("a site's window at {start:#x} is shorter than a call"))?;
    let mut bytes = nops((room - 5) as usize);
    let call = Instruction::with_branch(Code::Call_rel32_64, thunk)?;
    bytes.extend(encode_all(&[call], end - 5)?);
    Ok((start, bytes))
}

/// `n` bytes of the recommended multi-byte NOPs.
fn nops(mut n: usize) -> Vec<u8> {
    const NOPS: [&[u8]; 9] = [
        &[0x90],
        &[0x66, 0x90],
        &[0x0f, 0x1f, 0x00],
        &[0x0f, 0x1f, 0x40, 0x00],
        &[0x0f, 0x1f, 0x44, 0x00, 0x00],
        &[0x66, 0x0f, 0x1f, 0x44, 0x00, 0x00],
        &[0x0f, 0x1f, 0x80, 0x00, 0x00, 0x00, 0x00],
        &[0x0f, 0x1f, 0x84, 0x00, 0x00, 0x00, 0x00, 0x00],
        &[0x66, 0x0f, 0x1f, 0x84, 0x00, 0x00, 0x00, 0x00, 0x00],
    ];
    let mut out = Vec::with_capacity(n);
    while n > 0 {
        let k = n.min(NOPS.len());
        out.extend_from_slice(NOPS[k - 1]);
        n -= k;
    }
    out
}

/// A CIE and one FDE covering `[start, start + len)` with the rule of a
/// function entry (CFA = rsp + 8, return address at CFA - 8, every other
/// register unchanged), which holds everywhere in thunks and stubs: they
/// are entered by a call and push nothing. Encoded as if the blob were at
/// address 0 (its PC-relative field is rebased where it lands).
pub fn unwind_blob(start: u64, len: u64) -> Vec<u8> {
    const FDE_ENC: u8 = DW_EH_PE_pcrel.0 | DW_EH_PE_sdata4.0;
    let mut cie = vec![
        0, 0, 0, 0, // CIE id
        1, // version
        b'z', b'R', 0,       // augmentation
        1,       // code alignment
        0x78,    // data alignment -8
        16,      // return address register (rip)
        1,       // augmentation data length
        FDE_ENC, // FDE pointers: pcrel | sdata4
        0x0c, 7, 8, // DW_CFA_def_cfa rsp, 8
        0x90, 1, // DW_CFA_offset rip, cfa-8
    ];
    while (cie.len() + 4) % 8 != 0 {
        cie.push(0); // DW_CFA_nop
    }
    let mut out = Vec::new();
    out.extend_from_slice(&(cie.len() as u32).to_le_bytes());
    out.extend_from_slice(&cie);
    let fde_at = out.len();
    let mut fde = Vec::new();
    fde.extend_from_slice(&((fde_at + 4) as u32).to_le_bytes()); // back to the CIE
    let field = (fde_at + 8) as u64;
    fde.extend_from_slice(&(start.wrapping_sub(field) as u32).to_le_bytes());
    fde.extend_from_slice(&(len as u32).to_le_bytes());
    fde.push(0); // augmentation data length
    while (fde.len() + 4) % 8 != 0 {
        fde.push(0);
    }
    out.extend_from_slice(&(fde.len() as u32).to_le_bytes());
    out.extend_from_slice(&fde);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use gimli::{BaseAddresses, CieOrFde, EhFrame, LittleEndian, UnwindSection};
    use iced_x86::{Decoder, DecoderOptions, Mnemonic};

    #[test]
    fn nops_decode_as_nops_of_the_exact_length() {
        for n in 0..40 {
            let b = nops(n);
            assert_eq!(b.len(), n);
            let mut d = Decoder::with_ip(64, &b, 0, DecoderOptions::NONE);
            assert!(d.iter().all(|x| x.mnemonic() == Mnemonic::Nop));
        }
    }

    #[test]
    fn unwind_blob_parses_and_covers_the_region() {
        let blob = unwind_blob(0x5000, 0x40);
        let eh = EhFrame::new(&blob, LittleEndian);
        let bases = BaseAddresses::default().set_eh_frame(0);
        let mut entries = eh.entries(&bases);
        let mut fdes = 0;
        while let Some(e) = entries.next().unwrap() {
            if let CieOrFde::Fde(p) = e {
                let fde = p.parse(EhFrame::cie_from_offset).unwrap();
                assert_eq!(fde.initial_address(), 0x5000);
                assert_eq!(fde.len(), 0x40);
                fdes += 1;
            }
        }
        assert_eq!(fdes, 1);
    }

    fn decode(b: &[u8], ip: u64) -> Vec<Instruction> {
        Decoder::with_ip(64, b, ip, DecoderOptions::NONE)
            .iter()
            .collect()
    }

    #[test]
    fn thunk_runs_moved_code_then_guards_the_target() {
        // mov rsi, [rsp+0x10]; lea rdx, [rip+0x100]; call [rbx+8]
        let code = [
            0x48, 0x8b, 0x74, 0x24, 0x10, 0x48, 0x8d, 0x15, 0x00, 0x01, 0x00, 0x00, 0xff, 0x53,
            0x08,
        ];
        let insns = decode(&code, 0x1000);
        let l = Lowered {
            tier: 2,
            dest: super::super::Dest::Image(1),
            window_start: 0x1000,
            call_end: 0x100f,
            moved: insns[..2].to_vec(),
            target: Target::Mem(insns[2]),
            thunk_size: 0,
        };
        let disp = 0x10000;
        let at = 0x40000;
        let b = thunk_bytes(&l, disp, at, 0x50000, 0x60000).unwrap();
        let t = decode(&b, at);
        // rsp operand 8 higher; RIP-relative target displaced.
        assert_eq!(t[0].memory_base(), Register::RSP);
        assert_eq!(t[0].memory_displacement64(), 0x18);
        assert_eq!(t[1].ip_rel_memory_address(), 0x100c + 0x100 + disp);
        // The target compared in memory with the dispatcher (in r10) ...
        assert_eq!(t[2].op0_register(), Register::R10);
        assert_eq!(t[2].ip_rel_memory_address(), 0x50000);
        assert_eq!(t[3].mnemonic(), Mnemonic::Cmp);
        assert_eq!(t[3].memory_base(), Register::RBX);
        assert_eq!(t[3].memory_displacement64(), 8);
        assert_eq!(t[3].op1_register(), Register::R10);
        assert_eq!(t[4].mnemonic(), Mnemonic::Jne);
        assert_eq!(t[4].near_branch_target(), t[6].ip());
        assert_eq!(t[5].near_branch_target(), 0x60000);
        // ... and jumped to through the same operand when it is not.
        assert_eq!(t[6].mnemonic(), Mnemonic::Jmp);
        assert_eq!(t[6].memory_base(), Register::RBX);
        assert_eq!(t[6].memory_displacement64(), 8);
        assert_eq!(t.len(), 7);

        let (start, patch) = patch_site(&l, disp, at).unwrap();
        assert_eq!(start, 0x1000 + disp);
        assert_eq!(patch.len(), 15);
        let p = decode(&patch, start);
        let call = p.last().unwrap();
        assert_eq!(call.mnemonic(), Mnemonic::Call);
        assert_eq!(call.next_ip(), 0x100f + disp);
        assert_eq!(call.near_branch_target(), at);
    }

    #[test]
    fn mov_from_rsp_moves_as_lea_of_the_callers_rsp() {
        // mov r8, rsp (both encodings); call [rbx+8]
        for code in [
            [0x49, 0x89, 0xe0, 0xff, 0x53, 0x08],
            [0x4c, 0x8b, 0xc4, 0xff, 0x53, 0x08],
        ] {
            let insns = decode(&code, 0x1000);
            assert_eq!(mov_from_rsp(&insns[0]), Some(Register::R8));
            let l = Lowered {
                tier: 1,
                dest: super::super::Dest::Dispatch,
                window_start: 0x1000,
                call_end: 0x1006,
                moved: insns[..1].to_vec(),
                target: Target::Mem(insns[1]),
                thunk_size: 0,
            };
            let t = decode(&thunk_bytes(&l, 0, 0x4000, 0x5000, 0x6000).unwrap(), 0x4000);
            assert_eq!(t[0].mnemonic(), Mnemonic::Lea);
            assert_eq!(t[0].op0_register(), Register::R8);
            assert_eq!(t[0].memory_base(), Register::RSP);
            assert_eq!(t[0].memory_displacement64(), 8);
        }
        // Other reads of rsp are not this form.
        let add = decode(&[0x49, 0x01, 0xe0], 0); // add r8, rsp
        assert_eq!(mov_from_rsp(&add[0]), None);
    }

    /// The decoded tier-1 thunk of the 4-byte indirect call `call`, at 0x1000.
    fn dispatch_thunk_of(call: &[u8]) -> Vec<Instruction> {
        let insns = decode(call, 0x1000);
        let l = Lowered {
            tier: 1,
            dest: super::super::Dest::Dispatch,
            window_start: 0x1000,
            call_end: 0x1004,
            moved: Vec::new(),
            target: Target::Mem(insns[0]),
            thunk_size: 0,
        };
        decode(&thunk_bytes(&l, 0, 0x4000, 0x5000, 0x6000).unwrap(), 0x4000)
    }

    #[test]
    fn target_in_memory_addressed_by_r10_and_r11_is_loaded_first() {
        // call [r10+r11*8]
        let t = dispatch_thunk_of(&[0x43, 0xff, 0x14, 0xda]);
        assert_eq!(t[0].mnemonic(), Mnemonic::Mov);
        assert_eq!(t[0].op0_register(), Register::R11);
        assert_eq!(t[0].memory_base(), Register::R10);
        assert_eq!(t[0].memory_index(), Register::R11);
        assert_eq!(t[1].op0_register(), Register::R10);
        assert_eq!(t[2].op0_register(), Register::R11);
        assert_eq!(t[2].op1_register(), Register::R10);
        assert_eq!(t[5].op0_register(), Register::R11);
        assert_eq!(t.len(), 6);
    }

    #[test]
    fn target_in_memory_addressed_by_r10_compares_with_r11() {
        // call [r10+8]
        let t = dispatch_thunk_of(&[0x41, 0xff, 0x52, 0x08]);
        assert_eq!(t[0].op0_register(), Register::R11);
        assert_eq!(t[1].memory_base(), Register::R10);
        assert_eq!(t[1].op1_register(), Register::R11);
        assert_eq!(t[4].memory_base(), Register::R10);
        assert_eq!(t.len(), 5);
    }

    #[test]
    fn retpoline_site_falls_back_to_its_thunk() {
        let l = Lowered {
            tier: 2,
            dest: super::super::Dest::Image(0),
            window_start: 0x1000,
            call_end: 0x1005,
            moved: Vec::new(),
            target: Target::Retpoline(Register::R11, 0x1800),
            thunk_size: 0,
        };
        let disp = 0x10000;
        let t = decode(
            &thunk_bytes(&l, disp, 0x40000, 0x50000, 0x60000).unwrap(),
            0x40000,
        );
        // r11 holds the target: the scratch register is r10.
        assert_eq!(t[0].op0_register(), Register::R10);
        assert_eq!(t[1].mnemonic(), Mnemonic::Cmp);
        assert_eq!(t[1].op0_register(), Register::R11);
        assert_eq!(t[3].near_branch_target(), 0x60000);
        // No indirect jump: the fallback is the (displaced) thunk.
        assert_eq!(t[4].mnemonic(), Mnemonic::Jmp);
        assert_eq!(t[4].near_branch_target(), 0x1800 + disp);
        assert_eq!(t.len(), 5);
    }
}
