//! The HTTP runtime (to be written).
