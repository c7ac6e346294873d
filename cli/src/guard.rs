//! Runs third-party parsers that may panic on hostile input, and turns a panic into an error.
//!
//! esp-idf-part and espflash index slices without bounds checks on some malformed
//! inputs. A release tool must answer such a file with an error, not a crash.

use std::panic::{self, UnwindSafe};
use std::sync::Mutex;

/// The parser panicked; `what` names the input it was given.
#[derive(Debug, thiserror::Error)]
#[error("{what} is malformed in a way its parser does not handle ({message})")]
pub struct Panicked {
    pub what: String,
    pub message: String,
}

/// Serialises the swap of the panic hook, which is process-wide.
static HOOK: Mutex<()> = Mutex::new(());

/// Calls `f`; if it panics, returns an error naming `what` instead, printing nothing.
pub fn catch_panic<T>(what: &str, f: impl FnOnce() -> T + UnwindSafe) -> Result<T, Panicked> {
    let _serialised = HOOK.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let previous = panic::take_hook();
    panic::set_hook(Box::new(|_| {}));
    let result = panic::catch_unwind(f);
    panic::set_hook(previous);
    result.map_err(|payload| Panicked {
        what: what.to_owned(),
        message: payload
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "panic".to_owned()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_becomes_an_error_naming_the_input() {
        let err = catch_panic("table.bin", || -> u8 {
            let empty: &[u8] = &[];
            empty[3]
        })
        .unwrap_err();
        assert_eq!(err.what, "table.bin");
        assert!(
            err.message.contains("index out of bounds"),
            "{}",
            err.message
        );
        assert_eq!(catch_panic("x", || 7).unwrap(), 7);
    }
}
