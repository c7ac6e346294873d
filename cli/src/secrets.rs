//! Tokens and keys read from the environment, in a type that never prints itself, and a
//! scrubber for text that might quote one (a server's error message, a URL).

pub use ota_core::secret::Secret;

/// The first of `names` that is set and not empty, with the name it came from.
pub fn from_env(names: &[&'static str]) -> Option<(Secret, &'static str)> {
    names.iter().find_map(|name| {
        let value = std::env::var(name).ok().filter(|v| !v.trim().is_empty())?;
        Some((Secret::new(value.trim()), *name))
    })
}

/// Replaces every secret in `text` with `***`.
#[derive(Debug, Clone, Default)]
pub struct Redactor {
    secrets: Vec<Secret>,
}

impl Redactor {
    pub fn add(&mut self, secret: &Secret) {
        // Short values would blank out ordinary words; no real credential is that short.
        if secret.expose().len() >= 8 {
            self.secrets.push(secret.clone());
        }
    }

    pub fn scrub(&self, text: &str) -> String {
        self.secrets.iter().fold(text.to_owned(), |text, secret| {
            text.replace(secret.expose(), "***")
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_format_their_value() {
        let token = Secret::new("test-token-abcdefghijklmnop");
        assert_eq!(format!("{token} {token:?}"), "*** Secret(***)");
        assert_eq!(token.expose(), "test-token-abcdefghijklmnop");
        let mut redactor = Redactor::default();
        redactor.add(&token);
        redactor.add(&Secret::new("x"));
        assert_eq!(
            redactor.scrub("push to https://x:test-token-abcdefghijklmnop@host failed (x)"),
            "push to https://x:***@host failed (x)"
        );
    }
}
