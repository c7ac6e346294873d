//! Everything the clockrel CLI and the word-clock firmware must agree on, byte for byte.
//!
//! The CLI writes with this crate what the firmware reads with it, so no format exists
//! twice. It does no I/O: callers hand it bytes (all at once or as they arrive) and get
//! typed results back, which keeps it deterministic and testable on the host.
#![no_std]

extern crate alloc;

pub mod chip;
pub mod delta;
pub mod engine;
pub mod hash;
pub mod hex;
pub mod image;
pub mod manifest;
pub mod mqtt;
pub mod otadata;
pub mod policy;
pub mod schedule;
pub mod secret;
pub mod version;

pub use chip::Chip;
pub use hash::Sha256;
pub use manifest::Manifest;
pub use version::Version;
