//! The device's own update checks: the interval setting, and the jitter that spreads a
//! fleet's checks.
#![allow(clippy::unwrap_used)] // a test that cannot unwrap has failed, and says where

mod support;

use std::time::Duration;

use ota_core::engine::Store;
use ota_core::schedule::{
    DEFAULT_INTERVAL, INTERVAL_KEY, MAX_FIRST_DELAY, Schedule, ScheduleError,
};
use proptest::prelude::*;
use support::FakeStore;

fn every(seconds: u64) -> Schedule {
    Schedule::parse(&seconds.to_string()).unwrap().unwrap()
}

#[test]
fn the_setting_is_seconds_or_zero_for_none() {
    assert_eq!(every(3600).interval(), Duration::from_secs(3600));
    assert_eq!(
        Schedule::parse(" 60\n")
            .unwrap()
            .unwrap()
            .interval()
            .as_secs(),
        60
    );
    assert_eq!(Schedule::parse("0"), Ok(None));
    assert_eq!(Schedule::parse("59"), Err(ScheduleError::OutOfRange(59)));
    assert_eq!(
        Schedule::parse("2592001"),
        Err(ScheduleError::OutOfRange(2_592_001))
    );
    for bad in ["", "6h", "-60", "1e4", "99999999999999999999999"] {
        assert_eq!(
            Schedule::parse(bad),
            Err(ScheduleError::NotANumber),
            "{bad:?}"
        );
    }
}

#[test]
fn the_store_gives_the_schedule_and_a_bad_setting_falls_back_saying_why() {
    let mut store = FakeStore::default();
    assert_eq!(Schedule::read(&store), (Some(Schedule::default()), None));
    assert_eq!(Schedule::default().interval(), DEFAULT_INTERVAL);
    store.set(INTERVAL_KEY, b"600");
    assert_eq!(Schedule::read(&store), (Some(every(600)), None));
    store.set(INTERVAL_KEY, b"0");
    assert_eq!(Schedule::read(&store), (None, None));
    store.set(INTERVAL_KEY, b"\xff\xfe");
    assert_eq!(
        Schedule::read(&store),
        (Some(Schedule::default()), Some(ScheduleError::NotANumber))
    );
    store.set(INTERVAL_KEY, b"5");
    let (schedule, error) = Schedule::read(&store);
    assert_eq!(schedule, Some(Schedule::default()));
    assert!(error.unwrap().to_string().contains("60 to 2592000 s"));
}

#[test]
fn draws_spread_the_checks_over_the_whole_window() {
    let schedule = every(600);
    assert_eq!(schedule.first_delay(0), Duration::ZERO);
    assert_eq!(schedule.first_delay(10_000), MAX_FIRST_DELAY);
    assert_eq!(schedule.next_delay(0), Duration::from_secs(540));
    assert_eq!(schedule.next_delay(120_000), Duration::from_secs(660));
    // A short interval keeps the first check within a tenth of it.
    assert_eq!(every(60).first_delay(6_000), Duration::from_secs(6));
    assert_eq!(every(60).first_delay(6_001), Duration::ZERO);
}

proptest! {
    #[test]
    fn every_draw_stays_in_its_window(seconds in 60u64..=2_592_000, random in any::<u32>()) {
        let schedule = every(seconds);
        let interval = Duration::from_secs(seconds);
        prop_assert!(schedule.first_delay(random) <= MAX_FIRST_DELAY.min(interval / 10));
        let next = schedule.next_delay(random);
        prop_assert!(next >= interval - interval / 10 && next <= interval + interval / 10);
    }
}
