//! A credential in a type that never prints itself and is wiped from memory when
//! dropped: the CLI's tokens and keys, the firmware's Wi-Fi and broker passwords.

use alloc::string::String;
use core::fmt;

/// `Debug` and `Display` show `***`; only [`Secret::expose`] gives the value.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(zeroize::Zeroizing<String>);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(zeroize::Zeroizing::new(value.into()))
    }

    /// The value, for the one call that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}
