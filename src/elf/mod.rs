//! ELF input images.
