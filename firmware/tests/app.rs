//! The update feature driven by MQTT messages: what is published, and that only an
//! explicit cancel stops a running update.
#![allow(clippy::unwrap_used)] // a test that cannot unwrap has failed, and says where

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex};

use common::MemoryStore;

use ota_core::engine::health::{self, Outcome};
use ota_core::engine::{Control, Installed, Offer, Source, Store, UpdateError};
use ota_core::manifest::{FORMAT, SecretKey, Trusted};
use ota_core::mqtt::Topics;
use ota_core::policy::{Decision, Refusal, Rejected};
use ota_core::{Chip, Manifest, Sha256};
use wordclock::app::{App, Publisher, Updater};
use wordclock::session::Session;

/// Every message published, in order; and a gate: the first message containing its
/// text waits, before it is recorded, until the test lets it through.
#[derive(Default)]
struct Recorder(
    Mutex<Vec<(String, String, bool)>>,
    Mutex<Option<(String, Receiver<()>)>>,
);

impl Publisher for Recorder {
    fn publish(&self, topic: &str, payload: &[u8], retain: bool) {
        let text = String::from_utf8_lossy(payload).into_owned();
        let gate = {
            let mut gate = self.1.lock().unwrap();
            match gate.as_ref() {
                Some((part, _)) if text.contains(part.as_str()) => gate.take(),
                _ => None,
            }
        };
        if let Some((_, open)) = gate {
            open.recv().unwrap();
        }
        self.0
            .lock()
            .unwrap()
            .push((topic.to_owned(), text, retain));
    }

    /// Logged as a message on [`FLUSHED`], to be found in order among the others.
    fn flush(&self, _within: std::time::Duration) -> bool {
        self.publish(FLUSHED, b"", false);
        true
    }
}

/// Not topics: where the recorder logs a flush, and a reboot.
const FLUSHED: &str = "(flush)";
const REBOOTED: &str = "(reboot)";

impl Recorder {
    fn on(&self, topic: &str) -> Vec<String> {
        let all = self.0.lock().unwrap();
        all.iter()
            .filter(|(t, _, _)| t == topic)
            .map(|(_, p, _)| p.clone())
            .collect()
    }
}

/// An update that advances one tenth each time the test says so.
struct Stepped {
    decision: Decision,
    ticks: Mutex<Receiver<()>>,
    checks: AtomicUsize,
    installs: AtomicUsize,
    reboots: AtomicUsize,
    /// The messages' log, where a reboot is logged too, on [`REBOOTED`].
    log: Arc<Recorder>,
    /// A check waits for a tick too.
    slow_checks: AtomicBool,
    /// The install fails half-way, as a download whose image does not verify.
    failing: AtomicBool,
    /// The check fails, as with both sources unreachable.
    failing_checks: AtomicBool,
}

/// A manifest as the engine hands it on: signed by a key the device trusts.
fn manifest() -> Trusted {
    let key = SecretKey::from_seed([7; 32]);
    let mut manifest = Manifest {
        format: Some(FORMAT),
        version: "2.0.0".parse().unwrap(),
        build_date: None,
        sha256: Sha256::of(b""),
        firmware_size: 1000,
        firmware_url: None,
        commit_hash: None,
        title: Some("wordclock v2.0.0".into()),
        description: Some("Brighter.".into()),
        release_date: None,
        esp_idf_version: None,
        requires_restart: Some(true),
        chip: Some(Chip::Esp32S3),
        secure_version: Some(0),
        file: Some("wordclock-v2.0.0.bin".into()),
        patches: Vec::new(),
        signature: None,
        extra: Default::default(),
    };
    manifest.sign(&key);
    manifest.trust(&[key.public()]).unwrap()
}

impl Updater for Stepped {
    fn check(&self, preferred: Source) -> Result<Offer, UpdateError> {
        self.checks.fetch_add(1, Ordering::SeqCst);
        if self.slow_checks.load(Ordering::SeqCst) {
            self.ticks.lock().unwrap().recv().unwrap();
        }
        if self.failing_checks.load(Ordering::SeqCst) {
            return Err(UpdateError::NoManifest {
                attempts: Vec::new(),
            });
        }
        Ok(Offer {
            source: preferred,
            manifest: manifest(),
            decision: self.decision.clone(),
            attempts: Vec::new(),
        })
    }

