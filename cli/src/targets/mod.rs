//! The sources a release is published to, and the shape of what each reports.
//!
//! Every target puts the same files in the same order: the versioned image, the patches
//! to it, the alias, and `version.json` last, so a device never reads a manifest naming a file that is
//! not there yet. Every step first looks at what is already published: the same bytes
//! are skipped, other bytes under an immutable name stop the target.

pub mod github;
pub mod r2;

use std::sync::Arc;

use serde::Serialize;

use crate::ota_files::StagedRelease;
use crate::plan::{Record, Step};

/// A file a release puts on a source, before its bytes are known: what a plan names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileSpec {
    pub name: String,
    pub content_type: &'static str,
    pub cache_control: &'static str,
    /// A name that must never hold other bytes once published.
    pub immutable: bool,
}

/// A file to put on a source, with its bytes.
#[derive(Debug, Clone)]
pub struct Upload {
    pub spec: FileSpec,
    pub bytes: Arc<[u8]>,
}

impl Upload {
    pub fn name(&self) -> &str {
        &self.spec.name
    }
}

/// Versioned names never change, so caches may keep them for good.
const CACHE_IMMUTABLE: &str = "public, max-age=31536000, immutable";
/// The alias and the manifest change with every release: caches must recheck soon.
const CACHE_SHORT: &str = "public, max-age=60";

/// A release's files in publishing order: the versioned image, the patches to it, the
/// alias, and `version.json` last, so a device never reads a manifest naming a missing
/// file.
pub fn files(image_name: &str, patch_names: &[String], alias_name: &str) -> Vec<FileSpec> {
    let file = |name: &str, content_type, cache_control, immutable| FileSpec {
        name: name.to_owned(),
        content_type,
        cache_control,
        immutable,
    };
    let immutable = |name: &str| file(name, "application/octet-stream", CACHE_IMMUTABLE, true);
    std::iter::once(immutable(image_name))
        .chain(patch_names.iter().map(|name| immutable(name)))
        .chain([
            file(alias_name, "application/octet-stream", CACHE_SHORT, false),
            file(
                crate::ota_files::MANIFEST,
                "application/json",
                CACHE_SHORT,
                false,
            ),
        ])
        .collect()
}

/// A planned file that has no staged bytes: a patch `stage` did not make (not smaller
/// than `[delta] max_percent` of the image, or from an unusable base). Anything else
/// missing is an error.
pub fn unstaged_patch(name: &str) -> Option<String> {
    name.ends_with(crate::ota_files::PATCH_SUFFIX).then(|| {
        format!("{name} is not staged: stage did not list this patch (its report says why)")
    })
}

/// The staged release's files with their bytes, `manifest` being this source's copy of
/// `version.json`.
pub fn uploads(release: &StagedRelease, manifest: Vec<u8>) -> Vec<Upload> {
    let image: Arc<[u8]> = release.image.clone().into();
    let manifest: Arc<[u8]> = manifest.into();
    let patch_names: Vec<String> = release
        .patches
        .iter()
        .map(|p| p.spec.file.clone())
        .collect();
    files(release.manifest.file(), &patch_names, &release.alias_name)
        .into_iter()
        .map(|spec| {
            let patch = release.patches.iter().find(|p| p.spec.file == spec.name);
            let bytes = match patch {
                Some(patch) => patch.bytes.clone().into(),
                None if spec.name == crate::ota_files::MANIFEST => manifest.clone(),
                None => image.clone(),
            };
            Upload { spec, bytes }
        })
        .collect()
}

/// How a target's walk through its plan ended: a step per task, and the error that
/// stopped it, if one did.
#[derive(Debug)]
pub struct Ran {
    pub steps: Vec<Step>,
    pub error: Option<TargetError>,
}

impl Ran {
    pub fn ok(record: Record) -> Ran {
        Ran {
            steps: record.steps(),
            error: None,
        }
    }

    pub fn failed(record: Record, error: TargetError) -> Ran {
        Ran {
            steps: record.steps(),
            error: Some(error),
        }
    }
}

/// Why a target stopped. The message is already scrubbed of secrets.
#[derive(Debug, Clone, Serialize, thiserror::Error)]
#[error("{step}: {message}")]
pub struct TargetError {
    /// The step that failed, e.g. `put wordclock-v2.9.0.bin`.
    pub step: String,
    pub message: String,
    pub hint: Option<String>,
}

impl TargetError {
    pub fn new(step: impl Into<String>, message: impl Into<String>) -> TargetError {
        TargetError {
            step: step.into(),
            message: message.into(),
            hint: None,
        }
    }

    pub fn hint(mut self, hint: impl Into<String>) -> TargetError {
        self.hint = Some(hint.into());
        self
    }
}
