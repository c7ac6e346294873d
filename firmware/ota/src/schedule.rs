//! When a device checks for updates on its own: soon after it starts, then every
//! interval, each delay moved by random jitter, so that a fleet powered on together (after
//! an outage, say) does not ask the sources in the same second.

use core::time::Duration;

use crate::engine::Store;

/// The device's setting: seconds between checks, as decimal text (`21600`), or `0` for
/// none but those asked for. Absent: [`DEFAULT_INTERVAL`].
pub const INTERVAL_KEY: &str = "ota_check_every";
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(6 * 3600);
/// Shorter intervals are refused: a fleet checking every few seconds is a load test of
/// the sources, not a schedule.
pub const MIN_INTERVAL: Duration = Duration::from_secs(60);
pub const MAX_INTERVAL: Duration = Duration::from_secs(30 * 24 * 3600);
/// The first check comes within this long of the start (or a tenth of the interval,
/// when that is shorter).
pub const MAX_FIRST_DELAY: Duration = Duration::from_secs(10);

/// Why a stored interval was not taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    #[error("{INTERVAL_KEY} is not a whole number of seconds")]
    NotANumber,
    #[error(
        "{INTERVAL_KEY} is {0} s: checks are 0 (off) or {min} to {max} s apart",
        min = MIN_INTERVAL.as_secs(),
        max = MAX_INTERVAL.as_secs()
    )]
    OutOfRange(u64),
}

/// Checks every `interval`, jittered by a tenth of it either way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Schedule {
    interval: Duration,
}

impl Default for Schedule {
    fn default() -> Schedule {
        Schedule {
            interval: DEFAULT_INTERVAL,
        }
    }
}

impl Schedule {
    /// Reads the setting's text: `None` for `0` (no checks on its own).
    pub fn parse(text: &str) -> Result<Option<Schedule>, ScheduleError> {
        let seconds: u64 = text.trim().parse().map_err(|_| ScheduleError::NotANumber)?;
        let interval = Duration::from_secs(seconds);
        match seconds {
            0 => Ok(None),
            _ if (MIN_INTERVAL..=MAX_INTERVAL).contains(&interval) => {
                Ok(Some(Schedule { interval }))
            }
            _ => Err(ScheduleError::OutOfRange(seconds)),
        }
    }

    /// The device's schedule from `store`: the default when the setting is absent or
    /// unusable (the error says why, for the device to report).
    pub fn read(store: &dyn Store) -> (Option<Schedule>, Option<ScheduleError>) {
        let Some(bytes) = store.get(INTERVAL_KEY) else {
            return (Some(Schedule::default()), None);
        };
        let parsed = core::str::from_utf8(&bytes)
            .map_err(|_| ScheduleError::NotANumber)
            .and_then(Schedule::parse);
        match parsed {
            Ok(schedule) => (schedule, None),
            Err(e) => (Some(Schedule::default()), Some(e)),
        }
    }

    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// How long after the start the first check comes, for a `random` draw: anywhere
    /// from now to [`MAX_FIRST_DELAY`] (or a tenth of the interval).
    pub fn first_delay(&self, random: u32) -> Duration {
        spread(
            Duration::ZERO,
            (self.interval / 10).min(MAX_FIRST_DELAY),
            random,
        )
    }

    /// How long after a check the next comes, for a `random` draw: the interval, give or
    /// take a tenth of it.
    pub fn next_delay(&self, random: u32) -> Duration {
        let tenth = self.interval / 10;
        spread(self.interval - tenth, self.interval + tenth, random)
    }
}

/// The point `random` picks in `from..=to`, to the millisecond.
fn spread(from: Duration, to: Duration, random: u32) -> Duration {
    let span = u64::try_from(to.saturating_sub(from).as_millis()).unwrap_or(u64::MAX);
    let offset = u64::from(random)
        .checked_rem(span.saturating_add(1))
        .unwrap_or(0);
    from + Duration::from_millis(offset)
}
