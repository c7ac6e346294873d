//! Test fixtures for clockrel, shared by the tests, the demo and the benchmarks.
//!
//! No Xtensa toolchain can run here, so the firmware ELF that a release would build is
//! stood in for by a synthetic one: laid out like an ESP-IDF app for the ESP32-S3
//! (app descriptor at the start of DROM, code in IROM, data in IRAM and DRAM), so that
//! espflash turns it into an app image exactly as it turns a real build into one.

pub mod elf;

pub use elf::FirmwareElf;
