//! `clockrel release` against the same real local peers as `publish` (git's
//! http-backend with the raw host, the S3 server, the recorded GitHub API), from a
//! firmware repository whose build command stands in for cargo: it copies an ELF the
//! test kit made for the version it is given in CLOCKREL_VERSION.
#![allow(clippy::unwrap_used)] // a test that cannot unwrap has failed, and says where

mod common;

use std::process::Output;

use common::world::{World, only, outcomes, target};
use common::{stderr, stdout};
use testkit::FirmwareElf;

/// A world whose repository is ready for `release`: a firmware Cargo.toml at 0.1.0, a
/// build command, ELFs for `versions`, and everything committed but the secrets.
/// A repository whose releases bump the version alone: each one's patch from the last
/// is a few percent of the image.
fn world(versions: &[&str]) -> World {
    world_of(versions, |version| {
        FirmwareElf::new(version).code_of("wordclock")
    })
}

/// A repository whose builds of `versions` are made by `build`.
fn world_of(versions: &[&str], build: fn(&str) -> FirmwareElf) -> World {
    let world = World::new();
    let root = world.repo.root().to_owned();
    std::fs::write(
        root.join("firmware/Cargo.toml"),
        "[package]\nname = \"wordclock\"\nversion = \"0.1.0\" # set by clockrel release\nedition = \"2024\"\n",
    )
    .unwrap();
    std::fs::create_dir_all(root.join("elfs")).unwrap();
    for version in versions {
        std::fs::write(
            root.join(format!("elfs/wordclock-{version}.elf")),
            build(version).build(),
        )
        .unwrap();
    }
    std::fs::write(root.join(".gitignore"), "secrets/\nelfs/\nbuild/\n").unwrap();
    let config = std::fs::read_to_string(root.join("clockrel.toml")).unwrap();
    std::fs::write(
        root.join("clockrel.toml"),
        config.replace(
            "[firmware]\n",
            "[firmware]\nversion_file = \"firmware/Cargo.toml\"\nbuild = \"test ! -e build/broken && mkdir -p build && cp elfs/wordclock-$CLOCKREL_VERSION.elf build/wordclock.elf && echo \\\"$CLOCKREL_GITHUB_BASE $CLOCKREL_R2_BASE\\\" > build/bases && env > build/env\"\nelf = \"build/wordclock.elf\"\n",
        ),
    )
    .unwrap();
    world.run_git(&["add", "-A"]);
    world.run_git(&["commit", "-q", "-m", "firmware"]);
    world
}

fn release(world: &World, args: &[&str]) -> (Output, serde_json::Value) {
    let mut all = vec!["--json", "release"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--key", "secrets/release.key"]);
    let out = world.run(&all, &[]);
    let report = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}):\n{}\n{}", stdout(&out), stderr(&out)));
    (out, report)
}

fn git(world: &World, args: &[&str]) -> String {
    stdout(&world.run_git(args)).trim().to_owned()
}

