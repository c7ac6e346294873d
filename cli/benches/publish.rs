//! Publishing speed, reported as ratios measured in one run on the same local servers:
//! both targets together against the slower target alone (the goal is <= 1.15, since
//! they run in parallel), and clockrel's R2 upload against `rclone copy` of the same
//! files to the same S3 server.
//!
//! `cargo bench -p clockrel --bench publish`; needs Debian's `rclone`.
//! `CLOCKREL_BENCH_ROUNDS` sets the number of rounds (default 5); medians are reported.
#![allow(clippy::unwrap_used)] // a benchmark that cannot unwrap has failed, and says where

#[path = "../tests/common/mod.rs"]
mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::world::World;
use testkit::FirmwareElf;

/// A realistic word-clock image: about 1.5 MiB.
const PAYLOAD: u32 = 1536 * 1024;
const GOAL: f64 = 1.15;

fn main() {
    if Command::new("rclone").arg("version").output().is_err() {
        eprintln!("the publish benchmark compares against rclone: apt-get install rclone");
        std::process::exit(2);
    }
    let rounds: usize = std::env::var("CLOCKREL_BENCH_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(5);
    let (mut github, mut r2, mut both, mut rclone) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for round in 0..rounds {
        github.push(time_publish(&["--only", "github"]));
        r2.push(time_publish(&["--only", "r2"]));
        both.push(time_publish(&[]));
        rclone.push(time_rclone());
        eprintln!("round {}/{rounds} done", round + 1);
    }
    let (github, r2, both, rclone) = (median(github), median(r2), median(both), median(rclone));
    let slower = github.max(r2);
    let parallel = both.as_secs_f64() / slower.as_secs_f64();
    let image = common::app_image(&release_elf()).len();
    println!("publish wall time, median of {rounds} rounds, {image} byte image, local servers");
    println!(
        "  github only                 {:>8.3} s",
        github.as_secs_f64()
    );
    println!("  r2 only                     {:>8.3} s", r2.as_secs_f64());
    println!(
        "  both                        {:>8.3} s",
        both.as_secs_f64()
    );
    println!(
        "  both / slower single        {parallel:>8.2}   goal <= {GOAL}: {}",
        if parallel <= GOAL { "met" } else { "MISSED" }
    );
    println!("R2 upload of the same three files to the same S3 server");
    println!("  clockrel publish --only r2  {:>8.3} s", r2.as_secs_f64());
    println!(
        "  rclone copy                 {:>8.3} s",
        rclone.as_secs_f64()
    );
    println!(
        "  clockrel / rclone           {:>8.2}",
        r2.as_secs_f64() / rclone.as_secs_f64()
    );
}

fn release_elf() -> FirmwareElf {
    FirmwareElf::new("2.9.0").payload_len(PAYLOAD)
}

/// A fresh world with the release staged, so every measured publish does all its work.
fn staged_world() -> World {
    let world = World::new();
    let out = world.repo.stage("v2.9.0", &release_elf());
    assert_eq!(out.status.code(), Some(0), "{}", common::stdout(&out));
    world
}

fn time_publish(only: &[&str]) -> Duration {
    let world = staged_world();
    let mut args = vec!["publish", "--no-verify"];
    args.extend_from_slice(only);
    let started = Instant::now();
    let out = world.run(&args, &[]);
    let elapsed = started.elapsed();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        common::stdout(&out),
        common::stderr(&out)
    );
    elapsed
}

fn time_rclone() -> Duration {
    let world = staged_world();
    let remote = format!(
        ":s3,provider=Other,endpoint='{}',access_key_id={},secret_access_key={},region=auto,force_path_style=true:{}",
        world.s3.endpoint(),
        world.s3.access_key(),
        world.s3.secret_key(),
        world.s3.bucket()
    );
    let started = Instant::now();
    let out = Command::new("rclone")
        .args(["copy", "--s3-no-check-bucket", "--config", "/dev/null"])
        .arg(world.repo.root().join("ota_files"))
        .arg(&remote)
        // rclone fails when a custom CA bundle is set for the AWS SDKs.
        .env_remove("AWS_CA_BUNDLE")
        .output()
        .unwrap();
    let elapsed = started.elapsed();
    assert!(
        out.status.success(),
        "rclone failed: {}",
        common::stderr(&out)
    );
    for name in ["wordclock-v2.9.0.bin", "wordclock.bin", "version.json"] {
        let staged = std::fs::read(world.repo.root().join("ota_files").join(name)).unwrap();
        assert_eq!(
            world.s3.object(name),
            Some(staged),
            "rclone did not copy {name}"
        );
    }
    elapsed
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}
