//! Delta updates: a patch from the running image to the new one, in the format ESP-IDF's
//! `esp_delta_ota` applies (a detools sequential patch, heatshrink 8/7), so that a patch
//! release costs a device a few kilobytes instead of the whole image.

pub mod heatshrink;
pub mod sequential;

pub use sequential::{Applier, Base, PatchError};
