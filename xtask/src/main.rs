//! `cargo xtask`: the workspace's own automation, in Rust so it runs wherever cargo does.
//!
//! `cargo xtask test` is the README's test command: it installs what the tests need
//! (esptool, the independent oracle for our image format) and runs the whole suite, the
//! way CI does.

use std::process::{Command, ExitCode};

/// esptool's output is parsed by the tests; pin the major version whose format they know.
const ESPTOOL: &str = "esptool>=5,<6";

const USAGE: &str = "\
usage: cargo xtask <task>

tasks:
  test    install the test tools (esptool) if missing, then run every test";

fn main() -> ExitCode {
    let task = std::env::args().nth(1);
    let result = match task.as_deref() {
        Some("test") => test(),
        Some("-h" | "--help" | "help") => {
            println!("{USAGE}");
            Ok(())
        }
        _ => {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("xtask: {message}");
            ExitCode::FAILURE
        }
    }
}

fn test() -> Result<(), String> {
    ensure_esptool()?;
    run(Command::new(cargo()).args(["test", "--workspace", "--all-targets"]))?;
    // Doc tests are not part of --all-targets.
    run(Command::new(cargo()).args(["test", "--workspace", "--doc"]))
}

/// Installs esptool with pip unless `python3 -m esptool` already answers.
fn ensure_esptool() -> Result<(), String> {
    let present = Command::new("python3")
        .args(["-m", "esptool", "version"])
        .output()
        .is_ok_and(|out| out.status.success());
    if present {
        return Ok(());
    }
    eprintln!("xtask: installing {ESPTOOL} (the tests check our images against it)");
    let pip = || {
        let mut command = Command::new("python3");
        command.args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
        ]);
        command
    };
    // A Debian system Python refuses pip installs outside a venv (PEP 668) unless told to.
    run(pip().arg(ESPTOOL)).or_else(|_| run(pip().args(["--break-system-packages", ESPTOOL])))
}

fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned())
}

fn run(command: &mut Command) -> Result<(), String> {
    let shown = format!("{command:?}");
    let status = command
        .status()
        .map_err(|e| format!("cannot start {shown}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{shown} failed ({status})"))
    }
}
