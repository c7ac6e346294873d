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
    ensure_system_tools()?;
    ensure_esptool()?;
    let mut totals = Totals::default();
    let all_targets = run_counting(
        Command::new(cargo()).args(["test", "--workspace", "--all-targets"]),
        &mut totals,
    );
    // Doc tests are not part of --all-targets.
    let doc = run_counting(
        Command::new(cargo()).args(["test", "--workspace", "--doc"]),
        &mut totals,
    );
    // One closing line for the whole suite: the last test binary may well have none.
    println!("xtask: {} passed, {} failed", totals.passed, totals.failed);
    all_targets.and(doc)
}

/// Tests counted over every `test result:` line cargo's test binaries print.
#[derive(Debug, Default)]
struct Totals {
    passed: u64,
    failed: u64,
}

impl Totals {
    /// Adds `test result: ok. 12 passed; 0 failed; ...`.
    fn add(&mut self, line: &str) {
        let Some(rest) = line.strip_prefix("test result: ") else {
            return;
        };
        let count = |word: &str| {
            rest.split(';')
                .find_map(|part| {
                    part.trim()
                        .trim_start_matches("ok. ")
                        .trim_start_matches("FAILED. ")
                        .strip_suffix(word)
                })
                .and_then(|n| n.trim().parse::<u64>().ok())
                .unwrap_or(0)
        };
        self.passed += count(" passed");
        self.failed += count(" failed");
    }
}

/// Runs `command`, echoing its output and counting its test results.
fn run_counting(command: &mut Command, totals: &mut Totals) -> Result<(), String> {
    use std::io::BufRead as _;
    let shown = format!("{command:?}");
    let mut child = command
        .stdout(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start {shown}: {e}"))?;
    if let Some(stdout) = child.stdout.take() {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            println!("{line}");
            totals.add(&line);
        }
    }
    let status = child.wait().map_err(|e| format!("{shown}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{shown} failed ({status})"))
    }
}

/// The tests' real peers, from Debian: git (its http-backend is the test remote), perl
/// (a git hook), curl (signs S3 requests in the server tests), mosquitto (the broker the
/// simulated device talks to). Installed with apt when missing.
const SYSTEM_TOOLS: [(&str, &str); 4] = [
    ("git", "git"),
    ("perl", "perl"),
    ("curl", "curl"),
    ("/usr/sbin/mosquitto", "mosquitto"),
];

fn ensure_system_tools() -> Result<(), String> {
    let present = |program: &str| {
        std::path::Path::new(program).is_file()
            || Command::new("sh")
                .args(["-c", &format!("command -v {program}")])
                .output()
                .is_ok_and(|out| out.status.success())
    };
    let missing: Vec<&str> = SYSTEM_TOOLS
        .iter()
        .filter(|(program, _)| !present(program))
        .map(|(_, package)| *package)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("xtask: installing {} with apt-get", missing.join(" "));
    run(Command::new("apt-get").args(["update", "-qq"]))?;
    run(Command::new("apt-get")
        .args(["install", "-y", "-qq"])
        .args(&missing))
    .map_err(|e| format!("{e}; install {} yourself", missing.join(" ")))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn result_lines_are_summed() {
        let mut totals = Totals::default();
        totals.add("test result: ok. 12 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.01s");
        totals
            .add("test result: FAILED. 3 passed; 2 failed; 0 ignored; 0 measured; 0 filtered out");
        totals.add("running 5 tests");
        assert_eq!((totals.passed, totals.failed), (15, 2));
    }
}
