//! `cargo xtask demo`: the whole story on this machine, with no accounts and no hardware.
//!
//! Local stand-ins for GitHub (git's http-backend, its raw host, GitHub's REST API as
//! recorded), R2 (an S3 server) and the broker (mosquitto); a scratch firmware repository
//! onboarded with `clockrel init` and released with `clockrel release`; and a simulated
//! word clock (the real `wordclock` program) that updates over MQTT, fails over to R2
//! when GitHub dies mid-download, and rolls back a release that breaks its MQTT check.
//! Every step is checked, not just shown: the demo exits 0 only if all happened.
//!
//! Run by `cargo xtask demo [--keep]`, which builds the programs it drives and passes
//! their paths: `demo --clockrel PATH --wordclock PATH --workspace DIR [--keep]`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use clockrel_testkit::{FirmwareElf, GitServer, GithubApi, MqttBroker, S3Server};
use rumqttc::{Client, Event, MqttOptions, Packet, QoS};

/// The stand-ins' one token, which the demo's releases are given as GITHUB_TOKEN.
const TOKEN: &str = "demo-token-not-a-secret";
const DEVICE: &str = "demo-clock";
/// Large enough that "half-way through the download" is a real place.
const PAYLOAD: u32 = 256 * 1024;

struct Paths {
    /// The stand-ins' credentials, as a release would find them in the environment.
    credentials: Vec<(&'static str, String)>,
    clockrel: PathBuf,
    wordclock: PathBuf,
    workspace: PathBuf,
    keep: bool,
}

fn main() -> ExitCode {
    let mut paths = match parse_args() {
        Ok(paths) => paths,
        Err(usage) => {
            eprintln!("{usage}");
            return ExitCode::from(2);
        }
    };
    match run(&mut paths) {
        Ok(()) => ExitCode::SUCCESS,
        Err(why) => {
            eprintln!("\ndemo: FAILED: {why}");
            ExitCode::FAILURE
        }
    }
}

fn parse_args() -> Result<Paths, String> {
    let usage = "usage: demo --clockrel PATH --wordclock PATH --workspace DIR [--keep]";
    let mut args = std::env::args().skip(1);
    let (mut clockrel, mut wordclock, mut workspace, mut keep) = (None, None, None, false);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--clockrel" => clockrel = args.next().map(PathBuf::from),
            "--wordclock" => wordclock = args.next().map(PathBuf::from),
            "--workspace" => workspace = args.next().map(PathBuf::from),
            "--keep" => keep = true,
            _ => return Err(usage.to_owned()),
        }
    }
    // Absolute: the programs run in the scratch repository.
    let absolute = |path: Option<PathBuf>| {
        let path = path.ok_or(usage)?;
        std::path::absolute(&path).map_err(|e| format!("{}: {e}", path.display()))
    };
    Ok(Paths {
        credentials: Vec::new(),
        clockrel: absolute(clockrel)?,
        wordclock: absolute(wordclock)?,
        workspace: absolute(workspace)?,
        keep,
    })
}

fn step(n: u32, text: &str) {
    println!("\n[{n}] {text}");
}

fn ok(text: &str) {
    println!("    ok: {text}");
}