/// Every step of the report, local then per target, as (where, typed task).
fn tasks(report: &serde_json::Value) -> Vec<(String, serde_json::Value)> {
    let mut all: Vec<(String, serde_json::Value)> = report["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| ("local".to_owned(), s["task"].clone()))
        .collect();
    for t in report["publish"]["targets"].as_array().unwrap() {
        let name = t["target"].as_str().unwrap().to_owned();
        all.extend(
            t["steps"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| (name.clone(), s["task"].clone())),
        );
    }
    all
}

fn local_outcomes(report: &serde_json::Value) -> Vec<String> {
    report["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["outcome"].as_str().unwrap().to_owned())
        .collect()
}

/// What a release leaves behind, to compare a re-run's against.
fn footprint(world: &World) -> (String, String, usize, String) {
    (
        git(world, &["rev-parse", "HEAD"]),
        git(world, &["tag", "--list"]),
        git(world, &["rev-list", "--count", "HEAD"])
            .parse()
            .unwrap(),
        git(world, &["status", "--porcelain"]),
    )
}

#[test]
fn a_release_bumps_builds_stages_commits_tags_publishes_and_verifies() {
    let world = world(&["1.0.0"]);
    let before: usize = git(&world, &["rev-list", "--count", "HEAD"])
        .parse()
        .unwrap();
    let (out, report) = release(&world, &["v1.0.0"]);
    assert_eq!(out.status.code(), Some(0), "{report:#}\n{}", stderr(&out));
    assert_eq!(report["verdict"], "published", "{report:#}");
    assert_eq!(report["publish"]["verification"]["ok"], true);
    // The version as every command's report gives it (stage's, verify's), and the tag.
    for report in [&report, &report["publish"]] {
        assert_eq!(report["version"], "1.0.0");
        assert_eq!(report["tag"], "v1.0.0");
    }

    // One release commit holding the bump and ota_files/, and its tag, on both ends.
    let (head, tags, count, status) = footprint(&world);
    assert_eq!(count, before + 1);
    assert_eq!(tags, "v1.0.0");
    assert_eq!(status, "", "the tree is clean after the release");
    let changed = git(&world, &["show", "--name-only", "--format=", "HEAD"]);
    assert_eq!(
        changed.lines().collect::<Vec<_>>(),
        [
            "firmware/Cargo.toml",
            "ota_files/version.json",
            "ota_files/wordclock-v1.0.0.bin",
            "ota_files/wordclock.bin"
        ]
    );
    let cargo = std::fs::read_to_string(world.repo.root().join("firmware/Cargo.toml")).unwrap();
    assert!(
        cargo.contains("version = \"1.0.0\" # set by clockrel release"),
        "{cargo}"
    );
    assert_eq!(world.git.head_of("refs/heads/main"), Some(head.clone()));
    assert_eq!(world.git.tag_target("v1.0.0"), Some(head));
    // Devices' URLs serve the signed bytes.
    assert_eq!(
        world.s3.object("wordclock-v1.0.0.bin").unwrap(),
        world.staged("wordclock-v1.0.0.bin")
    );
    assert_eq!(world.repo.manifest().version.to_string(), "1.0.0");
    // The build never sees a secret: a build script could print or send it.
    let env = std::fs::read_to_string(world.repo.root().join("build/env")).unwrap();
    assert!(env.contains("CLOCKREL_VERSION=1.0.0"), "{env}");
    for secret in [
        common::world::TOKEN,
        world.s3.secret_key(),
        world.s3.access_key(),
    ] {
        assert!(!env.contains(secret), "the build saw a secret:\n{env}");
    }
    // The build was told where the sources serve the release, to build it in.
    let bases = std::fs::read_to_string(world.repo.root().join("build/bases")).unwrap();
    assert_eq!(
        bases.trim(),
        format!(
            "{}/acme/wordclock/main/ota_files/ {}/",
            world.git.raw_url().trim_end_matches('/'),
            world.s3.public_url().trim_end_matches('/')
        )
    );
}

/// The step of the report that did `kind`, locally or on `target`.
fn step<'r>(steps: &'r serde_json::Value, what: &str) -> &'r serde_json::Value {
    steps
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["what"].as_str().unwrap().contains(what))
        .unwrap_or_else(|| panic!("no step {what} in {steps:#}"))
}

#[test]
fn a_patch_release_publishes_the_patch_from_the_last_release_beside_its_image() {
    let world = world(&["1.0.0", "1.1.0"]);
    let (out, _) = release(&world, &["v1.0.0"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let (plan_out, plan) = release(&world, &["v1.1.0", "--dry-run"]);
    assert_eq!(plan_out.status.code(), Some(0));
    let (out, report) = release(&world, &["v1.1.0"]);
    assert_eq!(out.status.code(), Some(0), "{report:#}\n{}", stderr(&out));
    assert_eq!(
        tasks(&report),
        tasks(&plan),
        "the dry run planned the patch"
    );

    let name = "wordclock-v1.0.0-to-v1.1.0.patch";
    let stage = step(&report["steps"], "check, sign and stage");
    assert!(
        stage["detail"]
            .as_str()
            .unwrap()
            .starts_with("patch from v1.0.0 ("),
        "{stage:#}"
    );
    let (old, new, patch) = (
        world.staged("wordclock-v1.0.0.bin"),
        world.staged("wordclock-v1.1.0.bin"),
        world.staged(name),
    );
    // Listed in the signed manifest by the base's appended digest, as the header names it.
    let manifest = world.repo.manifest();
    assert_eq!(manifest.patches.len(), 1);
    let listed = &manifest.patches[0];
    assert_eq!(listed.from.to_string(), "1.0.0");
    assert_eq!(listed.file, name);
    assert_eq!(listed.size, patch.len() as u64);
    assert_eq!(listed.sha256, ota_core::Sha256::of(&patch));
    assert_eq!(listed.base_digest.as_bytes()[..], old[old.len() - 32..]);
    assert_eq!(patch[4..36], old[old.len() - 32..]);
    assert!(
        patch.len() * 100 < new.len() * 3,
        "a version bump's patch is {} of {} bytes",
        patch.len(),
        new.len()
    );
    // detools, the format's own implementation, turns the old image into the new one.
    assert_eq!(testkit::detools::apply_patch(&old, &patch[64..]), new);

    // Committed with the release, on R2 and as a release asset, before each manifest.
    let changed = git(&world, &["show", "--name-only", "--format=", "HEAD"]);
    assert!(
        changed.lines().any(|l| l == format!("ota_files/{name}")),
        "{changed}"
    );
    assert_eq!(world.s3.object(name).unwrap(), patch);
    assert_eq!(world.api.upload_count("v1.1.0", name), 1);
    for target in ["github", "r2"] {
        let steps = &target_of(&report, target)["steps"];
        let whats: Vec<&str> = steps
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["what"].as_str().unwrap())
            .collect();
        // The manifest's own step is its last mention (R2 checks the bucket's first).
        let at = |needle: &str| whats.iter().rposition(|w| w.contains(needle)).unwrap();
        assert!(at(name) < at("version.json"), "{target}: {whats:?}");
        assert_eq!(step(steps, name)["outcome"], "done", "{target}");
    }
    // Verified on both sources as devices read them.
    for served in report["publish"]["verification"]["sources"]
        .as_array()
        .unwrap()
    {
        assert!(
            served["detail"]
                .as_str()
                .unwrap()
                .ends_with("and its patch"),
            "{served:#}"
        );
    }
}

fn target_of<'r>(report: &'r serde_json::Value, name: &str) -> &'r serde_json::Value {
    target(&report["publish"], name)
}

