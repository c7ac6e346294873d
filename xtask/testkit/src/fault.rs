//! Injected failures: the next few requests to a server answer an error status, so that
//! tests can drive a client through its retry and resume paths.

use std::sync::Mutex;

use hyper::StatusCode;

use crate::serve::lock;

/// Failures still to inject: how many, with which status, to which method (any if None).
type Pending = (usize, StatusCode, Option<String>);

#[derive(Debug, Default)]
pub(crate) struct Faults {
    pending: Mutex<Option<Pending>>,
}

impl Faults {
    /// Makes the next `count` requests answer `status`, replacing any faults still pending.
    pub(crate) fn fail_next(&self, count: usize, status: u16) {
        self.fail_next_method(None, count, status);
    }

    /// Like [`Faults::fail_next`], but only requests of `method` fail (and count).
    pub(crate) fn fail_next_method(&self, method: Option<&str>, count: usize, status: u16) {
        let status = StatusCode::from_u16(status)
            .unwrap_or_else(|_| panic!("fail_next needs an HTTP status code, not {status}"));
        *lock(&self.pending) =
            (count > 0).then(|| (count, status, method.map(str::to_ascii_uppercase)));
    }

    /// The status a request of `method` must answer, if it is one of the failing ones.
    pub(crate) fn take(&self, method: &str) -> Option<StatusCode> {
        let mut pending = lock(&self.pending);
        let (remaining, status, only) = pending.as_mut()?;
        if only.as_deref().is_some_and(|only| only != method) {
            return None;
        }
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
        assert_eq!(faults.take("GET"), None);
        faults.fail_next(2, 503);
        assert_eq!(faults.take("GET"), Some(StatusCode::SERVICE_UNAVAILABLE));
        assert_eq!(faults.take("PUT"), Some(StatusCode::SERVICE_UNAVAILABLE));
        assert_eq!(faults.take("GET"), None);
        faults.fail_next(0, 500);
        assert_eq!(faults.take("GET"), None);
    }

    #[test]
    fn a_method_filter_lets_other_requests_through_uncounted() {
        let faults = Faults::default();
        faults.fail_next_method(Some("put"), 1, 503);
        assert_eq!(faults.take("HEAD"), None);
        assert_eq!(faults.take("PUT"), Some(StatusCode::SERVICE_UNAVAILABLE));
        assert_eq!(faults.take("PUT"), None);
    }
}
