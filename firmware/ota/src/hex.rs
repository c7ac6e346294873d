//! Lower-case hex for fixed-size byte strings: digests, keys and signatures in JSON.

use core::fmt;

/// Writes `bytes` as lower-case hex.
pub fn write(f: &mut fmt::Formatter<'_>, bytes: &[u8]) -> fmt::Result {
    bytes.iter().try_for_each(|byte| write!(f, "{byte:02x}"))
}

/// Shows a byte string as hex through `Display`.
#[derive(Debug, Clone, Copy)]
pub struct Hex<'a>(pub &'a [u8]);

impl fmt::Display for Hex<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write(f, self.0)
    }
}

/// Reads exactly `N` bytes written as `2 * N` hex digits (either case).
pub fn decode<const N: usize>(text: &str) -> Option<[u8; N]> {
    let text = text.as_bytes();
    if text.len() != 2 * N {
        return None;
    }
    let mut out = [0u8; N];
    for (byte, pair) in out.iter_mut().zip(text.chunks_exact(2)) {
        *byte = digit(pair[0])? << 4 | digit(pair[1])?;
    }
    Some(out)
}

fn digit(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;

    #[test]
    fn round_trips_and_refuses_bad_text() {
        let bytes = [0x00, 0xAB, 0x7F];
        assert_eq!(Hex(&bytes).to_string(), "00ab7f");
        assert_eq!(decode::<3>("00ab7f"), Some(bytes));
        assert_eq!(decode::<3>("00AB7F"), Some(bytes));
        assert_eq!(decode::<3>("00ab7"), None);
        assert_eq!(decode::<3>("00ab7g"), None);
        assert_eq!(decode::<2>("éé"), None);
    }
}
