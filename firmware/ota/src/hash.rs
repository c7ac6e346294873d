//! SHA-256 digests as a type, so a file's digest is never confused with a bare byte array.

use core::fmt;
use core::str::FromStr;

/// A SHA-256 digest. Displays as 64 lower-case hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Sha256(pub [u8; 32]);

impl Sha256 {
    /// The digest of `data`, computed in one go.
    pub fn of(data: &[u8]) -> Sha256 {
        use sha2::Digest as _;
        Sha256(sha2::Sha256::digest(data).into())
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Display for Sha256 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|byte| write!(f, "{byte:02x}"))
    }
}

impl fmt::Debug for Sha256 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Sha256({self})")
    }
}

/// The text is not 64 hex digits.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a SHA-256 digest must be 64 hex digits")]
pub struct BadDigest;

impl FromStr for Sha256 {
    type Err = BadDigest;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let text = s.as_bytes();
        if text.len() != 64 {
            return Err(BadDigest);
        }
        let mut out = [0u8; 32];
        for (byte, pair) in out.iter_mut().zip(text.chunks_exact(2)) {
            let hi = hex_value(pair[0]).ok_or(BadDigest)?;
            let lo = hex_value(pair[1]).ok_or(BadDigest)?;
            *byte = hi << 4 | lo;
        }
        Ok(Sha256(out))
    }
}

fn hex_value(digit: u8) -> Option<u8> {
    match digit {
        b'0'..=b'9' => Some(digit - b'0'),
        b'a'..=b'f' => Some(digit - b'a' + 10),
        b'A'..=b'F' => Some(digit - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;

    #[test]
    fn known_digest_displays_and_parses_back() {
        let empty = Sha256::of(b"");
        let text = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        assert_eq!(empty.to_string(), text);
        assert_eq!(text.parse(), Ok(empty));
        assert_eq!(text.to_uppercase().parse(), Ok(empty));
    }

    #[test]
    fn malformed_text_is_refused() {
        assert_eq!("abc".parse::<Sha256>(), Err(BadDigest));
        assert_eq!("g".repeat(64).parse::<Sha256>(), Err(BadDigest));
        assert_eq!("é".repeat(32).parse::<Sha256>(), Err(BadDigest));
    }
}