#[test]
fn a_patch_no_smaller_than_the_limit_is_not_made_and_its_planned_steps_say_so() {
    // Another build, not a version bump: its patch would be most of the image.
    let world = world_of(&["1.0.0", "1.1.0"], FirmwareElf::new);
    let (out, _) = release(&world, &["v1.0.0"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let (_, plan) = release(&world, &["v1.1.0", "--dry-run"]);
    let (out, report) = release(&world, &["v1.1.0"]);
    assert_eq!(out.status.code(), Some(0), "{report:#}\n{}", stderr(&out));
    assert_eq!(tasks(&report), tasks(&plan));
    let stage = step(&report["steps"], "check, sign and stage");
    let detail = stage["detail"].as_str().unwrap();
    assert!(
        detail.starts_with("no patch from v1.0.0: the patch would be")
            && detail.ends_with("not under the 50 % of [delta] max_percent"),
        "{detail}"
    );
    let name = "wordclock-v1.0.0-to-v1.1.0.patch";
    assert!(world.repo.manifest().patches.is_empty());
    assert!(world.s3.object(name).is_none());
    for target in ["github", "r2"] {
        let skipped = step(&target_of(&report, target)["steps"], name);
        assert_eq!(skipped["outcome"], "skipped", "{target}");
        assert!(skipped["why"].as_str().unwrap().contains("is not staged"));
    }
    assert_eq!(report["verdict"], "published");
}

#[test]
fn a_dry_run_touches_nothing_and_lists_the_steps_the_run_records() {
    let world = world(&["1.0.0"]);
    let before = footprint(&world);
    let cargo = std::fs::read(world.repo.root().join("firmware/Cargo.toml")).unwrap();
    let (out, plan) = release(&world, &["v1.0.0", "--dry-run"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(plan["verdict"], "planned");
    assert_eq!(footprint(&world), before);
    assert_eq!(
        std::fs::read(world.repo.root().join("firmware/Cargo.toml")).unwrap(),
        cargo
    );
    assert!(world.repo.ota_files().is_empty());
    assert_eq!(world.git.tag_target("v1.0.0"), None);
    assert!(world.s3.object("version.json").is_none());

    let text = world.run(
        &[
            "release",
            "v1.0.0",
            "--dry-run",
            "--key",
            "secrets/release.key",
        ],
        &[],
    );
    for needle in [
        "plan for releasing v1.0.0",
        "would          preflight: no changes in the working tree but the release's",
        "would          set version 1.0.0 in firmware/Cargo.toml",
        "would          build: sh -c",
        "would          check, sign and stage v1.0.0 from the ELF",
        "would          commit firmware/Cargo.toml, ota_files/ on main for v1.0.0",
        "would          tag v1.0.0 (annotated) at the release commit",
        "would          push main to",
        "would          put s3://wordclock-ota/version.json",
    ] {
        assert!(
            stdout(&text).contains(needle),
            "plan lacks `{needle}`:\n{}",
            stdout(&text)
        );
    }

    let (out, report) = release(&world, &["v1.0.0"]);
    assert_eq!(out.status.code(), Some(0), "{report:#}");
    assert_eq!(
        tasks(&report),
        tasks(&plan),
        "the run walked the plan, step by step"
    );
}

#[test]
fn a_rerun_after_a_failure_at_each_step_finishes_once() {
    let world = world(&["1.0.0", "1.1.0"]);
    let (out, _) = release(&world, &["v1.0.0"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));

    // The build fails: nothing is staged, committed or published.
    let broken = world.repo.root().join("build/broken");
    std::fs::create_dir_all(broken.parent().unwrap()).unwrap();
    std::fs::write(&broken, b"").unwrap();
    let (out, report) = release(&world, &["v1.1.0"]);
    assert_eq!(out.status.code(), Some(1), "{report:#}");
    assert_eq!(report["verdict"], "stopped");
    assert_eq!(world.repo.manifest().version.to_string(), "1.0.0");
    assert!(git(&world, &["tag", "--list"]) == "v1.0.0");
    std::fs::remove_file(&broken).unwrap();

    // R2 is down: GitHub gets the release, R2 not (partly published).
    world.s3.stop();
    let (out, report) = release(&world, &["v1.1.0", "--no-verify"]);
    assert_eq!(out.status.code(), Some(5), "{report:#}");
    let after_partial = footprint(&world);
    world.s3.restart();

    // The re-run: nothing bumped, built, committed or tagged again; R2 finished.
    let (plan_out, plan) = release(&world, &["v1.1.0", "--dry-run"]);
    assert_eq!(plan_out.status.code(), Some(0));
    let (out, report) = release(&world, &["v1.1.0"]);
    assert_eq!(out.status.code(), Some(0), "{report:#}\n{}", stderr(&out));
    assert_eq!(tasks(&report), tasks(&plan));
    assert_eq!(footprint(&world), after_partial, "one commit, one tag");
    let outcomes_here = local_outcomes(&report);
    assert!(
        only(&outcomes_here, &["checked", "already-there"]),
        "{outcomes_here:?}"
    );
    let github = outcomes(target(&report["publish"], "github"));
    assert!(
        only(&github, &["already-there"]),
        "{github:?}\n{:#}",
        report["publish"]
    );
    // R2 waited for GitHub's push, checked the bucket, then put what was missing: the
    // image, the patch from v1.0.0, the alias and the manifest.
    assert_eq!(
        outcomes(target(&report["publish"], "r2")),
        ["checked", "checked", "done", "done", "done", "done"]
    );
    let bumps = git(&world, &["log", "--format=%s", "--", "firmware/Cargo.toml"]);
    assert_eq!(
        bumps.lines().collect::<Vec<_>>(),
        ["Release v1.1.0", "Release v1.0.0", "firmware"]
    );
    assert_eq!(world.api.upload_count("v1.1.0", "wordclock-v1.1.0.bin"), 1);
}

#[test]
fn preflight_names_every_problem_and_changes_nothing() {
    let world = world(&["1.0.0"]);
    let (out, _) = release(&world, &["v1.0.0"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    std::fs::write(world.repo.root().join("README.md"), "edited\n").unwrap();
    let before = footprint(&world);

    let (out, report) = release(&world, &["v0.9.0"]);
    assert_eq!(out.status.code(), Some(3), "{report:#}");
    assert_eq!(report["verdict"], "refused");
    let failed: Vec<String> = report["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["outcome"] == "failed")
        .map(|s| s["why"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(failed.len(), 2, "{failed:?}");
    assert!(failed[0].contains("README.md"), "{failed:?}");
    assert!(
        failed[1].contains("v0.9.0 is not above the last tag, v1.0.0"),
        "{failed:?}"
    );
    assert!(
        local_outcomes(&report).iter().any(|o| o == "not-reached"),
        "the work steps did not run"
    );
    assert_eq!(footprint(&world), before);
    assert_eq!(world.repo.manifest().version.to_string(), "1.0.0");
}

/// Where a failure is injected, and how it is put right before the re-run.
enum Fault {
    /// The build command fails.
    Build,
    /// The build makes an image whose app descriptor says another version: the stage
    /// refuses it.
    Stage,
    /// Another git process holds the index's lock: the commit is made, but the index
    /// cannot follow it.
    Commit,
    /// R2 refuses every PUT for a while.
    R2Put,
    /// The GitHub API fails creating the Release.
    GithubRelease,
    /// An asset upload breaks off.
    ReleaseAsset,
    /// The git server refuses the push (a protected branch).
    Push,
    /// The raw host keeps serving the old branch tip past the verify deadline.
    Verify,
}

#[test]
fn a_failure_at_any_step_then_a_rerun_ends_with_one_commit_one_tag_and_one_bump() {
    for fault in [
        Fault::Build,
        Fault::Stage,
        Fault::Commit,
        Fault::R2Put,
        Fault::GithubRelease,
        Fault::ReleaseAsset,
        Fault::Push,
        Fault::Verify,
    ] {
        let world = world(&["1.0.0"]);
        let root = world.repo.root().to_owned();
        let commits: usize = git(&world, &["rev-list", "--count", "HEAD"])
            .parse()
            .unwrap();
        let elf = root.join("elfs/wordclock-1.0.0.elf");
        let mut args = vec!["v1.0.0"];
        let expected_exit = match fault {
            Fault::Build => {
                std::fs::create_dir_all(root.join("build")).unwrap();
                std::fs::write(root.join("build/broken"), b"").unwrap();
                1
            }
            Fault::Stage => {
                std::fs::write(&elf, FirmwareElf::new("0.9.9").build()).unwrap();
                3
            }
            Fault::Commit => {
                std::fs::write(root.join(".git/index.lock"), b"").unwrap();
                1
            }
            Fault::R2Put => {
                // The SDK tries each request four times: all four fail.
                world.s3.fail_next_method("PUT", 4, 503);
                5
            }
            Fault::GithubRelease => {
                world.api.fail_next_method("POST", 1, 500);
                5
            }
            Fault::ReleaseAsset => {
                world.api.interrupt_next_upload();
                5
            }
            Fault::Push => {
                world.git.protect_branch("main");
                6
            }
            Fault::Verify => {
                world.git.set_stale_reads(usize::MAX);
                args.extend(["--deadline", "1"]);
                3
            }
        };
        let (out, report) = release(&world, &args);
        let which = report["verdict"].clone();
        assert_eq!(
            out.status.code(),
            Some(expected_exit),
            "{which}: {report:#}"
        );

        // Put right, and run the same command again.
        let _ = std::fs::remove_file(root.join("build/broken"));
        let _ = std::fs::remove_file(root.join(".git/index.lock"));
        std::fs::write(&elf, FirmwareElf::new("1.0.0").build()).unwrap();
        world.git.set_stale_reads(0);
        world.git.unprotect_branches();
        let (out, report) = release(&world, &["v1.0.0"]);
        assert_eq!(out.status.code(), Some(0), "{report:#}\n{}", stderr(&out));

        assert_eq!(
            git(&world, &["rev-list", "--count", "HEAD"]),
            (commits + 1).to_string(),
            "one release commit"
        );
        assert_eq!(git(&world, &["tag", "--list"]), "v1.0.0");
        assert_eq!(
            git(&world, &["status", "--porcelain"]),
            "",
            "the index and work tree follow the release commit"
        );
        let bumps = git(&world, &["log", "--format=%s", "--", "firmware/Cargo.toml"]);
        assert_eq!(
            bumps.lines().collect::<Vec<_>>(),
            ["Release v1.0.0", "firmware"],
            "the version was bumped once"
        );
        let image = world.staged("wordclock-v1.0.0.bin");
        assert_eq!(world.s3.object("wordclock-v1.0.0.bin").unwrap(), image);
        let assets = world.api.assets("v1.0.0");
        assert!(
            assets
                .iter()
                .any(|(name, bytes)| name == "wordclock-v1.0.0.bin" && *bytes == image),
            "{:?}",
            assets.iter().map(|(n, _)| n).collect::<Vec<_>>()
        );
        assert_eq!(
            world.api.upload_count("v1.0.0", "wordclock-v1.0.0.bin"),
            1 + matches!(fault, Fault::ReleaseAsset) as usize
        );
    }
}

#[test]
fn an_elf_built_elsewhere_is_released_without_a_build_step() {
    let world = world(&["1.0.0"]);
    let elf = world.repo.root().join("elfs/wordclock-1.0.0.elf");
    let args = ["v1.0.0", "--elf", elf.to_str().unwrap()];
    let (_, plan) = release(&world, &[&args[..], &["--dry-run"]].concat());
    assert!(
        !tasks(&plan).iter().any(|(_, t)| t["kind"] == "build"),
        "no build step with --elf"
    );
    let (out, report) = release(&world, &args);
    assert_eq!(out.status.code(), Some(0), "{report:#}\n{}", stderr(&out));
    assert_eq!(tasks(&report), tasks(&plan));
    assert!(
        !world.repo.root().join("build").exists(),
        "the build command never ran"
    );
    // Again: everything is there.
    let (out, report) = release(&world, &args);
    assert_eq!(out.status.code(), Some(0), "{report:#}");
    assert!(
        only(&local_outcomes(&report), &["checked", "already-there"]),
        "{report:#}"
    );
}

#[test]
fn a_config_below_the_work_trees_root_is_refused_before_any_work() {
    let dir = tempfile::tempdir().unwrap();
    git2::Repository::init(dir.path()).unwrap();
    let root = dir.path().join("fw");
    let repo = common::repo::Repo::create(
        dir,
        root,
        "[sources.github]\nrepository = \"acme/wordclock\"\n",
    );
    std::fs::write(
        repo.root().join("firmware/Cargo.toml"),
        "[package]\nname = \"wordclock\"\nversion = \"0.1.0\"\n",
    )
    .unwrap();
    let image = repo.image(&FirmwareElf::new("1.0.0"));
    let out = repo.run(
        &[
            "release",
            "v1.0.0",
            "--image",
            image.to_str().unwrap(),
            "--key",
            "secrets/release.key",
        ],
        &[("GITHUB_TOKEN", "test-token-0123456789abcdef")],
    );
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    assert!(
        stderr(&out).contains("is not at the root of its git work tree"),
        "{}",
        stderr(&out)
    );
    assert!(repo.ota_files().is_empty(), "nothing was staged");
}

#[test]
fn a_push_github_refuses_leaves_r2_untouched() {
    let world = world(&["1.0.0"]);
    world.git.protect_branch("main");
    let (out, report) = release(&world, &["v1.0.0"]);
    assert_eq!(out.status.code(), Some(6), "{report:#}");
    let r2 = target(&report["publish"], "r2");
    assert_eq!(
        outcomes(r2),
        [
            "failed",
            "not-reached",
            "not-reached",
            "not-reached",
            "not-reached"
        ],
        "{r2:#}"
    );
    for name in ["wordclock-v1.0.0.bin", "wordclock.bin", "version.json"] {
        assert!(world.s3.object(name).is_none(), "R2 got {name}");
    }

    // Work goes on, unpushed, before the re-run: the re-run publishes the release
    // commit and leaves that work on this machine.
    let release_commit = git(&world, &["rev-parse", "v1.0.0^{commit}"]);
    std::fs::write(world.repo.root().join("NOTES.md"), "work in progress\n").unwrap();
    world.run_git(&["add", "NOTES.md"]);
    world.run_git(&["commit", "-qm", "work in progress"]);
    world.git.unprotect_branches();
    let (out, report) = release(&world, &["v1.0.0"]);
    assert_eq!(out.status.code(), Some(0), "{report:#}");
    assert_eq!(world.git.head_of("main").unwrap(), release_commit);
    assert_eq!(world.git.tag_target("v1.0.0").unwrap(), release_commit);
}

#[test]
fn an_unreadable_elf_is_bad_input_and_says_which_file() {
    let world = world(&["1.0.0"]);
    let (out, report) = release(&world, &["v1.0.0", "--elf", "no-such.elf"]);
    assert_eq!(out.status.code(), Some(4), "{report:#}");
    assert_eq!(report["verdict"], "stopped");
    let failed = report["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["outcome"] == "failed")
        .unwrap();
    assert_eq!(failed["task"]["kind"], "stage");
    assert!(
        failed["why"].as_str().unwrap().contains("no-such.elf"),
        "{failed:#}"
    );
    assert!(world.repo.ota_files().is_empty());
}

#[test]
fn a_version_file_with_more_than_the_bump_in_it_is_refused() {
    let world = world(&["1.0.0"]);
    let cargo = world.repo.root().join("firmware/Cargo.toml");
    let text = std::fs::read_to_string(&cargo).unwrap();
    std::fs::write(&cargo, format!("{text}\n[dependencies]\nlog = \"0.4\"\n")).unwrap();
    let (out, report) = release(&world, &["v1.0.0"]);
    assert_eq!(out.status.code(), Some(3), "{report:#}");
    let why = report["steps"][0]["why"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(why.contains("firmware/Cargo.toml"), "{report:#}");
    // The bump alone is the release's own change.
    std::fs::write(&cargo, text.replace("\"0.1.0\"", "\"1.0.0\"")).unwrap();
    let (out, report) = release(&world, &["v1.0.0"]);
    assert_eq!(out.status.code(), Some(0), "{report:#}");
}

/// A tag push, as a team that releases from CI makes one: the version set and committed,
/// that commit tagged, branch and tag pushed. Then the checkout GitHub Actions makes of
/// it: the tag's commit, detached, and no local branch, only the remote's. Returns the
/// tagged commit.
fn push_a_tag(world: &World, version: &str) -> String {
    let cargo = world.repo.root().join("firmware/Cargo.toml");
    let text = std::fs::read_to_string(&cargo).unwrap();
    std::fs::write(
        &cargo,
        text.replace("version = \"0.1.0\"", &format!("version = \"{version}\"")),
    )
    .unwrap();
    world.run_git(&["commit", "-qam", &format!("Version {version}")]);
    let tag = format!("v{version}");
    world.run_git(&["tag", "-a", &tag, "-m", &tag]);
    world.run_git(&["push", "-q", "origin", "main", &tag]);
    world.run_git(&["checkout", "-q", "--detach", &tag]);
    world.run_git(&["fetch", "-q", "origin"]);
    world.run_git(&["branch", "-q", "-D", "main"]);
    git(world, &["rev-parse", "HEAD"])
}

/// `clockrel release` as the workflow runs it on a tag push: no VERSION, the tag in
/// GitHub's variables.
fn release_pushed(world: &World, tag: &str, extra: &[&str]) -> (Output, serde_json::Value) {
    let mut all = vec!["--json", "release"];
    all.extend_from_slice(extra);
    all.extend_from_slice(&["--key", "secrets/release.key"]);
    let out = world.run(
        &all,
        &[
            ("GITHUB_REF_TYPE", "tag"),
            ("GITHUB_REF_NAME", tag),
            ("CI", "true"),
        ],
    );
    let report = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}):\n{}\n{}", stdout(&out), stderr(&out)));
    (out, report)
}

#[test]
fn a_pushed_tag_is_released_as_it_is_with_ota_files_committed_after_it() {
    let world = world(&["1.0.0"]);
    let source = push_a_tag(&world, "1.0.0");

    let before = footprint(&world);
    let (out, plan) = release_pushed(&world, "v1.0.0", &["--dry-run"]);
    assert_eq!(out.status.code(), Some(0), "{plan:#}");
    assert_eq!(
        footprint(&world),
        before,
        "the dry run changed the repository"
    );

    let (out, report) = release_pushed(&world, "v1.0.0", &[]);
    assert_eq!(out.status.code(), Some(0), "{report:#}\n{}", stderr(&out));
    assert_eq!(report["verdict"], "published", "{report:#}");
    assert_eq!(report["publish"]["verification"]["ok"], true);
    assert_eq!(
        tasks(&plan),
        tasks(&report),
        "the dry run listed other steps"
    );

    // The tag stays on the source; the release commit follows it on the branch and
    // adds ota_files/ alone.
    assert_eq!(world.git.tag_target("v1.0.0").unwrap(), source);
    let release_commit = world.git.head_of("main").unwrap();
    assert_ne!(release_commit, source);
    assert_eq!(
        git(&world, &["rev-parse", &format!("{release_commit}^")]),
        source
    );
    assert_eq!(
        git(
            &world,
            &["show", "--name-only", "--format=", &release_commit]
        )
        .lines()
        .collect::<Vec<_>>(),
        [
            "ota_files/version.json",
            "ota_files/wordclock-v1.0.0.bin",
            "ota_files/wordclock.bin"
        ]
    );
    assert_eq!(git(&world, &["rev-parse", "main"]), release_commit);
    assert_eq!(
        git(&world, &["rev-parse", "HEAD"]),
        source,
        "HEAD stays at the tag"
    );
    let image = world.staged("wordclock-v1.0.0.bin");
    assert_eq!(world.s3.object("wordclock-v1.0.0.bin").unwrap(), image);
    assert_eq!(world.repo.manifest().version.to_string(), "1.0.0");

    // The same command again, here: everything is there.
    let (out, report) = release_pushed(&world, "v1.0.0", &[]);
    assert_eq!(out.status.code(), Some(0), "{report:#}\n{}", stderr(&out));
    assert!(
        only(&local_outcomes(&report), &["checked", "already-there"]),
        "the re-run did work again: {report:#}"
    );

    // A re-run of the job, on a fresh checkout of the tag (no local branch, the
    // remote's fetched), where another build would make other bytes: it finds the
    // release commit and builds nothing.
    world.run_git(&["checkout", "-q", "-f", "--detach", "v1.0.0"]);
    world.run_git(&["clean", "-qfd", "--", "ota_files"]);
    world.run_git(&["branch", "-q", "-D", "main"]);
    world.run_git(&["fetch", "-q", "origin"]);
    assert!(!world.repo.root().join("ota_files/version.json").exists());
    std::fs::write(
        world.repo.root().join("elfs/wordclock-1.0.0.elf"),
        FirmwareElf::new("1.0.0").secure_version(1).build(),
    )
    .unwrap();
    let (out, report) = release_pushed(&world, "v1.0.0", &[]);
    assert_eq!(out.status.code(), Some(0), "{report:#}\n{}", stderr(&out));
    assert!(
        only(&local_outcomes(&report), &["checked", "already-there"]),
        "the re-run did work again: {report:#}"
    );
    assert_eq!(world.git.head_of("main").unwrap(), release_commit);
    assert_eq!(world.git.tag_target("v1.0.0").unwrap(), source);
    assert_eq!(world.s3.object("wordclock-v1.0.0.bin").unwrap(), image);
    assert_eq!(world.staged("wordclock-v1.0.0.bin"), image);
}

#[test]
fn a_tag_that_does_not_mark_the_source_to_build_is_refused() {
    // The version was never set in the tagged commit.
    let world = world(&["1.0.0"]);
    world.run_git(&["tag", "-a", "v1.0.0", "-m", "v1.0.0"]);
    world.run_git(&["checkout", "-q", "--detach", "v1.0.0"]);
    let before = footprint(&world);
    let (out, report) = release_pushed(&world, "v1.0.0", &[]);
    assert_eq!(out.status.code(), Some(3), "{report:#}");
    let text = report.to_string();
    assert!(
        text.contains("firmware/Cargo.toml says 0.1.0, but the tag is v1.0.0"),
        "{report:#}"
    );
    assert!(
        text.contains("set 1.0.0 in firmware/Cargo.toml"),
        "{report:#}"
    );
    assert_eq!(footprint(&world), before);

    // HEAD elsewhere than the tag: the build would not be the tagged source.
    let world = world_at_tag_behind_head();
    let (out, report) = release_pushed(&world, "v1.0.0", &[]);
    assert_eq!(out.status.code(), Some(3), "{report:#}");
    assert!(
        report.to_string().contains("git checkout v1.0.0"),
        "{report:#}"
    );

    // No VERSION and no tag push: a usage error.
    let out = world.run(
        &["release", "--key", "secrets/release.key"],
        &[("GITHUB_REF_TYPE", "branch"), ("GITHUB_REF_NAME", "main")],
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("clockrel release v2.9.0"),
        "{}",
        stderr(&out)
    );
}

/// A tag pushed for 1.0.0, then a commit on top of it checked out.
fn world_at_tag_behind_head() -> World {
    let world = world(&["1.0.0"]);
    push_a_tag(&world, "1.0.0");
    world.run_git(&["checkout", "-q", "main"]);
    std::fs::write(world.repo.root().join("NOTES.md"), "later\n").unwrap();
    world.run_git(&["add", "NOTES.md"]);
    world.run_git(&["commit", "-qm", "later"]);
    world
}

#[test]
fn a_pushed_tag_with_an_uncommitted_bump_or_off_the_branch_is_refused() {
    // The version set in the work tree but not in the tagged commit: the build would be
    // of a source no commit records.
    let unrecorded = world(&["1.0.0"]);
    unrecorded.run_git(&["tag", "-a", "v1.0.0", "-m", "v1.0.0"]);
    unrecorded.run_git(&["checkout", "-q", "--detach", "v1.0.0"]);
    let text = std::fs::read_to_string(cargo_of(&unrecorded)).unwrap();
    std::fs::write(cargo_of(&unrecorded), text.replace("0.1.0", "1.0.0")).unwrap();
    let (out, report) = release_pushed(&unrecorded, "v1.0.0", &[]);
    assert_eq!(out.status.code(), Some(3), "{report:#}");
    assert!(
        report
            .to_string()
            .contains("changes a release would not commit: firmware/Cargo.toml"),
        "{report:#}"
    );
    assert!(unrecorded.s3.object("version.json").is_none());

    // A tag on a commit that is not on the release branch.
    let world = world(&["1.0.0"]);
    world.run_git(&["checkout", "-q", "-b", "elsewhere"]);
    let text = std::fs::read_to_string(cargo_of(&world)).unwrap();
    std::fs::write(cargo_of(&world), text.replace("0.1.0", "1.0.0")).unwrap();
    world.run_git(&["commit", "-qam", "Version 1.0.0 elsewhere"]);
    world.run_git(&["tag", "-a", "v1.0.0", "-m", "v1.0.0"]);
    world.run_git(&["checkout", "-q", "--detach", "v1.0.0"]);
    let (out, report) = release_pushed(&world, "v1.0.0", &[]);
    assert_eq!(out.status.code(), Some(3), "{report:#}");
    assert!(
        report.to_string().contains("which is not on main"),
        "{report:#}"
    );
}

fn cargo_of(world: &World) -> std::path::PathBuf {
    world.repo.root().join("firmware/Cargo.toml")
}

#[test]
fn another_build_of_a_pushed_tag_is_refused_beside_its_release_commit() {
    let world = world(&["1.0.0"]);
    push_a_tag(&world, "1.0.0");
    let (out, report) = release_pushed(&world, "v1.0.0", &[]);
    assert_eq!(out.status.code(), Some(0), "{report:#}");
    let release_commit = world.git.head_of("main").unwrap();
    let image = world.staged("wordclock-v1.0.0.bin");

    // Someone builds and stages the same version again here, from the same tag: its
    // bytes differ (another build), and must not go out beside the published ones.
    let root = world.repo.root().to_owned();
    std::fs::write(
        root.join("build/wordclock.elf"),
        FirmwareElf::new("1.0.0").secure_version(1).build(),
    )
    .unwrap();
    std::fs::remove_dir_all(root.join("ota_files")).unwrap();
    let out = world.run(
        &[
            "stage",
            "v1.0.0",
            "--elf",
            "build/wordclock.elf",
            "--key",
            "secrets/release.key",
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_ne!(world.staged("wordclock-v1.0.0.bin"), image);

    let (out, report) = release_pushed(&world, "v1.0.0", &[]);
    assert_eq!(out.status.code(), Some(1), "{report:#}");
    assert!(
        report
            .to_string()
            .contains("ota_files/ holds another build of v1.0.0"),
        "{report:#}"
    );
    assert_eq!(world.git.head_of("main").unwrap(), release_commit);
    assert_eq!(world.s3.object("wordclock-v1.0.0.bin").unwrap(), image);
}

#[test]
fn a_release_behind_the_remote_finishes_after_the_hints_pull() {
    let world = world(&["1.0.0"]);
    world.git.advance("main", "CHANGELOG.md", b"someone else\n");
    let (out, report) = release(&world, &["v1.0.0"]);
    assert_eq!(out.status.code(), Some(6), "{report:#}");
    let github = target(&report["publish"], "github");
    assert!(
        github["error"]["hint"]
            .as_str()
            .unwrap_or_default()
            .contains("pull"),
        "{github:#}"
    );
    let release_commit = git(&world, &["rev-parse", "v1.0.0^{commit}"]);

    // Following the hint merges the remote's work over the release commit.
    world.run_git(&["pull", "-q", "--no-rebase", "--no-edit", "origin", "main"]);
    let (out, report) = release(&world, &["v1.0.0"]);
    assert_eq!(out.status.code(), Some(0), "{report:#}\n{}", stderr(&out));
    let merge = git(&world, &["rev-parse", "HEAD"]);
    assert_eq!(world.git.head_of("main").unwrap(), merge);
    assert_eq!(world.git.tag_target("v1.0.0").unwrap(), release_commit);
    assert_eq!(git(&world, &["status", "--porcelain"]), "");
}