    fn install(
        &self,
        offer: &Offer,
        control: &Control,
        progress: &mut dyn ota_core::engine::Progress,
    ) -> Result<Installed, UpdateError> {
        self.installs.fetch_add(1, Ordering::SeqCst);
        for step in 1..=10 {
            self.ticks.lock().unwrap().recv().unwrap();
            if control.is_cancelled() {
                return Err(UpdateError::Cancelled);
            }
            if step == 6 && self.failing.load(Ordering::SeqCst) {
                return Err(UpdateError::Verify(
                    "the image's SHA-256 is not the manifest's".into(),
                ));
            }
            progress.bytes(step * 100, 1000);
        }
        Ok(Installed {
            version: offer.manifest.version.clone(),
            sources: vec![offer.source],
            attempts: Vec::new(),
            delivery: ota_core::engine::Delivery::Image,
        })
    }

    fn reboot(&self) {
        self.reboots.fetch_add(1, Ordering::SeqCst);
        self.log.publish(REBOOTED, b"", false);
    }
}

struct Rig {
    app: App,
    recorder: Arc<Recorder>,
    updater: Arc<Stepped>,
    ticks: Sender<()>,
    topics: Topics,
}

fn rig(decision: Decision, store: MemoryStore) -> Rig {
    let (ticks, receiver) = channel();
    let recorder = Arc::new(Recorder::default());
    let updater = Arc::new(Stepped {
        decision,
        ticks: Mutex::new(receiver),
        checks: AtomicUsize::new(0),
        installs: AtomicUsize::new(0),
        reboots: AtomicUsize::new(0),
        log: recorder.clone(),
        slow_checks: AtomicBool::new(false),
        failing: AtomicBool::new(false),
        failing_checks: AtomicBool::new(false),
    });
    let topics = Topics::new("clock1").unwrap();
    let device = wordclock::identity::device(
        "1.0.0".parse().unwrap(),
        "ESP32-S3 rev v0.2".into(),
        None,
        "https://raw.githubusercontent.com/acme/wordclock/main/ota_files/",
    );
    let app = App::new(
        topics.clone(),
        device,
        recorder.clone(),
        updater.clone(),
        Box::new(store),
    );
    Rig {
        app,
        recorder,
        updater,
        ticks,
        topics,
    }
}