fn run(paths: &mut Paths) -> Result<(), String> {
    step(
        1,
        "starting the stand-ins: git's http-backend and a raw-file host as GitHub, GitHub's REST API as recorded, an S3 server as R2, mosquitto as the MQTT broker",
    );
    let git = GitServer::start("acme", "wordclock", TOKEN);
    git.seed(&[("README.md", b"word clock firmware\n")]);
    let api = GithubApi::start("acme", "wordclock", TOKEN);
    let s3 = S3Server::start("wordclock-ota");
    let broker = MqttBroker::start();
    paths.credentials = vec![
        ("GITHUB_TOKEN", TOKEN.to_owned()),
        ("R2_ACCESS_KEY_ID", s3.access_key().to_owned()),
        ("R2_SECRET_ACCESS_KEY", s3.secret_key().to_owned()),
    ];
    let paths = &*paths;
    let scratch = tempfile::tempdir().map_err(|e| format!("a scratch directory: {e}"))?;
    let repo = scratch.path().join("wordclock");
    git.working_clone(&repo);
    ok(&format!(
        "GitHub at {} (raw files at {}), R2 at {}, the broker at 127.0.0.1:{}",
        git.clone_url(),
        git.raw_url(),
        s3.public_url(),
        broker.port()
    ));

    step(
        2,
        "a firmware repository onboarded with `clockrel init`; a build command stands in for cargo (no Xtensa toolchain here): it copies an ELF the test kit made for the version",
    );
    firmware_repository(&repo, &paths.workspace)?;
    let key = scratch.path().join("signing.key");
    let key_arg = key.to_str().ok_or("a UTF-8 path")?.to_owned();
    clockrel(
        paths,
        &repo,
        &["init", "--github", "acme/wordclock", "--key", &key_arg],
    )?;
    point_at_stand_ins(&repo, &git, &api, &s3)?;
    git_cli(&repo, &["add", "-A"])?;
    git_cli(&repo, &["commit", "-q", "-m", "Onboard clockrel"])?;
    ok("clockrel.toml, a signing key and its trusted-keys line written; committed");

    let release = |version: &str| -> Result<(), String> {
        clockrel(paths, &repo, &["release", version, "--key", &key_arg])?;
        ok(&format!(
            "{version} committed, tagged, on GitHub and R2, and both public URLs verified"
        ));
        Ok(())
    };
    println!("    $ clockrel release v1.0.0");
    release("v1.0.0")?;

    step(
        3,
        "a simulated word clock running v1.0.0 (the real `wordclock` program, its flash in a file)",
    );
    let mqtt = Watcher::connect(broker.port())?;
    let mut clock = Clock::start(paths, scratch.path(), &repo, &git, &s3, broker.port(), &[])?;
    mqtt.wait_for("the clock reports 1.0.0", |topic, payload| {
        topic == format!("home/{DEVICE}/ota/version") && payload.contains("\"1.0.0\"")
    })?;
    ok("the clock booted v1.0.0 and reports it over MQTT");

    step(
        4,
        "v1.1.0: released, then installed over MQTT as Home Assistant's install button does; GitHub dies half-way through the download",
    );
    println!("    $ clockrel release v1.1.0");
    release("v1.1.0")?;
    let image = std::fs::read(repo.join("ota_files/wordclock-v1.1.0.bin"))
        .map_err(|e| format!("the staged image: {e}"))?;
    git.break_raw_after("wordclock-v1.1.0.bin", image.len() / 2);
    mqtt.publish(&format!("home/{DEVICE}/command"), "install")?;
    let seen = mqtt.wait_for(
        "the clock reports 1.1.0 after its reboot",
        |topic, payload| {
            topic == format!("home/{DEVICE}/ota/version") && payload.contains("\"1.1.0\"")
        },
    )?;
    // What the clock said before it rebooted: the image came from GitHub, then R2.
    let both = seen.iter().any(|(topic, payload)| {
        topic.ends_with("/ota/attributes")
            && payload.contains("\"source_used\":[\"github\",\"r2\"]")
    });
    if !both {
        return Err(format!(
            "the clock never reported source_used github then r2: {:?}",
            seen.iter()
                .filter(|(t, _)| t.ends_with("/ota/attributes"))
                .collect::<Vec<_>>()
        ));
    }
    println!("    the clock reported over MQTT: source_used github, then r2");
    // Where R2 was asked to continue: where GitHub broke off, not from the start.
    let half = image.len() as u64 / 2;
    let resumed = s3
        .public_requests()
        .into_iter()
        .filter(|r| r.key == "wordclock-v1.1.0.bin")
        .filter_map(|r| r.from)
        .find(|from| *from > 0 && *from <= half);
    let Some(resumed) = resumed else {
        return Err(format!(
            "R2 was never asked to continue the image: {:?}",
            s3.public_requests()
        ));
    };
    println!(
        "    R2 continued the image at byte {resumed} of {}",
        image.len()
    );
    ok(
        "GitHub broke off half-way; the clock continued from R2 at the same offset, verified the image, rebooted into v1.1.0 and committed it after its health checks",
    );

    step(
        5,
        "v1.2.0, a version bump built so that its MQTT health check fails: installed from a delta patch, rolled back, and not tried again",
    );
    clock.stop();
    clock = Clock::start(
        paths,
        scratch.path(),
        &repo,
        &git,
        &s3,
        broker.port(),
        &["--fail-health", "1.2.0:mqtt", "--health-deadline", "3"],
    )?;
    mqtt.wait_for("the clock is back on 1.1.0", |topic, payload| {
        topic == format!("home/{DEVICE}/ota/version") && payload.contains("\"1.1.0\"")
    })?;
    println!("    $ clockrel release v1.2.0");
    release("v1.2.0")?;
    mqtt.publish(&format!("home/{DEVICE}/command"), "install")?;
    let seen = mqtt.wait_for(
        "the clock reports why 1.2.0 was rolled back",
        |topic, payload| {
            topic.ends_with("/ota/attributes") && payload.contains("1.2.0 rolled back")
        },
    )?;
    // What the clock said before it rebooted: the image came as a patch from 1.1.0.
    let delivery = seen.iter().find_map(|(topic, payload)| {
        let attributes: serde_json::Value = serde_json::from_str(payload).ok()?;
        let delivery = attributes["delivery"].as_str()?;
        (topic.ends_with("/ota/attributes") && delivery.contains("patch from 1.1.0"))
            .then(|| delivery.to_owned())
    });
    let Some(delivery) = delivery else {
        return Err(format!(
            "the clock never reported a patch from 1.1.0: {:?}",
            seen.iter()
                .filter(|(t, _)| t.ends_with("/ota/attributes"))
                .collect::<Vec<_>>()
        ));
    };
    println!("    the clock reported over MQTT: delivery {delivery}");
    let reason = seen.last().map(|(_, p)| p.clone()).unwrap_or_default();
    ok(&format!("rolled back to v1.1.0; the clock says: {reason}"));
    mqtt.publish(&format!("home/{DEVICE}/command"), "install")?;
    mqtt.wait_for("the clock refuses 1.2.0 a second time", |topic, payload| {
        topic.ends_with("/ota/progress") && payload.contains("was rolled back on this device")
    })?;
    ok("asked again, it refuses: 1.2.0 was rolled back on this device (send `retry` to insist)");

    step(6, "against real GitHub and R2");
    println!(
        "    clockrel init --workflow               # in your firmware repository\n    export GITHUB_TOKEN=... R2_ACCESS_KEY_ID=... R2_SECRET_ACCESS_KEY=...\n    clockrel release v1.0.0 --dry-run     # every step, nothing touched\n    clockrel release v1.0.0"
    );
    if paths.keep {
        println!(
            "\n--keep: the stand-ins and the clock keep running (Ctrl-C ends them).\n    repository  {}\n    GitHub raw  {}/acme/wordclock/main/ota_files/\n    R2          {}/\n    broker      127.0.0.1:{}, topics home/{DEVICE}/#",
            repo.display(),
            git.raw_url(),
            s3.public_url(),
            broker.port()
        );
        let _kept = scratch.keep();
        loop {
            std::thread::sleep(Duration::from_secs(3600));
        }
    }
    clock.stop();
    println!("\ndemo: every step happened as shown");
    Ok(())
}

