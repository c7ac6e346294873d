//! Firmware versions: SemVer 2.0 with an optional leading `v`, ordered by precedence.

use core::cmp::Ordering;
use core::fmt;
use core::str::FromStr;

/// A firmware version. `v2.9.0` and `2.9.0` are the same version; prereleases order
/// below their release (`2.12.0-rc1` < `2.12.0`), and build metadata does not order.
/// Shows without the `v`, the canonical form the manifest and the signature use.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Version(semver::Version);

impl Version {
    pub fn new(major: u64, minor: u64, patch: u64) -> Version {
        Version(semver::Version::new(major, minor, patch))
    }

    /// Whether this is the same release as `other` (build metadata ignored).
    pub fn same_release(&self, other: &Version) -> bool {
        self.0.cmp_precedence(&other.0) == Ordering::Equal
    }

    /// Orders by SemVer precedence, ignoring build metadata.
    pub fn precedence(&self, other: &Version) -> Ordering {
        self.0.cmp_precedence(&other.0)
    }

    /// Whether this is a prerelease (`2.10.0-rc.1`).
    pub fn is_prerelease(&self) -> bool {
        !self.0.pre.is_empty()
    }

    /// The tag a release of this version gets: `v2.9.0`.
    pub fn tag(&self) -> alloc::string::String {
        alloc::format!("v{}", self.0)
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

/// Text that is not a SemVer version.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a version: expected SemVer such as 2.9.0, v2.9.0 or 2.10.0-rc.1")]
pub struct BadVersion;

impl FromStr for Version {
    type Err = BadVersion;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bare = s.strip_prefix('v').unwrap_or(s);
        semver::Version::parse(bare)
            .map(Version)
            .map_err(|_| BadVersion)
    }
}

impl serde::Serialize for Version {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Version {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <alloc::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        text.parse().map_err(|_| {
            serde::de::Error::custom(alloc::format!(
                "`{}` is not a version: expected SemVer such as 2.9.0 or v2.9.0",
                text.chars().take(40).collect::<alloc::string::String>()
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;

    fn v(text: &str) -> Version {
        text.parse().unwrap()
    }

    #[test]
    fn semver_ordering_with_optional_v() {
        assert_eq!(v("v2.9.0"), v("2.9.0"));
        assert_eq!(v("v2.9.0").to_string(), "2.9.0");
        assert_eq!(v("2.9.0").tag(), "v2.9.0");
        assert_eq!(v("v2.10.0").precedence(&v("v2.9.0")), Ordering::Greater);
        assert_eq!(v("2.12.0-rc1").precedence(&v("2.12.0")), Ordering::Less);
        assert_eq!(
            v("2.12.0-rc.2").precedence(&v("2.12.0-rc.10")),
            Ordering::Less
        );
        assert_eq!(
            v("2.12.0-alpha").precedence(&v("2.12.0-rc.1")),
            Ordering::Less
        );
        assert!(v("2.9.0+build.5").same_release(&v("2.9.0")));
        assert!(v("2.10.0-rc.1").is_prerelease());
        assert!(!v("2.9.0+build-1").is_prerelease());
    }

    #[test]
    fn non_versions_are_refused() {
        for text in [
            "", "v", "2.9", "vv2.9.0", "2.9.0.1", "02.9.0", "2.9.0-", "latest",
        ] {
            assert_eq!(text.parse::<Version>(), Err(BadVersion), "{text}");
        }
    }
}
