//! After the reboot into a new image: health checks with deadlines decide whether it is
//! kept or rolled back, and the outcome is reported exactly once.
#![allow(clippy::unwrap_used)] // a test that cannot unwrap has failed, and says where

mod support;

use std::cell::Cell;
use std::time::Duration;

use ota_core::engine::SlotError;
use ota_core::engine::Store;
use ota_core::engine::health::{self, BootSlot, Clock, HealthCheck, Outcome, Poll};
use ota_core::policy::Rejected;
use support::FakeStore;

#[derive(Default)]
struct FakeBoot {
    pending: bool,
    valid: bool,
    invalid: bool,
}

impl BootSlot for FakeBoot {
    fn pending_verify(&self) -> bool {
        self.pending
    }

    fn mark_valid(&mut self) -> Result<(), SlotError> {
        self.valid = true;
        Ok(())
    }

    fn mark_invalid_and_reboot(&mut self) -> Result<(), SlotError> {
        self.invalid = true;
        Ok(())
    }
}

/// Time that passes only when someone sleeps.
#[derive(Default)]
struct FakeClock(Cell<Duration>);

impl Clock for FakeClock {
    fn now(&self) -> Duration {
        self.0.get()
    }

    fn sleep(&self, duration: Duration) {
        self.0.set(self.0.get() + duration);
    }
}

/// Pending for `pending` polls, then `result`.
struct Check {
    name: &'static str,
    deadline: Duration,
    pending: u32,
    result: Result<(), String>,
    polls: u32,
    waiting: Option<String>,
}

impl Check {
    fn new(name: &'static str, pending: u32, result: Result<(), &str>) -> Check {
        Check {
            name,
            deadline: Duration::from_secs(10),
            pending,
            result: result.map_err(str::to_owned),
            polls: 0,
            waiting: None,
        }
    }
}

impl HealthCheck for Check {
    fn name(&self) -> &str {
        self.name
    }

    fn deadline(&self) -> Duration {
        self.deadline
    }

    fn poll(&mut self) -> Poll {
        self.polls += 1;
        if self.polls <= self.pending {
            Poll::Pending
        } else {
            Poll::Ready(self.result.clone())
        }
    }

    fn waiting_for(&self) -> Option<String> {
        self.waiting.clone()
    }
}

fn version() -> ota_core::Version {
    "2.9.0".parse().unwrap()
}

#[test]
fn all_checks_passing_keeps_the_image_and_the_outcome_until_reported() {
    let mut boot = FakeBoot {
        pending: true,
        ..FakeBoot::default()
    };
    let (mut network, mut mqtt, mut rtc) = (
        Check::new("network", 5, Ok(())),
        Check::new("mqtt", 3, Ok(())),
        Check::new("rtc", 0, Ok(())),
    );
    let mut store = FakeStore::default();
    let outcome = health::after_boot(
        &version(),
        &mut boot,
        &mut [&mut network, &mut mqtt, &mut rtc],
        &FakeClock::default(),
        &mut store,
    )
    .unwrap();
    assert_eq!(
        outcome,
        Some(Outcome::Confirmed {
            version: "2.9.0".into()
        })
    );
    assert!(boot.valid && !boot.invalid);
    assert_eq!(
        health::rejected(&store),
        None,
        "a healthy release is not held back"
    );

    // Retried after a rollback and healthy now: no longer held back; another still is.
    for (held, still_held) in [("2.9.0", false), ("2.8.0", true)] {
        let rejected = Rejected {
            version: held.parse().unwrap(),
            reason: "mqtt: not healthy within 30 s".into(),
        };
        let mut store = FakeStore::default();
        store.set(
            health::REJECTED_KEY,
            &serde_json::to_vec(&rejected).unwrap(),
        );
        let mut boot = FakeBoot {
            pending: true,
            ..FakeBoot::default()
        };
        health::after_boot(
            &version(),
            &mut boot,
            &mut [],
            &FakeClock::default(),
            &mut store,
        )
        .unwrap();
        assert_eq!(health::rejected(&store).is_some(), still_held, "{held}");
    }
    assert_eq!(health::pending_outcome(&store), outcome);
    assert_eq!(
        health::pending_outcome(&store),
        outcome,
        "kept until reported"
    );
    health::clear_outcome(&mut store);
    assert_eq!(
        health::pending_outcome(&store),
        None,
        "reported exactly once"
    );
}

#[test]
fn a_failing_check_rolls_back_with_its_reason() {
    let mut boot = FakeBoot {
        pending: true,
        ..FakeBoot::default()
    };
    let mut network = Check::new("network", 0, Ok(()));
    let mut leds = Check::new("leds", 0, Err("LED driver did not answer on I2C"));
    let mut never_run = Check::new("rtc", 0, Ok(()));
    let mut store = FakeStore::default();
    let outcome = health::after_boot(
        &version(),
        &mut boot,
        &mut [&mut network, &mut leds, &mut never_run],
        &FakeClock::default(),
        &mut store,
    )
    .unwrap();
    let expected = Outcome::RolledBack {
        version: "2.9.0".into(),
        reason: "leds: LED driver did not answer on I2C".into(),
    };
    assert_eq!(outcome, Some(expected.clone()));
    assert!(boot.invalid && !boot.valid);
    assert_eq!(never_run.polls, 0);
    // The previous image, booted again, finds the reason.
    assert_eq!(health::pending_outcome(&store), Some(expected));
    // And it keeps the release from being installed again unasked.
    assert_eq!(
        health::rejected(&store),
        Some(Rejected {
            version: version(),
            reason: "leds: LED driver did not answer on I2C".into(),
        })
    );
}

#[test]
fn a_check_pending_past_its_deadline_rolls_back() {
    let mut boot = FakeBoot {
        pending: true,
        ..FakeBoot::default()
    };
    let mut mqtt = Check::new("mqtt", u32::MAX, Ok(()));
    mqtt.deadline = Duration::from_secs(30);
    let clock = FakeClock::default();
    let mut store = FakeStore::default();
    let outcome =
        health::after_boot(&version(), &mut boot, &mut [&mut mqtt], &clock, &mut store).unwrap();
    assert_eq!(
        outcome,
        Some(Outcome::RolledBack {
            version: "2.9.0".into(),
            reason: "mqtt: not healthy within 30 s".into()
        })
    );
    assert!(clock.now() >= Duration::from_secs(30) && clock.now() < Duration::from_secs(31));

    // A check that knows what it waits for says so.
    let mut boot = FakeBoot {
        pending: true,
        ..FakeBoot::default()
    };
    let mut rtc = Check::new("rtc", u32::MAX, Ok(()));
    rtc.waiting = Some("the RTC reads 1970-01-01: never set".into());
    health::after_boot(&version(), &mut boot, &mut [&mut rtc], &clock, &mut store).unwrap();
    assert_eq!(
        health::pending_outcome(&store),
        Some(Outcome::RolledBack {
            version: "2.9.0".into(),
            reason: "rtc: not healthy within 10 s: the RTC reads 1970-01-01: never set".into()
        })
    );
}

#[test]
fn an_image_not_on_probation_is_left_alone() {
    let mut boot = FakeBoot::default();
    let mut failing = Check::new("network", 0, Err("down"));
    let mut store = FakeStore::default();
    let outcome = health::after_boot(
        &version(),
        &mut boot,
        &mut [&mut failing],
        &FakeClock::default(),
        &mut store,
    )
    .unwrap();
    assert_eq!(outcome, None);
    assert_eq!(failing.polls, 0);
    assert!(!boot.valid && !boot.invalid);
    assert_eq!(health::pending_outcome(&store), None);
}
