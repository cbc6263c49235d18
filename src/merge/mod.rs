//! Fused images: see DESIGN.
pub mod eh_frame;
pub mod runtime;
