//! The process runtime (to be written).
