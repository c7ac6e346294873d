//! The release workflow this repository ships is checked by actionlint, GitHub Actions'
//! own linter (its types, expressions and shell), as CI installs it: a workflow with a
//! mistake would only fail on GitHub, at release time.
#![allow(clippy::unwrap_used)] // a test that cannot unwrap has failed, and says where

mod common;

use std::process::Command;

#[test]
fn the_release_workflow_passes_actionlint_and_runs_clockrel_release() {
    let workflow = common::workspace().join(".github/workflows/release.yml");
    let out = Command::new(common::actionlint())
        .arg(&workflow)
        .current_dir(common::workspace())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "actionlint:\n{}{}",
        common::stdout(&out),
        common::stderr(&out)
    );
    let text = std::fs::read_to_string(&workflow).unwrap();
    for needle in [
        "clockrel release \"$VERSION\"",
        "tags: [\"v*\"]",
        "clockrel release --json",
        "secrets.CLOCKREL_SIGNING_KEY",
        "secrets.R2_ACCESS_KEY_ID",
        "secrets.R2_SECRET_ACCESS_KEY",
        "contents: write",
    ] {
        assert!(text.contains(needle), "the workflow lacks `{needle}`");
    }
}
