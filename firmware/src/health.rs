//! The clock's own health checks after an update (network, MQTT, RTC, LEDs) over small
//! driver traits that the chip and the simulator implement, so that what each check
//! accepts is decided, and tested, here.

use std::fmt;
use std::time::{Duration, Instant, UNIX_EPOCH};

use ota_core::engine::health::{Clock, HealthCheck, Poll};

/// The checks' clock on a device: time since boot's checks began, and a thread sleep.
#[derive(Debug)]
pub struct MonotonicClock(Instant);

impl MonotonicClock {
    pub fn start() -> MonotonicClock {
        MonotonicClock(Instant::now())
    }
}

impl Clock for MonotonicClock {
    fn now(&self) -> Duration {
        self.0.elapsed()
    }

    fn sleep(&self, duration: Duration) {
        std::thread::sleep(duration);
    }
}

/// The checks a new image must pass, in the order they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    Network,
    Mqtt,
    Rtc,
    Leds,
}

impl Check {
    pub const ALL: [Check; 4] = [Check::Network, Check::Mqtt, Check::Rtc, Check::Leds];

    /// The name the check's reasons start with.
    pub fn name(self) -> &'static str {
        match self {
            Check::Network => "network",
            Check::Mqtt => "mqtt",
            Check::Rtc => "rtc",
            Check::Leds => "leds",
        }
    }

    pub fn parse(name: &str) -> Option<Check> {
        Check::ALL.into_iter().find(|c| c.name() == name)
    }
}

impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Passes once a condition holds, such as "the station has an address" or "the broker
/// accepted our session"; until then it waits, up to its deadline.
pub struct Until<F> {
    check: Check,
    deadline: Duration,
    waiting_for: &'static str,
    holds: F,
}

impl<F> fmt::Debug for Until<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Until")
            .field("check", &self.check)
            .field("deadline", &self.deadline)
            .finish_non_exhaustive()
    }
}

impl<F: FnMut() -> bool> Until<F> {
    pub fn new(check: Check, deadline: Duration, waiting_for: &'static str, holds: F) -> Self {
        Until {
            check,
            deadline,
            waiting_for,
            holds,
        }
    }
}

impl<F: FnMut() -> bool> HealthCheck for Until<F> {
    fn name(&self) -> &str {
        self.check.name()
    }

    fn deadline(&self) -> Duration {
        self.deadline
    }

    fn poll(&mut self) -> Poll {
        if (self.holds)() {
            Poll::Ready(Ok(()))
        } else {
            Poll::Pending
        }
    }

    fn waiting_for(&self) -> Option<String> {
        Some(self.waiting_for.to_owned())
    }
}

/// The clock's time source.
pub trait Rtc {
    /// Whole seconds since the Unix epoch, UTC.
    fn read(&mut self) -> Result<u64, String>;
}

/// No clock set in earnest reads earlier than this (2025-01-01T00:00:00Z): an RTC that
/// lost its battery, or system time that SNTP never set, reads 1970 or 2000.
pub const EARLIEST: u64 = 1_735_689_600;

/// Passes when the RTC reads a plausible time and then moves forward about as fast as
/// the chip's own timer: a clock that was never set, stands still or jumps fails at the
/// deadline and says which. A jump (SNTP setting the clock) restarts the watch.
#[derive(Debug)]
pub struct RtcCheck<R> {
    rtc: R,
    deadline: Duration,
    /// The reading to see the clock advance from, and when it was taken.
    since: Option<(u64, Instant)>,
    last: Option<u64>,
    jumped: Option<(u64, u64)>,
}

impl<R: Rtc> RtcCheck<R> {
    pub fn new(rtc: R, deadline: Duration) -> Self {
        RtcCheck {
            rtc,
            deadline,
            since: None,
            last: None,
            jumped: None,
        }
    }
}

impl<R: Rtc> HealthCheck for RtcCheck<R> {
    fn name(&self) -> &str {
        Check::Rtc.name()
    }

    fn deadline(&self) -> Duration {
        self.deadline
    }

    fn poll(&mut self) -> Poll {
        let now = match self.rtc.read() {
            Ok(now) => now,
            Err(e) => return Poll::Ready(Err(format!("cannot read the RTC: {e}"))),
        };
        self.last = Some(now);
        if now < EARLIEST {
            // Not set yet: SNTP may still answer within the deadline.
            return Poll::Pending;
        }
        let Some((then, at)) = self.since else {
            self.since = Some((now, Instant::now()));
            return Poll::Pending;
        };
        // Whole seconds on both sides: allow the rounding of each.
        let allowed = at.elapsed().as_secs() + 2;
        match now.checked_sub(then) {
            Some(0) => Poll::Pending,
            Some(advance) if advance <= allowed => Poll::Ready(Ok(())),
            _ => {
                self.jumped = Some((then, now));
                self.since = Some((now, Instant::now()));
                Poll::Pending
            }
        }
    }

    fn waiting_for(&self) -> Option<String> {
        let last = self.last?;
        Some(match self.jumped {
            _ if last < EARLIEST => format!("the RTC reads {}: it was never set", utc(last)),
            Some((from, to)) => format!(
                "the RTC jumped from {} to {} and has not kept time since",
                utc(from),
                utc(to)
            ),
            None => format!("the RTC stands still at {}", utc(last)),
        })
    }
}

/// The driver of the clock face's LEDs.
pub trait Leds {
    /// Sends one frame through the driver; an error when the driver does not take it.
    fn self_test(&mut self) -> Result<(), String>;
}

/// Passes when the LED driver takes a frame.
#[derive(Debug)]
pub struct LedCheck<L> {
    leds: L,
    deadline: Duration,
}

impl<L: Leds> LedCheck<L> {
    pub fn new(leds: L, deadline: Duration) -> Self {
        LedCheck { leds, deadline }
    }
}

impl<L: Leds> HealthCheck for LedCheck<L> {
    fn name(&self) -> &str {
        Check::Leds.name()
    }

    fn deadline(&self) -> Duration {
        self.deadline
    }

    fn poll(&mut self) -> Poll {
        Poll::Ready(self.leds.self_test())
    }
}

/// Seconds since the epoch as an RFC 3339 UTC time, for reasons a person reads; plain
/// seconds past year 9999, where the format ends (a broken RTC can read anything).
fn utc(seconds: u64) -> String {
    const YEAR_10000: u64 = 253_402_300_800;
    match UNIX_EPOCH.checked_add(Duration::from_secs(seconds)) {
        Some(time) if seconds < YEAR_10000 => humantime::format_rfc3339_seconds(time).to_string(),
        _ => format!("{seconds} s after 1970"),
    }
}

#[cfg(test)]
mod tests {
    use super::utc;

    #[test]
    fn utc_times_read_as_calendar_dates() {
        for (seconds, text) in [
            (0, "1970-01-01T00:00:00Z"),
            (946_684_800, "2000-01-01T00:00:00Z"),
            (951_782_400, "2000-02-29T00:00:00Z"),
            (super::EARLIEST, "2025-01-01T00:00:00Z"),
            (1_795_959_045, "2026-11-29T13:30:45Z"),
            (4_102_444_799, "2099-12-31T23:59:59Z"),
            (u64::MAX, "18446744073709551615 s after 1970"),
        ] {
            assert_eq!(utc(seconds), text, "{seconds}");
        }
    }
}
