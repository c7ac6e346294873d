//! The sources a release is published to, and the shape of what each reports.
//!
//! Every target puts the same files in the same order: the versioned image, the alias,
//! and `version.json` last, so a device never reads a manifest naming a file that is
//! not there yet. Every step first looks at what is already published: the same bytes
//! are skipped, other bytes under an immutable name stop the target.

pub mod github;
pub mod r2;

use std::sync::Arc;

use serde::Serialize;

use crate::ota_files::StagedRelease;
use crate::plan::{Record, Step};

/// A file to put on a source.
#[derive(Debug, Clone)]
pub struct Upload {
    pub name: String,
    pub bytes: Arc<[u8]>,
    pub content_type: &'static str,
    pub cache_control: &'static str,
    /// A name that must never hold other bytes once published.
    pub immutable: bool,
}

/// Versioned names never change, so caches may keep them for good.
const CACHE_IMMUTABLE: &str = "public, max-age=31536000, immutable";
/// The alias and the manifest change with every release: caches must recheck soon.
const CACHE_SHORT: &str = "public, max-age=60";

/// The release's files in publishing order: image, alias, and `manifest` (this source's
/// copy of `version.json`) last.
pub fn uploads(release: &StagedRelease, manifest: Vec<u8>) -> Vec<Upload> {
    let image: Arc<[u8]> = release.image.clone().into();
    vec![
        Upload {
            name: release.image_name.clone(),
            bytes: image.clone(),
            content_type: "application/octet-stream",
            cache_control: CACHE_IMMUTABLE,
            immutable: true,
        },
        Upload {
            name: release.alias_name.clone(),
            bytes: image,
            content_type: "application/octet-stream",
            cache_control: CACHE_SHORT,
            immutable: false,
        },
        Upload {
            name: crate::ota_files::MANIFEST.to_owned(),
            bytes: manifest.into(),
            content_type: "application/json",
            cache_control: CACHE_SHORT,
            immutable: false,
        },
    ]
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
