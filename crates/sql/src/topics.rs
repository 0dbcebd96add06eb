//! The engine reaches topics only through [`Topics`], defined in `freshet-common` so the functions
//! runtime shares it.

pub use freshet_common::topics::*;
