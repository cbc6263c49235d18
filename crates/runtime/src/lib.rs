//! The fusion runtime: a small C shared object (faasfuse_rt.c, built
//! by build.rs) that `merge` transplants into every fused image, and the
//! layout of the fused table it reads.
//!
//! The runtime exports the four worker_v1 entry points of the fused image and
//! references the table through one undefined symbol, [`TABLE_SYMBOL`]; the
//! merger defines that symbol. The table is a [`TABLE_HEADER_SIZE`]-byte
//! header (`magic`, `count`) followed by `count` entries of
//! [`IMAGE_ENTRY_SIZE`] bytes, entry 0 being the root. All fields are
//! little-endian 64-bit words; pointers and addresses are run-time addresses
//! (relocated with `R_X86_64_RELATIVE`). These constants mirror
//! `struct ff_table` / `struct ff_image` in faasfuse_rt.h, which
//! checks them with static assertions.

/// The runtime image (x86-64 ELF shared object).
pub const RUNTIME_SO: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/libfaasfuse_rt.so"));

/// The undefined symbol through which the runtime reads the fused table.
pub const TABLE_SYMBOL: &str = "faasfuse_fused_table";

/// `ff_table.magic`: "FFTABLE1" read as a little-endian `u64`.
pub const TABLE_MAGIC: u64 = 0x3145_4c42_4154_4646;

/// Size of the table header (`magic: u64`, `count: u64`); entries follow.
pub const TABLE_HEADER_SIZE: u64 = 16;

/// Size of one `ff_image` entry.
pub const IMAGE_ENTRY_SIZE: u64 = 64;

/// Offset in an entry of `name`: the function's name, a NUL-terminated string.
pub const ENTRY_NAME: u64 = 0;
/// Offset in an entry of `init`: the image's own `faas_init`.
pub const ENTRY_INIT: u64 = 8;
/// Offset in an entry of `create`: the image's own `faas_create_func_worker`.
pub const ENTRY_CREATE: u64 = 16;
/// Offset in an entry of `destroy`: the image's own `faas_destroy_func_worker`.
pub const ENTRY_DESTROY: u64 = 24;
/// Offset in an entry of `call`: the image's own `faas_func_call`.
pub const ENTRY_CALL: u64 = 32;
/// Offset in an entry of `relro_start`: start of the image's RELRO range,
/// made read-only by the runtime's constructor (callees only; 0 = none).
pub const ENTRY_RELRO_START: u64 = 40;
/// Offset in an entry of `relro_end`: end (exclusive) of that range.
pub const ENTRY_RELRO_END: u64 = 48;
/// Offset in an entry of `flags`: [`FLAG_REENTRANT`], [`FLAG_ISOLATE_STACK`].
pub const ENTRY_FLAGS: u64 = 56;
/// `ff_image.flags`: the function may be re-entered in one process (an
/// extra worker serves the inner call instead of the host).
pub const FLAG_REENTRANT: u64 = 1;
/// `ff_image.flags`: every call of the function runs on a stack of its
/// worker's own, and a fault in it fails that call (`--isolate stack`).
pub const FLAG_ISOLATE_STACK: u64 = 2;

#[cfg(test)]
mod tests {
    use super::*;
    use object::{Architecture, Object, ObjectSymbol};

    #[test]
    fn runtime_is_x86_64_with_entry_points_and_table_import() {
        let file = object::read::elf::ElfFile64::<object::Endianness>::parse(RUNTIME_SO)
            .expect("runtime parses as ELF64");
        assert_eq!(file.architecture(), Architecture::X86_64);
        assert_eq!(file.kind(), object::ObjectKind::Dynamic);

        let syms: Vec<_> = file.dynamic_symbols().collect();
        for export in [
            "faas_init",
            "faas_create_func_worker",
            "faas_destroy_func_worker",
            "faas_func_call",
        ] {
            assert!(
                syms.iter()
                    .any(|s| s.name() == Ok(export) && s.is_definition() && s.is_global()),
                "runtime does not export {export}"
            );
        }
        let table = syms
            .iter()
            .find(|s| s.name() == Ok(TABLE_SYMBOL))
            .expect("runtime imports the fused table");
        assert!(table.is_undefined());
        // Nothing but the four entry points is exported.
        let exported = syms.iter().filter(|s| s.is_definition()).count();
        assert_eq!(exported, 4);
    }

    #[test]
    fn entry_layout_is_consistent() {
        let offsets = [
            ENTRY_NAME,
            ENTRY_INIT,
            ENTRY_CREATE,
            ENTRY_DESTROY,
            ENTRY_CALL,
            ENTRY_RELRO_START,
            ENTRY_RELRO_END,
            ENTRY_FLAGS,
        ];
        for (i, off) in offsets.iter().enumerate() {
            assert_eq!(*off, 8 * i as u64);
        }
        assert_eq!(IMAGE_ENTRY_SIZE, 8 * offsets.len() as u64);
        assert_eq!(&TABLE_MAGIC.to_le_bytes(), b"FFTABLE1");
    }
}
