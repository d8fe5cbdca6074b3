//! placeholder: see the helper
