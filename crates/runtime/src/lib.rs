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
//! (relocated with `R_X86_64_RELATIVE`). The sizes, offsets and flags are
//! those of `struct ff_table` / `struct ff_image` in faasfuse_rt.h: build.rs
//! has the C compiler print them (`sizeof`, `offsetof`), so the header is
//! their one source.

/// The runtime image (x86-64 ELF shared object).
pub const RUNTIME_SO: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/libfaasfuse_rt.so"));

/// The undefined symbol through which the runtime reads the fused table.
pub const TABLE_SYMBOL: &str = "faasfuse_fused_table";

/// Names of the runtime's functions that write PKRU (faasfuse_mpk.h): the
/// only code of a fused image that may.
pub const PKRU_GATE_PREFIX: &str = "ff_pkru_gate";

// The table's sizes, offsets and constants, as the C compiler lays out
// `struct ff_table` and `struct ff_image` (faasfuse_rt.h; build.rs).
include!(concat!(env!("OUT_DIR"), "/layout.rs"));

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
    fn entry_fields_are_distinct_words_inside_the_entry() {
        // The merger writes each field as one little-endian 64-bit word.
        let mut offsets = [
            ENTRY_NAME,
            ENTRY_INIT,
            ENTRY_CREATE,
            ENTRY_DESTROY,
            ENTRY_CALL,
            ENTRY_RELRO_START,
            ENTRY_RELRO_END,
            ENTRY_SPAN_START,
            ENTRY_SPAN_END,
            ENTRY_FLAGS,
        ];
        offsets.sort_unstable();
        for w in offsets.windows(2) {
            assert!(w[1] >= w[0] + 8, "fields overlap: {offsets:?}");
        }
        assert!(offsets
            .iter()
            .all(|o| o % 8 == 0 && o + 8 <= IMAGE_ENTRY_SIZE));
        assert_eq!(TABLE_HEADER_SIZE % 8, 0);
        assert_eq!(&TABLE_MAGIC.to_le_bytes(), b"FFTABLE1");
        const { assert!(FLAG_REENTRANT != 0 && FLAG_ISOLATE_STACK != 0) };
        assert_eq!(FLAG_REENTRANT & FLAG_ISOLATE_STACK, 0);
        assert_eq!((FLAG_REENTRANT | FLAG_ISOLATE_STACK) & FLAG_ISOLATE_MPK, 0);
    }
}
