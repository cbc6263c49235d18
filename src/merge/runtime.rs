//! placeholder
pub const RUNTIME_SO: &[u8] = &[];
pub const TABLE_SYMBOL: &str = "faasfuse_fused_table";
pub const TABLE_MAGIC: u64 = 0x3145_4c42_4154_4646;
pub const TABLE_HEADER_SIZE: u64 = 16;
pub const IMAGE_ENTRY_SIZE: u64 = 56;
pub const ENTRY_NAME: u64 = 0;
pub const ENTRY_INIT: u64 = 8;
pub const ENTRY_CREATE: u64 = 16;
pub const ENTRY_DESTROY: u64 = 24;
pub const ENTRY_CALL: u64 = 32;
pub const ENTRY_RELRO_START: u64 = 40;
pub const ENTRY_RELRO_END: u64 = 48;