impl Rig {
    /// Waits (a few seconds at most) until the app has published status `state`.
    fn wait_for_state(&self, state: &str) {
        let until = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while !self.states().iter().any(|s| s == state) {
            assert!(
                std::time::Instant::now() < until,
                "never {state}: {:?}",
                self.states()
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }

    fn send(&self, topic: &str, payload: &str) {
        self.app.on_message(topic, payload.as_bytes());
    }

    fn tick(&self, n: usize) {
        for _ in 0..n {
            self.ticks.send(()).unwrap();
        }
    }

    fn states(&self) -> Vec<String> {
        self.recorder
            .on(self.topics.progress())
            .iter()
            .map(|p| {
                serde_json::from_str::<serde_json::Value>(p).unwrap()["state"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .collect()
    }

    /// The last retained update state, as Home Assistant reads it.
    fn state(&self) -> serde_json::Value {
        let all = self.recorder.on(self.topics.state());
        serde_json::from_str(all.last().expect("no state published")).unwrap()
    }

    fn attributes(&self) -> serde_json::Value {
        let all = self.recorder.on(self.topics.attributes());
        serde_json::from_str(all.last().expect("no attributes published")).unwrap()
    }
}

#[test]
fn connecting_publishes_discovery_and_the_retained_state() {
    let rig = rig(Decision::Update, MemoryStore::default());
    rig.app.on_connect();
    let all = rig.recorder.0.lock().unwrap().clone();
    let topics: Vec<&str> = all.iter().map(|(t, _, _)| t.as_str()).collect();
    assert_eq!(
        topics,
        [
            "homeassistant/update/clock1/firmware/config",
            "homeassistant/select/clock1/ota_source/config",
            "homeassistant/button/clock1/check_update/config",
            "homeassistant/button/clock1/retry_update/config",
            "home/clock1/availability",
            "home/clock1/ota/version",
            "home/clock1/ota/source/status",
            "home/clock1/ota/attributes",
            "home/clock1/ota/state",
        ]
    );
    assert!(all.iter().all(|(_, _, retain)| *retain));
    assert_eq!(
        rig.recorder.on("home/clock1/ota/source/status"),
        [r#"{"source":"github"}"#]
    );
}

#[test]
fn an_install_reports_progress_and_reboots() {
    let rig = rig(Decision::Update, MemoryStore::default());
    rig.send("home/clock1/command", "install");
    rig.tick(10);
    rig.app.wait_idle();
    let states = rig.states();
    assert_eq!(states.first().unwrap(), "checking");
    assert_eq!(states.iter().filter(|s| *s == "downloading").count(), 10);
    assert_eq!(states.last().unwrap(), "rebooting");
    assert_eq!(rig.updater.reboots.load(Ordering::SeqCst), 1);
    // The broker has the last status before the reboot.
    let log = rig.recorder.0.lock().unwrap().clone();
    let tail: Vec<&str> = log[log.len() - 3..]
        .iter()
        .map(|(t, _, _)| t.as_str())
        .collect();
    assert_eq!(tail, ["home/clock1/ota/progress", FLUSHED, REBOOTED]);
    let state: serde_json::Value =
        serde_json::from_str(rig.recorder.on("home/clock1/ota/state").last().unwrap()).unwrap();
    assert_eq!(state["latest_version"], "2.0.0");
    assert_eq!(state["update_percentage"], 100);
}

#[test]
fn queries_second_triggers_and_bad_payloads_never_abort_a_running_update() {
    let rig = rig(Decision::Update, MemoryStore::default());
    rig.send("home/clock1/command", "install");
    rig.tick(3);
    rig.wait_for_state("downloading");
    rig.send("home/clock1/command", "check");
    rig.send("home/clock1/command", "install");
    rig.send("home/clock1/command", "\u{ff}garbage");
    rig.send("home/clock1/ota/source/set", "cloudflare");
    rig.app.on_connect(); // a reconnect
    rig.tick(7);
    rig.app.wait_idle();
    assert_eq!(
        rig.updater.installs.load(Ordering::SeqCst),
        1,
        "no second update started"
    );
    assert_eq!(rig.updater.checks.load(Ordering::SeqCst), 1);
    assert_eq!(
        rig.updater.reboots.load(Ordering::SeqCst),
        1,
        "the running update finished"
    );
    assert!(
        rig.states().contains(&"error".to_owned()),
        "the bad payload got an error status"
    );
    let attributes = rig.recorder.on("home/clock1/ota/attributes");
    assert!(
        attributes
            .iter()
            .any(|a| a.contains("an update is already running")),
        "{attributes:?}"
    );
    assert_eq!(
        rig.recorder
            .on("home/clock1/ota/source/status")
            .last()
            .unwrap(),
        r#"{"source":"r2"}"#
    );
}

#[test]
fn an_explicit_cancel_stops_the_update() {
    let rig = rig(Decision::Update, MemoryStore::default());
    rig.send("home/clock1/command", "install");
    rig.tick(2);
    rig.send("home/clock1/command", "cancel");
    rig.tick(1);
    rig.app.wait_idle();
    assert_eq!(rig.states().last().unwrap(), "cancelled");
    assert_eq!(rig.updater.reboots.load(Ordering::SeqCst), 0);
}

#[test]
fn a_check_only_reports_what_is_available() {
    let rig = rig(Decision::Update, MemoryStore::default());
    rig.send("home/clock1/command", "check");
    rig.app.wait_idle();
    assert_eq!(rig.states(), ["checking", "available"]);
    assert_eq!(rig.updater.installs.load(Ordering::SeqCst), 0);
}

#[test]
fn a_rollback_is_published_after_reconnecting() {
    let mut store = MemoryStore::default();
    let outcome = Outcome::RolledBack {
        version: "2.0.0".into(),
        reason: "mqtt: not healthy within 30 s".into(),
    };
    store.set(health::OUTCOME_KEY, &serde_json::to_vec(&outcome).unwrap());
    let rig = rig(Decision::Current, store);
    rig.app.on_connect();
    let attributes = rig.recorder.on("home/clock1/ota/attributes");
    assert_eq!(
        attributes,
        [r#"{"rollback_reason":"2.0.0 rolled back: mqtt: not healthy within 30 s"}"#]
    );
    rig.app.on_connect();
    let attributes = rig.recorder.on("home/clock1/ota/attributes");
    assert_eq!(
        attributes[1], attributes[0],
        "the reason stays in the retained attributes"
    );
}

/// An NVS where 2.0.0 was rolled back because its MQTT check failed.
fn rolled_back_store() -> MemoryStore {
    let mut store = MemoryStore::default();
    let rejected = Rejected {
        version: "2.0.0".parse().unwrap(),
        reason: "mqtt: not healthy within 30 s".into(),
    };
    store.set(
        health::REJECTED_KEY,
        &serde_json::to_vec(&rejected).unwrap(),
    );
    store
}

#[test]
fn a_release_rolled_back_here_is_not_installed_again_unless_retried() {
    let rig = rig(Decision::Update, rolled_back_store());

    rig.send("home/clock1/command", "install");
    rig.app.wait_idle();
    assert_eq!(rig.updater.installs.load(Ordering::SeqCst), 0);
    assert_eq!(rig.states(), ["checking", "error"]);
    let error: serde_json::Value =
        serde_json::from_str(rig.recorder.on("home/clock1/ota/progress").last().unwrap()).unwrap();
    assert_eq!(
        error["reason"],
        "refused: 2.0.0 was rolled back on this device (mqtt: not healthy within 30 s); \
         send `retry` to install it anyway"
    );

    rig.send("home/clock1/command", "retry");
    rig.tick(10);
    rig.app.wait_idle();
    assert_eq!(rig.updater.installs.load(Ordering::SeqCst), 1);
    assert_eq!(rig.states().last().unwrap(), "rebooting");
}

#[test]
fn the_session_greets_the_app_once_per_connection_whichever_comes_first() {
    let subscribed = Mutex::new(Vec::new());
    let subscribe = |topic: &str| subscribed.lock().unwrap().push(topic.to_owned());

    // Connected while the health checks still run: the app greets when it is attached.
    let Rig {
        app,
        recorder,
        updater,
        ..
    } = rig(Decision::Update, MemoryStore::default());
    let session = Session::default();
    session.on_message("home/clock1/command", b"install"); // no app yet: dropped
    session.on_connected(&subscribe);
    assert!(session.is_connected());
    assert!(recorder.0.lock().unwrap().is_empty());
    session.attach(app, &subscribe);
    assert_eq!(
        *subscribed.lock().unwrap(),
        ["home/clock1/command", "home/clock1/ota/source/set"]
    );
    assert_eq!(recorder.on("home/clock1/ota/version").len(), 1);

    // Lost and back: greeted again, as every reconnect is.
    session.on_disconnected();
    assert!(!session.is_connected());
    session.on_connected(&subscribe);
    assert_eq!(recorder.on("home/clock1/ota/version").len(), 2);
    assert_eq!(subscribed.lock().unwrap().len(), 4);
    session.detach().unwrap().wait_idle();
    // The install sent before the app existed was dropped, not queued for it.
    assert_eq!(updater.checks.load(Ordering::SeqCst), 0);
    assert!(recorder.on("home/clock1/ota/progress").is_empty());

    // Attached first: nothing until the broker accepts the session.
    let Rig { app, recorder, .. } = rig(Decision::Update, MemoryStore::default());
    let session = Session::default();
    session.attach(app, &subscribe);
    assert!(recorder.0.lock().unwrap().is_empty());
    session.on_connected(&subscribe);
    assert_eq!(recorder.on("home/clock1/ota/version").len(), 1);
}

#[test]
fn the_last_offer_is_shown_again_after_a_reboot() {
    let store = MemoryStore::default();
    let before = rig(Decision::Update, store.clone());
    before.send("home/clock1/command", "check");
    before.app.wait_idle();
    drop(before);

    // The next boot: a new app on the same NVS, before any check.
    let after = rig(Decision::Update, store);
    after.app.on_connect();
    let state = after.state();
    assert_eq!(state["installed_version"], "1.0.0");
    assert_eq!(state["latest_version"], "2.0.0");
    assert_eq!(state["title"], "wordclock v2.0.0");
    assert_eq!(state["release_summary"], "Brighter.");
    assert_eq!(
        state["release_url"],
        "https://github.com/acme/wordclock/releases/tag/v2.0.0"
    );
    assert_eq!(state["in_progress"], false);
    assert_eq!(after.updater.checks.load(Ordering::SeqCst), 0);
}

#[test]
fn a_release_rolled_back_here_is_shown_as_such_with_retry_available() {
    let rig = rig(Decision::Update, rolled_back_store());
    rig.app.on_connect();
    // The attribute the retry button's availability reads.
    assert_eq!(rig.attributes()["rolled_back"], "2.0.0");
    let retry: serde_json::Value = serde_json::from_str(
        &rig.recorder
            .on("homeassistant/button/clock1/retry_update/config")[0],
    )
    .unwrap();
    assert_eq!(retry["payload_press"], "retry");
    assert!(
        retry["availability"][1]["value_template"]
            .as_str()
            .unwrap()
            .contains("value_json.rolled_back")
    );

    rig.send("home/clock1/command", "check");
    rig.app.wait_idle();
    let state = rig.state();
    // No install button for a release that would be refused again ...
    assert_eq!(state["latest_version"], state["installed_version"]);
    // ... and the update dialog says why, and what to press.
    let summary = state["release_summary"].as_str().unwrap();
    assert!(
        summary
            .starts_with("v2.0.0 was rolled back on this device: mqtt: not healthy within 30 s."),
        "{summary}"
    );
    assert!(summary.contains("Retry rolled-back update"), "{summary}");

    // Pressing it installs the release on purpose.
    rig.send(
        retry["command_topic"].as_str().unwrap(),
        retry["payload_press"].as_str().unwrap(),
    );
    rig.tick(10);
    rig.app.wait_idle();
    assert_eq!(rig.updater.installs.load(Ordering::SeqCst), 1);
}

#[test]
fn a_refused_install_says_why_in_the_update_entity() {
    let refusal = Refusal::SecureVersion {
        running: 3,
        offered: 2,
    };
    let rig = rig(Decision::Refuse(refusal.clone()), MemoryStore::default());
    rig.send("home/clock1/command", "install");
    rig.app.wait_idle();
    let state = rig.state();
    assert_eq!(state["latest_version"], "1.0.0");
    assert_eq!(
        state["release_summary"],
        format!("v2.0.0 is not installed: {refusal}")
    );
    assert_eq!(state["in_progress"], false);
}

#[test]
fn a_failed_install_says_so_and_leaves_nothing_in_progress() {
    let rig = rig(Decision::Update, MemoryStore::default());
    rig.updater.failing.store(true, Ordering::SeqCst);
    rig.send("home/clock1/command", "install");
    rig.tick(6);
    rig.app.wait_idle();
    let state = rig.state();
    assert_eq!(state["in_progress"], false);
    assert_eq!(state["update_percentage"], serde_json::Value::Null);
    assert_eq!(state["latest_version"], "2.0.0", "it may be tried again");
    assert!(
        state["release_summary"]
            .as_str()
            .unwrap()
            .starts_with("The install of v2.0.0 failed: "),
        "{state}"
    );
    assert_eq!(rig.states().last().unwrap(), "error");
}

#[test]
fn an_install_pressed_during_a_check_goes_on_once_the_check_is_done() {
    let rig = rig(Decision::Update, MemoryStore::default());
    rig.updater.slow_checks.store(true, Ordering::SeqCst);
    rig.send("home/clock1/command", "check");
    rig.wait_for_state("checking");
    rig.send("home/clock1/command", "install");
    rig.tick(1 + 10);
    rig.app.wait_idle();
    assert_eq!(rig.updater.checks.load(Ordering::SeqCst), 1);
    assert_eq!(rig.updater.installs.load(Ordering::SeqCst), 1);
    assert_eq!(rig.states().last().unwrap(), "rebooting");
    let attributes = rig.recorder.on("home/clock1/ota/attributes");
    assert!(
        !attributes.iter().any(|a| a.contains("already running")),
        "{attributes:?}"
    );
}

#[test]
fn the_device_checks_on_its_own_soon_after_it_starts() {
    let rig = rig(Decision::Update, MemoryStore::default());
    rig.app
        .check_periodically(ota_core::schedule::Schedule::parse("60").unwrap().unwrap());
    rig.app.on_connect();
    // The first check comes within a tenth of the interval after the first connection:
    // 6 s here.
    rig.wait_for_state("available");
    rig.app.wait_idle();
    assert_eq!(rig.updater.checks.load(Ordering::SeqCst), 1);
    assert_eq!(rig.state()["latest_version"], "2.0.0");
    assert_eq!(
        rig.updater.installs.load(Ordering::SeqCst),
        0,
        "a check only"
    );
    // Dropping the app stops its schedule (the test would hang otherwise).
    drop(rig);
}

/// Sends `command` and returns once its job is held publishing a message that holds
/// `part`, with what lets it go on.
fn held_at(rig: &Rig, command: &str, part: &str) -> Sender<()> {
    let (open, gate) = channel();
    *rig.recorder.1.lock().unwrap() = Some((part.to_owned(), gate));
    rig.send("home/clock1/command", command);
    let until = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while rig.recorder.1.lock().unwrap().is_some() {
        assert!(
            std::time::Instant::now() < until,
            "the job never published {part}"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    open
}

#[test]
fn an_install_pressed_as_a_check_ends_is_not_lost() {
    let rig = rig(Decision::Update, MemoryStore::default());
    // The check's job is held as it reports what is available: it has decided.
    let open = held_at(&rig, "check", "\"available\"");
    rig.send("home/clock1/command", "install");
    open.send(()).unwrap();
    rig.tick(10);
    rig.app.wait_idle();
    assert_eq!(rig.updater.installs.load(Ordering::SeqCst), 1);
    assert_eq!(rig.states().last().unwrap(), "rebooting");
}

#[test]
fn a_cancel_pressed_as_the_check_ends_stops_the_install() {
    let rig = Arc::new(rig(Decision::Update, MemoryStore::default()));
    // The install's job is held as it shows the offer: its check has decided.
    let open = held_at(&rig, "install", "\"latest_version\":\"2.0.0\"");
    rig.send("home/clock1/command", "cancel");
    open.send(()).unwrap();
    let waiting = Arc::clone(&rig);
    returns_within(30, move || waiting.app.wait_idle());
    assert_eq!(rig.updater.installs.load(Ordering::SeqCst), 0);
    assert_eq!(rig.states().last().unwrap(), "cancelled");
    assert_eq!(rig.state()["in_progress"], false);
}

#[test]
fn an_install_pressed_as_a_failed_install_ends_is_not_refused() {
    let rig = rig(Decision::Update, MemoryStore::default());
    rig.updater.failing.store(true, Ordering::SeqCst);
    // The install fails at its sixth step; its job is held as it reports the error.
    rig.tick(6);
    let open = held_at(&rig, "install", "\"error\"");
    rig.updater.failing.store(false, Ordering::SeqCst);
    rig.send("home/clock1/command", "install");
    open.send(()).unwrap();
    rig.tick(10);
    rig.app.wait_idle();
    assert_eq!(rig.updater.installs.load(Ordering::SeqCst), 2);
    assert_eq!(rig.states().last().unwrap(), "rebooting");
    assert!(
        !rig.recorder
            .on("home/clock1/ota/attributes")
            .iter()
            .any(|a| a.contains("already running")),
        "the second install was refused"
    );
}

#[test]
fn a_check_pressed_after_a_cancel_still_answers() {
    let rig = rig(Decision::Update, MemoryStore::default());
    rig.updater.slow_checks.store(true, Ordering::SeqCst);
    rig.send("home/clock1/command", "install");
    rig.wait_for_state("checking");
    rig.send("home/clock1/command", "cancel");
    rig.send("home/clock1/command", "check");
    rig.tick(1);
    rig.app.wait_idle();
    assert_eq!(rig.updater.installs.load(Ordering::SeqCst), 0);
    assert_eq!(rig.updater.checks.load(Ordering::SeqCst), 1);
    assert_eq!(rig.states().last().unwrap(), "available");
}

#[test]
fn a_check_pressed_as_a_check_ends_gets_its_own_answer() {
    let rig = rig(Decision::Update, MemoryStore::default());
    let open = held_at(&rig, "check", "\"available\"");
    rig.send("home/clock1/command", "check");
    open.send(()).unwrap();
    rig.app.wait_idle();
    assert_eq!(rig.updater.checks.load(Ordering::SeqCst), 2);
    assert_eq!(
        rig.states(),
        ["checking", "available", "checking", "available"]
    );
}

/// Runs `wait` on its own thread and fails the test if it does not return in time: a
/// deadlock must fail the test, not hang the suite.
fn returns_within(seconds: u64, wait: impl FnOnce() + Send + 'static) {
    let (done, finished) = channel();
    std::thread::spawn(move || {
        wait();
        let _ = done.send(());
    });
    assert!(
        finished
            .recv_timeout(std::time::Duration::from_secs(seconds))
            .is_ok(),
        "still waiting after {seconds} s: a deadlock"
    );
}

#[test]
fn a_failed_check_leaves_the_app_ready_for_the_next() {
    let rig = Arc::new(rig(Decision::Update, MemoryStore::default()));
    rig.updater.failing_checks.store(true, Ordering::SeqCst);
    rig.send("home/clock1/command", "check");
    let waiting = Arc::clone(&rig);
    returns_within(30, move || waiting.app.wait_idle());
    assert_eq!(rig.states(), ["checking", "error"]);
    assert_eq!(rig.state()["in_progress"], false);
    // The reason is retained before the error status goes out, so whoever the status
    // wakes finds it.
    let log = rig.recorder.0.lock().unwrap().clone();
    let at = |topic: &str, part: &str| {
        log.iter()
            .position(|(t, p, _)| t == topic && p.contains(part))
            .unwrap_or_else(|| panic!("no {part} on {topic}"))
    };
    assert!(
        at("home/clock1/ota/attributes", "\"last_error\"")
            < at("home/clock1/ota/progress", "\"error\""),
        "{log:?}"
    );
    // A reconnect and the next command are served.
    let reconnecting = Arc::clone(&rig);
    returns_within(30, move || reconnecting.app.on_connect());
    rig.updater.failing_checks.store(false, Ordering::SeqCst);
    rig.send("home/clock1/command", "check");
    rig.app.wait_idle();
    assert_eq!(rig.states().last().unwrap(), "available");
}

#[test]
fn a_cancel_during_the_check_stops_the_install_asked_for() {
    let rig = rig(Decision::Update, MemoryStore::default());
    rig.updater.slow_checks.store(true, Ordering::SeqCst);
    rig.send("home/clock1/command", "install");
    rig.wait_for_state("checking");
    rig.send("home/clock1/command", "cancel");
    rig.tick(1);
    rig.app.wait_idle();
    assert_eq!(rig.updater.installs.load(Ordering::SeqCst), 0);
    assert_eq!(rig.states().last().unwrap(), "cancelled");
    assert_eq!(rig.state()["in_progress"], false);
}
