//! The clock's peripherals on the host, and the fault switch that breaks one of them in a
//! named version, so that a release which would brick the fleet's health is rolled back.

use std::str::FromStr;
use std::time::{SystemTime, UNIX_EPOCH};

use ota_core::Version;

use crate::health::{Check, Leds, Rtc};

/// `--fail-health 2.0.0:mqtt`: this version breaks this part of the clock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    pub version: Version,
    pub check: Check,
}

impl FromStr for Fault {
    type Err = String;

    fn from_str(text: &str) -> Result<Fault, String> {
        let names = Check::ALL.map(Check::name).join(", ");
        let (version, check) = text
            .split_once(':')
            .ok_or_else(|| format!("expected VERSION:CHECK, with CHECK one of {names}"))?;
        Ok(Fault {
            version: version.parse().map_err(|e| format!("{version}: {e}"))?,
            check: Check::parse(check)
                .ok_or_else(|| format!("unknown check `{check}`: expected one of {names}"))?,
        })
    }
}

impl Fault {
    /// Whether `check` is broken in the `running` version.
    pub fn breaks(fault: Option<&Fault>, running: &Version, check: Check) -> bool {
        fault.is_some_and(|f| f.check == check && f.version == *running)
    }
}

/// The host's clock as the RTC; a broken one stands still at the time it was made.
#[derive(Debug)]
pub struct SimRtc {
    stopped_at: Option<u64>,
}

impl SimRtc {
    pub fn new(broken: bool) -> SimRtc {
        SimRtc {
            stopped_at: broken.then(now),
        }
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Rtc for SimRtc {
    fn read(&mut self) -> Result<u64, String> {
        Ok(self.stopped_at.unwrap_or_else(now))
    }
}

/// An LED driver that takes every frame, or, broken, none.
#[derive(Debug)]
pub struct SimLeds {
    pub broken: bool,
}

impl Leds for SimLeds {
    fn self_test(&mut self) -> Result<(), String> {
        if self.broken {
            Err("the LED driver did not take the frame".to_owned())
        } else {
            Ok(())
        }
    }
}
