//! The update decision: given what a device runs and a manifest, update, stay, or refuse
//! with a reason the device can report.

use alloc::string::String;
use core::cmp::Ordering;

use serde::{Deserialize, Serialize};

use crate::image::ChipRevision;
use crate::manifest::{PublicKey, SignatureError};
use crate::{Chip, Manifest, Version};

/// What the device runs now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Running {
    pub version: Version,
    pub secure_version: u32,
    pub chip: Chip,
    /// The chip's revision, when known: an image that does not run on it is refused.
    pub chip_revision: Option<ChipRevision>,
}

/// The verdict on a manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// The manifest is trusted and newer: download and install it.
    Update,
    /// The manifest is trusted and names the running version.
    Current,
    Refuse(Refusal),
}

/// Why a manifest must not be installed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("{0}")]
    Signature(SignatureError),
    #[error("the manifest does not say which chip and secure_version it is for")]
    Incomplete,
    #[error("the release is built for {offered}, this device is {running}")]
    WrongChip { running: Chip, offered: Chip },
    #[error("the release {offered} is older than the running {running}")]
    Downgrade { running: Version, offered: Version },
    #[error(
        "the release's secure_version {offered} is below the running {running}: the bootloader would refuse it"
    )]
    SecureVersion { running: u32, offered: u32 },
    #[error(
        "{version} was rolled back on this device ({reason}); send `retry` to install it anyway"
    )]
    RolledBack { version: Version, reason: String },
}

/// The release this device last rolled back, and why; kept across reboots.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rejected {
    pub version: Version,
    pub reason: String,
}

/// Refuses an update to the release this device already rolled back, unless the user
/// asked to retry it: installing it again unasked is how a fleet loops on an update that
/// never sticks. A newer release is offered as usual.
pub fn after_rollback(
    decision: Decision,
    offered: &Version,
    rejected: Option<&Rejected>,
) -> Decision {
    match (decision, rejected) {
        (Decision::Update, Some(rejected))
            if offered.precedence(&rejected.version) == Ordering::Equal =>
        {
            Decision::Refuse(Refusal::RolledBack {
                version: rejected.version.clone(),
                reason: rejected.reason.clone(),
            })
        }
        (decision, _) => decision,
    }
}

/// Decides what to do with `manifest`. The signature is checked first: nothing in an
/// untrusted manifest is looked at.
pub fn decide(running: &Running, manifest: &Manifest, trusted: &[PublicKey]) -> Decision {
    if let Err(e) = manifest.verify(trusted) {
        return Decision::Refuse(Refusal::Signature(e));
    }
    let (Some(offered_chip), Some(offered_secure)) = (manifest.chip, manifest.secure_version)
    else {
        return Decision::Refuse(Refusal::Incomplete);
    };
    if offered_chip != running.chip {
        return Decision::Refuse(Refusal::WrongChip {
            running: running.chip,
            offered: offered_chip,
        });
    }
    match manifest.version.precedence(&running.version) {
        Ordering::Equal => Decision::Current,
        Ordering::Less => Decision::Refuse(Refusal::Downgrade {
            running: running.version.clone(),
            offered: manifest.version.clone(),
        }),
        Ordering::Greater if offered_secure < running.secure_version => {
            Decision::Refuse(Refusal::SecureVersion {
                running: running.secure_version,
                offered: offered_secure,
            })
        }
        Ordering::Greater => Decision::Update,
    }
}
