//! The manifest's list of delta patches: which running images a release can be reached
//! from in a few kilobytes, and the file that does it.

use alloc::string::String;

use serde::{Deserialize, Serialize};

use crate::{Sha256, Version};

/// The most patches a manifest may list: a release lists one per recent base.
pub const MAX_PATCHES: usize = 8;

/// One `esp_delta_ota` patch from an earlier release's image to this one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Patch {
    /// The release the patch starts from (for people: devices match by `base_digest`).
    pub from: Version,
    /// The base image's appended digest (the SHA-256 of its file without the last 32
    /// bytes): what `esp_partition_get_sha256()` gives for the running slot, and what the
    /// patch's own header names.
    pub base_digest: Sha256,
    /// The immutable patch file name, beside the image on each source.
    pub file: String,
    /// The patch file's size in bytes.
    pub size: u64,
    /// SHA-256 of the patch file.
    pub sha256: Sha256,
}
