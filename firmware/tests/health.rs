//! The clock's health checks as the boot runs them after an update: what each accepts,
//! and the reason it gives when it does not.
#![allow(clippy::unwrap_used)] // a test that cannot unwrap has failed, and says where

mod common;

use std::cell::Cell;
use std::collections::VecDeque;
use std::time::Duration;

use common::MemoryStore;
use ota_core::engine::SlotError;
use ota_core::engine::health::{self, BootSlot, Clock, HealthCheck, Outcome};
use wordclock::health::{Check, EARLIEST, LedCheck, Leds, Rtc, RtcCheck, Until};

/// A slot on probation that records the verdict.
#[derive(Default)]
struct Probation {
    kept: bool,
    given_up: bool,
}

impl BootSlot for Probation {
    fn pending_verify(&self) -> bool {
        true
    }

    fn mark_valid(&mut self) -> Result<(), SlotError> {
        self.kept = true;
        Ok(())
    }

    fn mark_invalid_and_reboot(&mut self) -> Result<(), SlotError> {
        self.given_up = true;
        Ok(())
    }
}

/// Time that passes only when the checks wait.
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

/// Runs the checks on a slot on probation; the reason when it was rolled back.
fn verdict(checks: &mut [&mut dyn HealthCheck]) -> Result<(), String> {
    let mut slot = Probation::default();
    let outcome = health::after_boot(
        &"2.0.0".parse().unwrap(),
        &mut slot,
        checks,
        &FakeClock::default(),
        &mut MemoryStore::default(),
    )
    .unwrap();
    match outcome.unwrap() {
        Outcome::Confirmed { .. } => {
            assert!(slot.kept && !slot.given_up);
            Ok(())
        }
        Outcome::RolledBack { reason, .. } => {
            assert!(slot.given_up && !slot.kept);
            Err(reason)
        }
    }
}

/// An RTC that reads the given times, then keeps reading the last one.
struct ScriptedRtc(VecDeque<Result<u64, String>>);

impl ScriptedRtc {
    fn reads(times: &[u64]) -> ScriptedRtc {
        ScriptedRtc(times.iter().map(|&t| Ok(t)).collect())
    }
}

impl Rtc for ScriptedRtc {
    fn read(&mut self) -> Result<u64, String> {
        if self.0.len() > 1 {
            self.0.pop_front().unwrap()
        } else {
            self.0.front().cloned().unwrap()
        }
    }
}

struct FakeLeds(Result<(), String>);

impl Leds for FakeLeds {
    fn self_test(&mut self) -> Result<(), String> {
        self.0.clone()
    }
}

const DEADLINE: Duration = Duration::from_secs(10);

#[test]
fn a_condition_passes_once_it_holds_and_says_what_it_waited_for_when_it_never_does() {
    let mut polls = 0;
    let mut joins_late = Until::new(Check::Network, DEADLINE, "not joined", || {
        polls += 1;
        polls > 20
    });
    assert_eq!(verdict(&mut [&mut joins_late]), Ok(()));

    let mut never = Until::new(Check::Mqtt, DEADLINE, "no session with the broker", || {
        false
    });
    assert_eq!(
        verdict(&mut [&mut never]),
        Err("mqtt: not healthy within 10 s: no session with the broker".into())
    );
}

#[test]
fn an_rtc_passes_when_it_reads_a_plausible_time_that_moves_on() {
    let now = 1_795_959_045; // 2026-11-29T13:30:45Z
    let mut ticking = RtcCheck::new(ScriptedRtc::reads(&[now, now, now + 1]), DEADLINE);
    assert_eq!(verdict(&mut [&mut ticking]), Ok(()));

    // SNTP sets the clock a while after boot: unset at first is not a failure.
    let mut set_late = RtcCheck::new(ScriptedRtc::reads(&[0, 1, 2, now, now + 1]), DEADLINE);
    assert_eq!(verdict(&mut [&mut set_late]), Ok(()));

    // Set backwards by SNTP: it must then move on from the new time.
    let mut corrected = RtcCheck::new(ScriptedRtc::reads(&[now + 60, now, now + 1]), DEADLINE);
    assert_eq!(verdict(&mut [&mut corrected]), Ok(()));
}

#[test]
fn an_rtc_that_was_never_set_or_stands_still_fails_and_says_which() {
    let mut never_set = RtcCheck::new(ScriptedRtc::reads(&[946_684_800]), DEADLINE);
    assert_eq!(
        verdict(&mut [&mut never_set]),
        Err(
            "rtc: not healthy within 10 s: the RTC reads 2000-01-01T00:00:00Z: it was never set"
                .into()
        )
    );
    let mut just_before = RtcCheck::new(ScriptedRtc::reads(&[EARLIEST - 1]), DEADLINE);
    assert!(verdict(&mut [&mut just_before]).is_err());

    let mut stopped = RtcCheck::new(ScriptedRtc::reads(&[EARLIEST]), DEADLINE);
    assert_eq!(
        verdict(&mut [&mut stopped]),
        Err("rtc: not healthy within 10 s: the RTC stands still at 2025-01-01T00:00:00Z".into())
    );

    // Racing ahead (or reading garbage) is not keeping time.
    let racing: Vec<u64> = (0..1_000).map(|i| EARLIEST + i * 3_600).collect();
    let mut fast = RtcCheck::new(ScriptedRtc::reads(&racing), DEADLINE);
    let reason = verdict(&mut [&mut fast]).unwrap_err();
    assert!(
        reason.starts_with("rtc: not healthy within 10 s: the RTC jumped from 2025-01-0"),
        "{reason}"
    );

    let mut unreadable = RtcCheck::new(
        ScriptedRtc(VecDeque::from([Err("no ACK from 0x68".to_owned())])),
        DEADLINE,
    );
    assert_eq!(
        verdict(&mut [&mut unreadable]),
        Err("rtc: cannot read the RTC: no ACK from 0x68".into())
    );
}

#[test]
fn the_leds_pass_when_the_driver_takes_a_frame() {
    let mut working = LedCheck::new(FakeLeds(Ok(())), DEADLINE);
    assert_eq!(verdict(&mut [&mut working]), Ok(()));
    let mut broken = LedCheck::new(FakeLeds(Err("RMT channel busy".into())), DEADLINE);
    assert_eq!(
        verdict(&mut [&mut broken]),
        Err("leds: RMT channel busy".into())
    );
}

#[test]
fn checks_have_the_names_their_reasons_start_with() {
    for check in Check::ALL {
        assert_eq!(Check::parse(check.name()), Some(check));
    }
    assert_eq!(
        Check::ALL.map(Check::name),
        ["network", "mqtt", "rtc", "leds"]
    );
    assert_eq!(Check::parse("wifi"), None);
}
