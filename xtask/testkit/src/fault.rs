//! Injected failures: the next few requests to a server answer an error status, so that
//! tests can drive a client through its retry and resume paths.

use std::sync::Mutex;

use hyper::StatusCode;

use crate::serve::lock;

#[derive(Debug, Default)]
pub(crate) struct Faults {
    pending: Mutex<Option<(usize, StatusCode)>>,
}

impl Faults {
    /// Makes the next `count` requests answer `status`, replacing any faults still pending.
    pub(crate) fn fail_next(&self, count: usize, status: u16) {
        let status = StatusCode::from_u16(status)
            .unwrap_or_else(|_| panic!("fail_next needs an HTTP status code, not {status}"));
        *lock(&self.pending) = (count > 0).then_some((count, status));
    }

    /// The status the current request must answer, if it is one of the failing ones.
    pub(crate) fn take(&self) -> Option<StatusCode> {
        let mut pending = lock(&self.pending);
        let (remaining, status) = pending.as_mut()?;
        let status = *status;
        *remaining -= 1;
        if *remaining == 0 {
            *pending = None;
        }
        Some(status)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fails_exactly_the_next_count_requests() {
        let faults = Faults::default();
        assert_eq!(faults.take(), None);
        faults.fail_next(2, 503);
        assert_eq!(faults.take(), Some(StatusCode::SERVICE_UNAVAILABLE));
        assert_eq!(faults.take(), Some(StatusCode::SERVICE_UNAVAILABLE));
        assert_eq!(faults.take(), None);
        faults.fail_next(0, 500);
        assert_eq!(faults.take(), None);
    }
}