/// A cargo firmware package at 0.1.0, the word clock's partition table, and ELFs for
/// the versions the demo releases.
fn firmware_repository(repo: &Path, workspace: &Path) -> Result<(), String> {
    let write = |path: &str, bytes: &[u8]| {
        let path = repo.join(path);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
        }
        std::fs::write(&path, bytes).map_err(|e| format!("{}: {e}", path.display()))
    };
    write(
        "firmware/Cargo.toml",
        b"[package]\nname = \"wordclock\"\nversion = \"0.1.0\"\nedition = \"2024\"\n\n[target.'cfg(target_os = \"espidf\")'.dependencies]\nesp-idf-svc = \"0.53\"\n",
    )?;
    write(
        "firmware/sdkconfig.defaults",
        b"CONFIG_IDF_TARGET=\"esp32s3\"\nCONFIG_ESPTOOLPY_FLASHSIZE=\"8MB\"\n",
    )?;
    let table = std::fs::read(workspace.join("partitions/partitions.csv"))
        .map_err(|e| format!("the partition table: {e}"))?;
    write("partitions/partitions.csv", &table)?;
    // 1.1.0 is another build (no patch is worth making to it); 1.2.0 changes 1.1.0's
    // version alone, so its release carries a patch of a few kilobytes.
    for (version, code) in [("1.0.0", "1.0.0"), ("1.1.0", "1.1.0"), ("1.2.0", "1.1.0")] {
        let elf = FirmwareElf::new(version)
            .payload_len(PAYLOAD)
            .code_of(code)
            .build();
        write(&format!("elfs/wordclock-{version}.elf"), &elf)?;
    }
    write(".gitignore", b"elfs/\nbuild/\n")
}

/// The config `init` wrote, pointed at the stand-ins, with the build command.
fn point_at_stand_ins(
    repo: &Path,
    git: &GitServer,
    api: &GithubApi,
    s3: &S3Server,
) -> Result<(), String> {
    let path = repo.join("clockrel.toml");
    let text = std::fs::read_to_string(&path).map_err(|e| e.to_string())?;
    let text = text
        .replacen(
            "[firmware]\n",
            "[firmware]\nbuild = \"mkdir -p build && cp elfs/wordclock-$CLOCKREL_VERSION.elf build/wordclock.elf\"\nelf = \"build/wordclock.elf\"\n",
            1,
        )
        .replacen(
            "repository = \"acme/wordclock\"\n",
            &format!(
                "repository = \"acme/wordclock\"\ngit_url = \"{}\"\napi_url = \"{}\"\nraw_url = \"{}\"\n",
                git.clone_url(),
                api.api_url(),
                git.raw_url()
            ),
            1,
        );
    let text = format!(
        "{text}\n[sources.r2]\npublic_url = \"{}\"\nbucket = \"wordclock-ota\"\nendpoint = \"{}\"\n\n[verify]\ndeadline_seconds = 20\n",
        s3.public_url(),
        s3.endpoint()
    );
    std::fs::write(&path, text).map_err(|e| e.to_string())
}

