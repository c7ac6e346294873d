//! Python's detools (PyPI; `cargo xtask test` installs it), the delta-patch format's own
//! implementation, as the independent judge of our patches: it makes patches for our
//! applier and applies the ones we make.

use std::path::Path;
use std::process::Command;

/// Runs a Python snippet with `args` as `sys.argv[1:]`; panics with detools' words if it
/// fails, as a fixture does.
fn python(script: &str, args: &[&Path]) {
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "detools (cargo xtask test installs it): {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `detools create_patch` from `old` to `new`: sequential, heatshrink with window 8 and
/// lookahead 7, the patch `esp_delta_ota` applies (without its 64-byte header).
pub fn create_patch(old: &[u8], new: &[u8]) -> Vec<u8> {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let (from, to, patch) = (
        dir.path().join("from"),
        dir.path().join("to"),
        dir.path().join("patch"),
    );
    std::fs::write(&from, old).expect("written");
    std::fs::write(&to, new).expect("written");
    python(
        "import sys, detools; detools.create_patch_filenames(sys.argv[1], sys.argv[2], sys.argv[3], \
         compression='heatshrink', heatshrink_window_sz2=8, heatshrink_lookahead_sz2=7)",
        &[&from, &to, &patch],
    );
    std::fs::read(&patch).expect("detools wrote the patch")
}

/// What `detools apply_patch` makes of the detools `patch` on `old`.
pub fn apply_patch(old: &[u8], patch: &[u8]) -> Vec<u8> {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let (from, body, to) = (
        dir.path().join("from"),
        dir.path().join("patch"),
        dir.path().join("to"),
    );
    std::fs::write(&from, old).expect("written");
    std::fs::write(&body, patch).expect("written");
    python(
        "import sys, detools; detools.apply_patch_filenames(sys.argv[1], sys.argv[2], sys.argv[3])",
        &[&from, &body, &to],
    );
    std::fs::read(&to).expect("detools wrote the image")
}
