//! After a reboot into a new image: prove it healthy within deadlines, then keep it, or
//! mark it invalid so the bootloader falls back, and remember why for the report.

use alloc::format;
use alloc::string::String;
use core::cmp::Ordering;
use core::time::Duration;

use serde::{Deserialize, Serialize};

use super::ports::{SlotError, Store};
use crate::policy::Rejected;

/// Where the outcome waits to be reported, across the reboot.
pub const OUTCOME_KEY: &str = "ota_outcome";
/// Where the last rolled-back release is kept, so it is not installed again unasked.
pub const REJECTED_KEY: &str = "ota_rejected";
/// How often a pending check is asked again.
const POLL_EVERY: Duration = Duration::from_millis(100);

/// The running slot, as the app sees it after boot.
pub trait BootSlot {
    /// Whether the running image is on probation (ESP-IDF's PENDING_VERIFY).
    fn pending_verify(&self) -> bool;
    /// Keeps the running image (cancels the rollback).
    fn mark_valid(&mut self) -> Result<(), SlotError>;
    /// Gives the running image up: the next boot starts the previous one. On the chip
    /// this reboots and does not return.
    fn mark_invalid_and_reboot(&mut self) -> Result<(), SlotError>;
}

/// Monotonic time, and a way to wait.
pub trait Clock {
    fn now(&self) -> Duration;
    fn sleep(&self, duration: Duration);
}

/// The answer of one look at a check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Poll {
    Ready(Result<(), String>),
    /// Not decided yet (e.g. still connecting): ask again.
    Pending,
}

/// One thing a healthy image must do: join the network, reach the broker, read the RTC,
/// drive the LEDs.
pub trait HealthCheck {
    fn name(&self) -> &str;
    /// How long the check may stay pending before the image is judged unhealthy.
    fn deadline(&self) -> Duration;
    fn poll(&mut self) -> Poll;
    /// What a pending check still waits for, to say why it missed its deadline.
    fn waiting_for(&self) -> Option<String> {
        None
    }
}

/// What happened to a new image, kept until it has been reported.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "kebab-case")]
pub enum Outcome {
    Confirmed { version: String },
    RolledBack { version: String, reason: String },
}

/// Runs the checks when the running image is on probation. All pass: it is kept.
/// One fails or misses its deadline: the reason is stored, then the image is marked
/// invalid and the device reboots into the previous one. `Ok(None)` when not on probation.
pub fn after_boot(
    version: &crate::Version,
    boot: &mut dyn BootSlot,
    checks: &mut [&mut dyn HealthCheck],
    clock: &dyn Clock,
    store: &mut dyn Store,
) -> Result<Option<Outcome>, SlotError> {
    if !boot.pending_verify() {
        return Ok(None);
    }
    for check in checks.iter_mut() {
        if let Err(why) = run(&mut **check, clock) {
            let reason = format!("{}: {why}", check.name());
            let rejected = Rejected {
                version: version.clone(),
                reason: reason.clone(),
            };
            if let Ok(json) = serde_json::to_vec(&rejected) {
                store.set(REJECTED_KEY, &json);
            }
            let outcome = Outcome::RolledBack {
                version: format!("{version}"),
                reason,
            };
            // Stored first: after the reboot, the previous image reports it.
            remember(store, &outcome);
            boot.mark_invalid_and_reboot()?;
            return Ok(Some(outcome));
        }
    }
    boot.mark_valid()?;
    // A release retried after a rollback that now proves healthy is no longer held back.
    if rejected(store).is_some_and(|r| r.version.precedence(version) == Ordering::Equal) {
        store.set(REJECTED_KEY, b"");
    }
    let outcome = Outcome::Confirmed {
        version: format!("{version}"),
    };
    remember(store, &outcome);
    Ok(Some(outcome))
}

fn run(check: &mut dyn HealthCheck, clock: &dyn Clock) -> Result<(), String> {
    let started = clock.now();
    loop {
        match check.poll() {
            Poll::Ready(result) => return result,
            Poll::Pending if clock.now().saturating_sub(started) >= check.deadline() => {
                let within = format!("not healthy within {} s", check.deadline().as_secs());
                return Err(match check.waiting_for() {
                    Some(what) => format!("{within}: {what}"),
                    None => within,
                });
            }
            Poll::Pending => clock.sleep(POLL_EVERY),
        }
    }
}

fn remember(store: &mut dyn Store, outcome: &Outcome) {
    if let Ok(json) = serde_json::to_vec(outcome) {
        store.set(OUTCOME_KEY, &json);
    }
}

/// The outcome of the last update, kept until [`clear_outcome`]: report it once the
/// device is connected, then clear it, so a failed publish does not lose it.
pub fn pending_outcome(store: &dyn Store) -> Option<Outcome> {
    serde_json::from_slice(&store.get(OUTCOME_KEY)?).ok()
}

/// The release this device last rolled back, for [`crate::policy::after_rollback`].
pub fn rejected(store: &dyn Store) -> Option<Rejected> {
    serde_json::from_slice(&store.get(REJECTED_KEY)?).ok()
}

/// The outcome was reported: forget it.
pub fn clear_outcome(store: &mut dyn Store) {
    store.set(OUTCOME_KEY, b"");
}
