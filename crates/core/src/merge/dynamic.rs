//! The fused image's initializer and finalizer arrays.

use super::input::Part;

/// An image's initializer (or finalizer) functions in the order the loader
/// would run them for it alone: `DT_INIT` then `DT_INIT_ARRAY`; for
/// finalizers the list is given in array order (`DT_FINI` first) because
/// the fused fini array runs from its end.
pub fn initializers(part: &Part, disp: u64, init: bool) -> Vec<u64> {
    let (single, array) = if init {
        (part.init, part.init_array)
    } else {
        (part.fini, part.fini_array)
    };
    let mut out = Vec::new();
    if let Some(f) = single {
        out.push(f + disp);
    }
    if let Some((addr, count)) = array {
        for i in 0..count {
            let slot = addr + 8 * i;
            if let Some(v) = part.slot_value(slot) {
                if v != 0 && v != u64::MAX {
                    out.push(v + disp);
                }
            }
        }
    }
    out
}