/// Runs clockrel in `repo` with the stand-ins' credentials; its output is shown.
fn clockrel(paths: &Paths, repo: &Path, args: &[&str]) -> Result<(), String> {
    let out = Command::new(&paths.clockrel)
        .args(args)
        .current_dir(repo)
        .envs(paths.credentials.iter().map(|(k, v)| (*k, v)))
        .env("CI", "true")
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("cannot run {}: {e}", paths.clockrel.display()))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "clockrel {} failed ({}):\n{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stdout)
        ))
    }
}

fn git_cli(repo: &Path, args: &[&str]) -> Result<(), String> {
    let status = Command::new("git")
        .args(args)
        .current_dir(repo)
        .status()
        .map_err(|e| format!("cannot run git: {e}"))?;
    status
        .success()
        .then_some(())
        .ok_or_else(|| format!("git {} failed", args.join(" ")))
}

/// The simulated clock: the `wordclock` program, stopped when dropped.
struct Clock(Child);

impl Clock {
    /// Starts the clock on the flash file in `scratch` (made from v1.0.0 the first
    /// time), with the fault switches in `extra`.
    fn start(
        paths: &Paths,
        scratch: &Path,
        repo: &Path,
        git: &GitServer,
        s3: &S3Server,
        port: u16,
        extra: &[&str],
    ) -> Result<Clock, String> {
        let path = |p: PathBuf| p.to_string_lossy().into_owned();
        let child = Command::new(&paths.wordclock)
            .args(["--flash", &path(scratch.join("clock.flash"))])
            .args([
                "--factory-image",
                &path(repo.join("ota_files/wordclock-v1.0.0.bin")),
            ])
            .args([
                "--partitions",
                &path(repo.join("partitions/partitions.csv")),
            ])
            .args([
                "--trusted-keys",
                &path(repo.join("firmware/trusted-keys.txt")),
            ])
            .args(["--device", DEVICE, "--broker", &format!("127.0.0.1:{port}")])
            .args([
                "--github",
                &format!("{}/acme/wordclock/main/ota_files/", git.raw_url()),
            ])
            .args(["--r2", &format!("{}/", s3.public_url())])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", paths.wordclock.display()))?;
        Ok(Clock(child))
    }

    fn stop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Clock {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Home Assistant's side of the broker: sees every message of the clock, sends commands.
struct Watcher {
    client: Client,
    events: std::sync::Mutex<rumqttc::Connection>,
}

impl Watcher {
    fn connect(port: u16) -> Result<Watcher, String> {
        let (client, events) = Client::new(MqttOptions::new("demo-watcher", "127.0.0.1", port), 64);
        client
            .subscribe(format!("home/{DEVICE}/#"), QoS::AtLeastOnce)
            .map_err(|e| format!("subscribe: {e}"))?;
        Ok(Watcher {
            client,
            events: std::sync::Mutex::new(events),
        })
    }

    fn publish(&self, topic: &str, payload: &str) -> Result<(), String> {
        println!("    -> {topic}: {payload}");
        self.client
            .publish(topic, QoS::AtLeastOnce, false, payload)
            .map_err(|e| format!("publish: {e}"))
    }

    /// Every message until one `done` accepts; fails after two minutes.
    fn wait_for(
        &self,
        what: &str,
        done: impl Fn(&str, &str) -> bool,
    ) -> Result<Vec<(String, String)>, String> {
        let mut events = self.events.lock().map_err(|_| "the watcher broke")?;
        let deadline = Instant::now() + Duration::from_secs(120);
        let mut seen = Vec::new();
        while Instant::now() < deadline {
            let Ok(Ok(Event::Incoming(Packet::Publish(message)))) =
                events.recv_timeout(Duration::from_millis(200))
            else {
                continue;
            };
            let payload = String::from_utf8_lossy(&message.payload).into_owned();
            let finished = done(&message.topic, &payload);
            seen.push((message.topic.clone(), payload));
            if finished {
                return Ok(seen);
            }
        }
        Err(format!(
            "{what}: not within two minutes; the clock said {:?}",
            seen.iter().rev().take(5).collect::<Vec<_>>()
        ))
    }
}
