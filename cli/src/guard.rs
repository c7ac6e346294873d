//! Runs third-party parsers that may panic on hostile input, and turns a panic into an error.
//!
//! esp-idf-part and espflash index slices without bounds checks on some malformed
//! inputs. A release tool must answer such a file with an error, not a crash.

use std::cell::Cell;
use std::panic::{self, UnwindSafe};
use std::sync::Once;

/// The parser panicked; `what` names the input it was given.
#[derive(Debug, thiserror::Error)]
#[error("{what} is malformed in a way its parser does not handle ({message})")]
pub struct Panicked {
    pub what: String,
    pub message: String,
}

thread_local! {
    /// Set while this thread runs a guarded parser, whose panics are reported as errors.
    static GUARDED: Cell<bool> = const { Cell::new(false) };
}

static INSTALL: Once = Once::new();

/// Wraps the process's panic hook once, so that it stays silent only for panics on a
/// thread inside [`catch_panic`]; panics anywhere else are printed as usual.
fn install_quiet_hook() {
    INSTALL.call_once(|| {
        let previous = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            if !GUARDED.with(Cell::get) {
                previous(info);
            }
        }));
    });
}

/// Calls `f`; if it panics, returns an error naming `what` instead, printing nothing.
pub fn catch_panic<T>(what: &str, f: impl FnOnce() -> T + UnwindSafe) -> Result<T, Panicked> {
    install_quiet_hook();
    let outer = GUARDED.with(|g| g.replace(true));
    let result = panic::catch_unwind(f);
    GUARDED.with(|g| g.set(outer));
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
