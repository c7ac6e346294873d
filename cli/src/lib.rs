//! clockrel: turns a firmware source tree into a published, verified over-the-air release.
//!
//! The binary (`main.rs`) only parses the command line; every command lives here so
//! that tests drive the same code the binary runs.

pub mod check;
pub mod config;
pub mod delta;
pub mod elf;
pub mod exit;
pub mod guard;
pub mod init;
pub mod keys;
pub mod ota_files;
pub mod partitions;
pub mod plan;
pub mod progress;
pub mod publish;
pub mod release;
pub mod rules;
pub mod secrets;
pub mod stage;
pub mod targets;
pub mod units;
pub mod verify;
pub mod version_file;
