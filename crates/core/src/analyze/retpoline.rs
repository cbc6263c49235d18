//! Retpoline thunks: with `-mindirect-branch=thunk` (gcc) or `-mretpoline`
//! (clang) an indirect `call reg` / `jmp reg` is a direct `call`/`jmp` of a
//! thunk (`__x86_indirect_thunk_rax`, `__llvm_retpoline_r11`) that jumps to
//! the register's value by a return:
//!
//! ```text
//! [endbr64]
//! call 1f
//! 2: pause; lfence; jmp 2b
//! 1: mov [rsp], REG
//!    ret            (or the -mfunction-return return thunk)
//! ```
//!
//! Thunks are recognised by this shape, not by name, so stripped images
//! are read the same.

use std::cell::RefCell;
use std::collections::HashMap;

use iced_x86::{Code, Decoder, DecoderOptions, FlowControl, Instruction, Mnemonic, Register};

use crate::elf::Image;

/// The longest thunk body read.
const SPAN: usize = 48;

/// The register a retpoline thunk at `addr` branches to, if `addr` is one.
pub fn thunk_register(image: &Image, addr: u64) -> Option<Register> {
    let bytes = image.read_vaddr(addr, SPAN).or_else(|| {
        // A thunk at the very end of the code: read what there is.
        (1..SPAN).rev().find_map(|n| image.read_vaddr(addr, n))
    })?;
    let end = addr + bytes.len() as u64;
    let decode_at = |at: u64| -> Option<Vec<Instruction>> {
        if !(addr..end).contains(&at) {
            return None;
        }
        let off = (at - addr) as usize;
        let mut d = Decoder::with_ip(64, &bytes[off..], at, DecoderOptions::NONE);
        Some(
            (0..3)
                .map_while(|_| d.can_decode().then(|| d.decode()))
                .collect(),
        )
    };
    let head = decode_at(addr)?;
    let mut head = head.iter();
    let mut first = head.next()?;
    if first.code() == Code::Endbr64 {
        first = head.next()?;
    }
    if first.code() != Code::Call_rel32_64 {
        return None;
    }
    // The speculation trap right after the call.
    let trap = decode_at(first.next_ip())?;
    if !trap
        .iter()
        .any(|x| matches!(x.mnemonic(), Mnemonic::Pause | Mnemonic::Lfence))
    {
        return None;
    }
    let body = decode_at(first.near_branch_target())?;
    let (mov, ret) = (body.first()?, body.get(1)?);
    let overwrites_return = mov.code() == Code::Mov_rm64_r64
        && mov.memory_base() == Register::RSP
        && mov.memory_index() == Register::None
        && mov.memory_displacement64() == 0;
    let returns = ret.flow_control() == FlowControl::Return
        || ret.flow_control() == FlowControl::UnconditionalBranch;
    (overwrites_return && returns).then(|| mov.op1_register())
}

/// [`thunk_register`] with the answers remembered.
pub struct Thunks<'a> {
    image: &'a Image,
    memo: RefCell<HashMap<u64, Option<Register>>>,
}

impl<'a> Thunks<'a> {
    pub fn new(image: &'a Image) -> Thunks<'a> {
        Thunks {
            image,
            memo: RefCell::new(HashMap::new()),
        }
    }

    /// Whether `addr` is a retpoline thunk.
    pub fn is_thunk(&self, addr: u64) -> bool {
        // Nothing outside the file's bytes is one (and is not remembered).
        self.image.bytes_from(addr).is_some() && self.thunk_at(addr).is_some()
    }

    fn thunk_at(&self, addr: u64) -> Option<Register> {
        *self
            .memo
            .borrow_mut()
            .entry(addr)
            .or_insert_with(|| thunk_register(self.image, addr))
    }

    /// The register a direct `call`/`jmp` `x` branches through when its
    /// target is a retpoline thunk.
    pub fn register_of(&self, x: &Instruction) -> Option<Register> {
        if !matches!(
            x.flow_control(),
            FlowControl::Call | FlowControl::UnconditionalBranch
        ) {
            return None;
        }
        self.thunk_at(x.near_branch_target())
    }
}
