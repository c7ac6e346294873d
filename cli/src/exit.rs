//! Exit codes, and the error a command ends with: one line, a hint, and the code to exit with.

use std::fmt;

/// The process exit codes, stable for scripts and CI.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Exit {
    Success = 0,
    /// Something unexpected: I/O, a bug, an environment problem.
    Error = 1,
    /// The command line was wrong (clap uses 2 too).
    Usage = 2,
    /// The input was read, and a rule of the release gate failed.
    CheckFailed = 3,
    /// An input file could not be read or is malformed.
    BadInput = 4,
    /// Some targets were published and others failed: run again to finish.
    Partial = 5,
    /// No target was published.
    PublishFailed = 6,
}

impl Exit {
    pub fn code(self) -> u8 {
        self as u8
    }
}

/// How a command failed: the exit code, the error chain and an optional hint.
#[derive(Debug)]
pub struct Failure {
    pub exit: Exit,
    pub error: anyhow::Error,
    pub hint: Option<String>,
}

impl Failure {
    pub fn new(exit: Exit, error: impl Into<anyhow::Error>) -> Failure {
        Failure {
            exit,
            error: error.into(),
            hint: None,
        }
    }

    pub fn hint(mut self, hint: impl Into<String>) -> Failure {
        self.hint = Some(hint.into());
        self
    }
}

impl fmt::Display for Failure {
    /// `error: <the chain on one line>` and, if there is one, `  hint: <hint>` below it.
    /// A cause whose text its parent already quotes is not repeated.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut line = String::new();
        for cause in self.error.chain() {
            let text = cause.to_string();
            if !line.contains(&text) {
                if !line.is_empty() {
                    line.push_str(": ");
                }
                line.push_str(&text);
            }
        }
        write!(f, "error: {line}")?;
        if let Some(hint) = &self.hint {
            write!(f, "\n  hint: {hint}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cause_already_quoted_is_not_repeated() {
        let io = std::io::Error::other("disk full");
        let wrapped = crate::ota_files::StagedError::Write {
            path: "ota_files/version.json".into(),
            source: io,
        };
        let failure = Failure::new(
            Exit::Error,
            anyhow::Error::new(wrapped).context("staging v2.9.0"),
        )
        .hint("free some space");
        assert_eq!(
            failure.to_string(),
            "error: staging v2.9.0: cannot write ota_files/version.json: disk full\n  hint: free some space"
        );
    }
}
