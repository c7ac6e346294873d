//! Test fixtures for clockrel, shared by the tests, the demo and the benchmarks.
//!
//! No Xtensa toolchain can run here, so the firmware ELF that a release would build is
//! stood in for by a synthetic one: laid out like an ESP-IDF app for the ESP32-S3
//! (app descriptor at the start of DROM, code in IROM, data in IRAM and DRAM), so that
//! espflash turns it into an app image exactly as it turns a real build into one.
//!
//! The services a release publishes to run locally as real protocol peers: an S3 server
//! for R2 ([`S3Server`]), git's own HTTP backend for GitHub's git host ([`GitServer`]),
//! and, as GitHub's REST API has no local peer, its documented release responses
//! ([`GithubApi`]). Each listens on a free port of 127.0.0.1 from a background runtime,
//! so plain synchronous tests can run the `clockrel` binary against them, and stops
//! when dropped.

pub mod detools;
pub mod elf;
mod fault;
pub mod files;
pub mod git;
pub mod github;
pub mod image;
pub mod mqtt;
pub mod s3;
mod serve;

pub use elf::FirmwareElf;
pub use files::FileServer;
pub use git::GitServer;
pub use github::GithubApi;
pub use mqtt::MqttBroker;
pub use s3::S3Server;
