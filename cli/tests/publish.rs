//! `clockrel publish` and `clockrel verify` against real local peers: an S3 server for
//! R2, git's own smart-HTTP server and a raw-file server for GitHub, and recorded GitHub
//! REST responses for the release.
#![allow(clippy::unwrap_used)] // a test that cannot unwrap has failed, and says where

mod common;

use std::os::unix::ffi::OsStrExt as _;

use common::repo::Repo;
use common::world::{World, only, outcomes, target};
use common::{stderr, stdout};
use ota_core::Manifest;
use testkit::FirmwareElf;

#[test]
fn dry_run_prints_the_plan_and_touches_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_owned();
    let sources = "[sources.github]\nrepository = \"acme/wordclock\"\n\n[sources.r2]\npublic_url = \"https://ota.example.com\"\nbucket = \"wordclock-ota\"\naccount_id = \"0123abcd\"\nprefix = \"fw/\"\n";
    let repo = Repo::create(dir, root, sources);
    let out = repo.stage("v2.9.0", &FirmwareElf::new("2.9.0"));
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    let before = repo.ota_files();

    // No credentials are needed to plan.
    let out = repo.run(&["publish", "--dry-run"], &[]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    let text = stdout(&out);
    for needle in [
        "plan for publishing v2.9.0",
        "would          commit ota_files/ on main for v2.9.0",
        "would          push main to https://github.com/acme/wordclock.git",
        "would          tag v2.9.0 (annotated) at the release commit",
        "would          push v2.9.0 to https://github.com/acme/wordclock.git",
        "would          GitHub Release v2.9.0 in acme/wordclock",
        "would          release asset wordclock-v2.9.0.bin",
        "would          release asset version.json",
        "would          check s3://wordclock-ota/fw/version.json serves nothing newer",
        "would          put s3://wordclock-ota/fw/wordclock-v2.9.0.bin",
        "would          put s3://wordclock-ota/fw/version.json",
        "https://raw.githubusercontent.com/acme/wordclock/main/ota_files/version.json",
        "https://ota.example.com/fw/version.json",
        "dry run: nothing was touched",
    ] {
        assert!(text.contains(needle), "plan lacks `{needle}`:\n{text}");
    }
    // The order devices depend on: image, alias, manifest last.
    let image = text
        .find("put s3://wordclock-ota/fw/wordclock-v2.9.0.bin")
        .unwrap();
    let alias = text
        .find("put s3://wordclock-ota/fw/wordclock.bin")
        .unwrap();
    let manifest = text.find("put s3://wordclock-ota/fw/version.json").unwrap();
    assert!(image < alias && alias < manifest, "{text}");
    assert_eq!(repo.ota_files(), before);

    let out = repo.run(&["--json", "publish", "--dry-run", "--only", "r2"], &[]);
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(plan["verdict"], "planned");
    assert_eq!(plan["targets"].as_array().unwrap().len(), 1);
    assert_eq!(plan["targets"][0]["target"], "r2");
}

#[test]
fn publish_refuses_before_touching_anything_when_credentials_are_missing() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_owned();
    let sources = "[sources.github]\nrepository = \"acme/wordclock\"\n\n[sources.r2]\npublic_url = \"https://ota.example.com\"\nbucket = \"b\"\naccount_id = \"0123abcd\"\n";
    let repo = Repo::create(dir, root, sources);
    repo.stage("v2.9.0", &FirmwareElf::new("2.9.0"));
    let out = repo.run(
        &["publish"],
        &[("GITHUB_TOKEN", "test-token-0123456789abcdef")],
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).starts_with(
            "error: r2: credentials: R2_ACCESS_KEY_ID or AWS_ACCESS_KEY_ID is not set"
        ),
        "{}",
        stderr(&out)
    );
    assert!(stderr(&out).contains("--only"), "{}", stderr(&out));
    assert!(!stderr(&out).contains("test-token-0123456789abcdef"));
}

#[test]
fn nothing_staged_is_bad_input() {
    let repo = Repo::new();
    let out = repo.run(&["publish", "--dry-run"], &[]);
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("nothing is staged"),
        "{}",
        stderr(&out)
    );
    assert!(stderr(&out).contains("clockrel stage"), "{}", stderr(&out));
}

#[test]
fn publish_puts_the_release_on_both_sources_and_verifies_them() {
    let world = World::new();
    world.stage("v2.9.0", 1);
    let (out, report) = world.publish(&[]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    assert_eq!(report["verdict"], "published");

    // R2: every object, with the staged bytes; its manifest sends the existing fleet to
    // R2's own copy of the image, and still verifies.
    for name in ["wordclock-v2.9.0.bin", "wordclock.bin"] {
        assert_eq!(world.s3.object(name), Some(world.staged(name)), "{name}");
    }
    let r2_manifest = Manifest::from_json(&world.s3.object("version.json").unwrap()).unwrap();
    let r2_image = format!("{}/wordclock-v2.9.0.bin", world.s3.public_url());
    assert_eq!(r2_manifest.firmware_url, Some(r2_image));
    assert!(r2_manifest.verify(&world.repo.trusted()).is_ok());
    let staged = Manifest::from_json(&world.staged("version.json")).unwrap();
    assert_eq!(r2_manifest.signed_message(), staged.signed_message());
    assert!(
        staged
            .firmware_url
            .unwrap()
            .starts_with(&world.git.raw_url())
    );
    // In order: image, alias, manifest last.
    let puts: Vec<String> = world
        .s3
        .requests()
        .into_iter()
        .filter(|r| r.method == "PUT")
        .map(|r| r.path)
        .collect();
    assert_eq!(
        puts,
        [
            "/wordclock-ota/wordclock-v2.9.0.bin",
            "/wordclock-ota/wordclock.bin",
            "/wordclock-ota/version.json"
        ]
    );

    // GitHub: the release commit is on main and tagged, and the release has its assets.
    let commit = target(&report, "github")["commit"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(world.git.head_of("main").as_deref(), Some(commit.as_str()));
    assert_eq!(
        world.git.tag_target("v2.9.0").as_deref(),
        Some(commit.as_str())
    );
    let assets = world.api.assets("v2.9.0");
    let names: Vec<&str> = assets.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["wordclock-v2.9.0.bin", "version.json"]);
    assert_eq!(assets[0].1, world.staged("wordclock-v2.9.0.bin"));
    assert_eq!(
        world.api.release("v2.9.0").unwrap()["name"],
        "wordclock v2.9.0"
    );

    // Verified at the commit, on the branch and on R2.
    let sources: Vec<&str> = report["verification"]["sources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["source"].as_str().unwrap())
        .collect();
    assert_eq!(
        sources,
        [
            format!("github@{}", &commit[..12]).as_str(),
            "github@main",
            "r2"
        ]
    );
    assert_eq!(report["verification"]["ok"], true);

    // The work tree is clean: the release commit holds ota_files/.
    let status = std::process::Command::new("git")
        .args(["status", "--porcelain", "ota_files"])
        .current_dir(world.repo.root())
        .output()
        .unwrap();
    assert_eq!(stdout(&status), "");
}

#[test]
fn a_rerun_skips_everything_already_published() {
    let world = World::new();
    world.stage("v2.9.0", 0);
    let (out, _) = world.publish(&[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let (out, report) = world.publish(&[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        outcomes(target(&report, "r2")),
        ["checked", "already-there", "already-there", "already-there"],
        "{report:#}"
    );
    assert!(
        only(&outcomes(target(&report, "github")), &["already-there"]),
        "{report:#}"
    );
    for name in ["wordclock-v2.9.0.bin", "wordclock.bin", "version.json"] {
        assert_eq!(world.s3.successful_puts(name), 1, "{name}");
    }
    assert_eq!(world.api.upload_count("v2.9.0", "wordclock-v2.9.0.bin"), 1);

    // People get the same account as text, and progress as timestamped lines on stderr.
    let out = world.run(&["publish"], &[("CI", "true")]);
    assert_eq!(out.status.code(), Some(0));
    let text = stdout(&out);
    for needle in [
        "publish v2.9.0",
        "github  ok in",
        "r2      ok in",
        "already there  put s3://wordclock-ota/version.json",
        "ok   r2",
        "published v2.9.0 and verified every public URL",
    ] {
        assert!(text.contains(needle), "no `{needle}` in:\n{text}");
    }
    let progress = stderr(&out);
    assert!(
        progress
            .lines()
            .any(|l| l.contains("Z r2: put s3://wordclock-ota/version.json")),
        "{progress}"
    );
}

#[test]
fn only_r2_leaves_github_alone() {
    let world = World::new();
    let seeded = world.git.head_of("main");
    world.stage("v2.9.0", 0);
    let (out, report) = world.publish(&["--only", "r2"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(report["targets"].as_array().unwrap().len(), 1);
    assert!(world.s3.object("version.json").is_some());
    assert_eq!(world.git.head_of("main"), seeded);
    assert!(world.api.release("v2.9.0").is_none());

    let out = world.run(&["publish", "--only", "r2", "--no-verify"], &[]);
    assert_eq!(out.status.code(), Some(0));
    assert!(
        stdout(&out).contains("published v2.9.0 (public URLs not checked: --no-verify)"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn transient_503s_are_retried_without_duplicates() {
    let world = World::new();
    world.stage("v2.9.0", 0);
    world.s3.fail_next_method("PUT", 2, 503);
    let (out, _) = world.publish(&["--only", "r2"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let puts: Vec<(String, u16)> = world
        .s3
        .requests()
        .into_iter()
        .filter(|r| r.method == "PUT")
        .map(|r| (r.path, r.status))
        .collect();
    let image = "/wordclock-ota/wordclock-v2.9.0.bin".to_owned();
    assert_eq!(
        &puts[..3],
        [(image.clone(), 503), (image.clone(), 503), (image, 200)]
    );
    for name in ["wordclock-v2.9.0.bin", "wordclock.bin", "version.json"] {
        assert_eq!(world.s3.successful_puts(name), 1, "{name}");
    }
}

#[test]
fn a_failed_release_api_after_the_push_is_partial_and_verified_where_live() {
    let world = World::new();
    world.stage("v2.9.0", 0);
    // The push lands; creating the GitHub Release then fails.
    world.api.fail_next_method("POST", 1, 500);
    let (out, report) = world.publish(&["--only", "github"]);
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    assert_eq!(report["verdict"], "partial");
    let github = target(&report, "github");
    assert_eq!(
        (github["ok"].as_bool(), github["live"].as_bool()),
        (Some(false), Some(true))
    );
    let checked: Vec<&str> = report["verification"]["sources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["source"].as_str().unwrap())
        .collect();
    assert_eq!(
        checked.len(),
        2,
        "devices read the pushed branch: it is verified"
    );
    assert_eq!(report["verification"]["ok"], true);

    let (out, report) = world.publish(&["--only", "github"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        outcomes(target(&report, "github")),
        [
            "already-there",
            "already-there",
            "already-there",
            "already-there",
            "done",
            "done",
            "done"
        ]
    );
}

#[test]
fn a_rerun_after_the_branch_moved_on_finishes_from_the_tag() {
    let world = World::new();
    world.stage("v2.9.0", 0);
    world.api.fail_next_method("POST", 1, 500);
    let (out, _) = world.publish(&["--only", "github"]);
    assert_eq!(out.status.code(), Some(5));
    // Work goes on before anyone reruns the publish.
    std::fs::write(world.repo.root().join("NOTES.md"), "later work\n").unwrap();
    world.run_git(&["add", "NOTES.md"]);
    world.run_git(&["commit", "-qm", "later work"]);
    world.run_git(&["push", "-q", "origin", "main"]);
    let (out, report) = world.publish(&["--only", "github"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(report["verdict"], "published");
    let tagged = world.git.tag_target("v2.9.0").unwrap();
    assert_ne!(
        world.git.head_of("main").unwrap(),
        tagged,
        "the tag stays on the release commit"
    );
}

#[test]
fn a_rerun_after_a_refused_push_publishes_the_release_commit_not_later_work() {
    let world = World::new();
    world.stage("v2.9.0", 0);
    world.git.protect_branch("main");
    let (out, _) = world.publish(&["--only", "github"]);
    assert_eq!(out.status.code(), Some(6), "{}", stderr(&out));
    let release_commit = stdout(&world.run_git(&["rev-parse", "HEAD"]))
        .trim()
        .to_owned();
    // Work goes on, unpushed and unreviewed, before anyone reruns the publish.
    std::fs::write(world.repo.root().join("NOTES.md"), "work in progress\n").unwrap();
    world.run_git(&["add", "NOTES.md"]);
    world.run_git(&["commit", "-qm", "work in progress"]);
    world.git.unprotect_branches();
    let (out, report) = world.publish(&["--only", "github"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(report["verdict"], "published");
    assert_eq!(
        world.git.tag_target("v2.9.0").unwrap(),
        release_commit,
        "the tag is on the release commit"
    );
    assert_eq!(
        world.git.head_of("main").unwrap(),
        release_commit,
        "the work in progress stays on this machine"
    );
}

#[test]
fn an_upload_url_on_a_host_the_token_is_not_for_is_named_and_the_hint_works() {
    let world = World::new();
    world.stage("v2.9.0", 0);
    let uploads = world.api.api_url().replace("127.0.0.1", "localhost");
    world.api.answer_uploads_at(&uploads);
    let (out, report) = world.publish(&["--only", "github"]);
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    let error = &target(&report, "github")["error"];
    let message = error["message"].as_str().unwrap();
    assert!(
        message.contains(&uploads) && message.contains("uploads host"),
        "{error:#}"
    );
    assert!(
        error["hint"].as_str().unwrap().contains("upload_url"),
        "{error:#}"
    );
    assert_eq!(
        world.api.upload_count("v2.9.0", "wordclock-v2.9.0.bin"),
        0,
        "nothing went out without the token"
    );

    // Following the hint finishes the release.
    let config = world.repo.root().join("clockrel.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    let text = text.replace(
        "[sources.github]\n",
        &format!("[sources.github]\nupload_url = \"{uploads}\"\n"),
    );
    std::fs::write(&config, text).unwrap();
    let (out, report) = world.publish(&["--only", "github"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(report["verdict"], "published");
    assert_eq!(world.api.upload_count("v2.9.0", "wordclock-v2.9.0.bin"), 1);
}

#[test]
fn a_dead_r2_leaves_a_partial_publish_that_a_rerun_finishes() {
    let world = World::new();
    world.stage("v2.9.0", 0);
    world.s3.stop();
    let (out, report) = world.publish(&[]);
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    assert_eq!(report["verdict"], "partial");
    assert_eq!(target(&report, "github")["ok"], true);
    let r2 = target(&report, "r2");
    assert_eq!(r2["ok"], false);
    assert!(
        r2["error"]["message"]
            .as_str()
            .unwrap()
            .contains("cannot reach the endpoint"),
        "{r2:#}"
    );

    let text = world.run(&["publish", "--no-verify"], &[]);
    assert_eq!(text.status.code(), Some(5));
    assert!(
        stdout(&text).contains(
            "PARTLY published: r2 failed; devices see v2.9.0 on github. Run `clockrel publish --only r2` to finish"
        ),
        "{}",
        stdout(&text)
    );

    world.s3.restart();
    let (out, report) = world.publish(&[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        only(&outcomes(target(&report, "github")), &["already-there"]),
        "{report:#}"
    );
    assert_eq!(
        outcomes(target(&report, "r2")),
        ["checked", "done", "done", "done"]
    );
}

#[test]
fn a_rejected_push_is_an_error_with_the_servers_reason() {
    let world = World::new();
    world.stage("v2.9.0", 0);
    world.git.protect_branch("main");
    let (out, report) = world.publish(&[]);
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    let github = target(&report, "github");
    let message = github["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("protected branch hook declined"),
        "{message}"
    );
    assert_eq!(target(&report, "r2")["ok"], true);
    assert!(
        world.api.release("v2.9.0").is_none(),
        "no release for a tag that was not pushed"
    );
}

#[test]
fn a_push_behind_the_remote_is_refused_and_its_hint_works() {
    let world = World::new();
    world.stage("v2.9.0", 0);
    world.git.advance("main", "CHANGELOG.md", b"someone else\n");
    let (out, report) = world.publish(&["--only", "github"]);
    assert_eq!(out.status.code(), Some(6), "{}", stderr(&out));
    let error = &target(&report, "github")["error"];
    assert!(
        error["hint"].as_str().unwrap_or_default().contains("pull"),
        "{error:#}"
    );
    assert_eq!(
        world.git.tag_target("v2.9.0"),
        None,
        "no tag for a commit the remote refused"
    );

    // Following the hint finishes the release.
    world.run_git(&["pull", "-q", "--no-rebase", "--no-edit", "origin", "main"]);
    let (out, _) = world.publish(&["--only", "github"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(world.git.tag_target("v2.9.0"), world.git.head_of("main"));
}

#[test]
fn a_tag_at_another_commit_is_refused() {
    let world = World::new();
    world.stage("v2.9.0", 0);
    let tag = std::process::Command::new("git")
        .args(["tag", "v2.9.0"])
        .current_dir(world.repo.root())
        .output()
        .unwrap();
    assert!(tag.status.success());
    let (out, report) = world.publish(&["--only", "github"]);
    assert_eq!(out.status.code(), Some(6));
    let message = target(&report, "github")["error"]["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        message.contains("tag v2.9.0 already points at"),
        "{message}"
    );
}

#[test]
fn wrong_credentials_are_named_without_the_secret() {
    let world = World::new();
    world.stage("v2.9.0", 0);
    let wrong_token = "test-token-wrong-0123456789";
    let wrong_secret = "not-the-secret-key-0123456789";
    let out = world.run(
        &["--json", "publish"],
        &[
            ("GITHUB_TOKEN", wrong_token),
            ("R2_SECRET_ACCESS_KEY", wrong_secret),
        ],
    );
    assert_eq!(out.status.code(), Some(6), "{}", stderr(&out));
    let text = stdout(&out) + &stderr(&out);
    assert!(
        !text.contains(wrong_token) && !text.contains(wrong_secret),
        "{text}"
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let github = &target(&report, "github")["error"];
    assert!(
        github["hint"].as_str().unwrap().contains("GITHUB_TOKEN"),
        "{github:#}"
    );
    assert_eq!(
        world.git.auth_failures(),
        1,
        "gave up after one failed credential attempt"
    );
    let r2 = &target(&report, "r2")["error"];
    assert!(world.api.release("v2.9.0").is_none());
    assert!(
        r2["message"]
            .as_str()
            .unwrap()
            .starts_with("access denied (HTTP 403"),
        "{r2:#}"
    );
    assert!(
        r2["hint"]
            .as_str()
            .unwrap()
            .contains("R2_SECRET_ACCESS_KEY"),
        "{r2:#}"
    );
}

#[test]
fn a_versioned_object_with_other_bytes_stops_r2_and_keeps_the_manifest() {
    let world = World::new();
    world.stage("v2.9.0", 0);
    let (out, _) = world.publish(&["--only", "r2"]);
    assert_eq!(out.status.code(), Some(0));
    let published_manifest = world.s3.object("version.json").unwrap();

    // Another build of the same version (a different secure_version makes other bytes)
    // staged in a second repository that publishes to the same bucket.
    let other = World::new();
    let config = std::fs::read_to_string(world.repo.root().join("clockrel.toml")).unwrap();
    std::fs::write(other.repo.root().join("clockrel.toml"), config).unwrap();
    std::fs::copy(
        world.repo.root().join("firmware/trusted-keys.txt"),
        other.repo.root().join("firmware/trusted-keys.txt"),
    )
    .unwrap();
    std::fs::copy(&world.repo.key, &other.repo.key).unwrap();
    other.stage("v2.9.0", 3);
    let out = other.repo.run(
        &["--json", "publish", "--only", "r2"],
        &[
            ("R2_ACCESS_KEY_ID", world.s3.access_key()),
            ("R2_SECRET_ACCESS_KEY", world.s3.secret_key()),
        ],
    );
    assert_eq!(out.status.code(), Some(6), "{}", stderr(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let message = target(&report, "r2")["error"]["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        message.contains("serves another build of v2.9.0"),
        "{message}"
    );
    assert_eq!(
        world.s3.object("version.json").unwrap(),
        published_manifest,
        "the manifest was not replaced"
    );
}

#[test]
fn verification_waits_out_a_stale_branch_cache() {
    let world = World::new();
    world.stage("v2.9.0", 0);
    world.git.set_stale_reads(2);
    let (out, report) = world.publish(&["--only", "github"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let sources = report["verification"]["sources"].as_array().unwrap();
    assert_eq!(sources[0]["attempts"], 1, "the commit URL is never stale");
    assert!(
        sources[1]["attempts"].as_u64().unwrap() > 1,
        "{:#}",
        sources[1]
    );
    assert!(stderr(&out).contains("retrying in"), "{}", stderr(&out));
}

#[test]
fn verify_reports_sources_that_disagree() {
    let world = World::new();
    world.stage("v2.9.0", 0);
    let (out, _) = world.publish(&[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let out = world.run(&["verify"], &[]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    assert!(stdout(&out).contains("every source serves the release"));

    world.stage("v2.10.0", 0);
    let (out, _) = world.publish(&["--only", "r2"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let out = world.run(&["--json", "verify", "--only", "github"], &[]);
    assert_eq!(
        out.status.code(),
        Some(3),
        "github still serves v2.9.0, not the staged v2.10.0"
    );
    let out = world.run(&["--json", "verify"], &[]);
    assert_eq!(out.status.code(), Some(3));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let disagreement = report["disagreement"].as_str().unwrap();
    assert!(
        disagreement.contains("2.9.0") && disagreement.contains("2.10.0"),
        "{disagreement}"
    );
}

#[test]
fn a_server_that_quotes_the_token_back_does_not_leak_it() {
    let world = World::with_api_token("test-token-the-api-wants-another");
    world.api.echo_credentials();
    world.stage("v2.9.0", 0);
    // `run` fails the test if the token appears in stdout or stderr.
    let (out, report) = world.publish(&["--only", "github"]);
    assert_eq!(
        out.status.code(),
        Some(5),
        "pushed, but the release API refused the token"
    );
    let message = target(&report, "github")["error"]["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        message.starts_with("GitHub answered 401: Bad credentials: Bearer ***"),
        "{message}"
    );
}

#[test]
fn missing_credentials_leave_the_repository_and_bucket_untouched() {
    let world = World::new();
    world.stage("v2.9.0", 0);
    let head = world.git.head_of("main");
    let local = std::process::Command::new("git")
        .args(["rev-parse", "HEAD"])
        .current_dir(world.repo.root())
        .output()
        .unwrap();
    let out = world.run(&["publish"], &[("R2_SECRET_ACCESS_KEY", "")]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let after = std::process::Command::new("git")
        .args(["rev-parse", "HEAD"])
        .current_dir(world.repo.root())
        .output()
        .unwrap();
    assert_eq!(after.stdout, local.stdout, "no local commit");
    let tags = std::process::Command::new("git")
        .args(["tag"])
        .current_dir(world.repo.root())
        .output()
        .unwrap();
    assert_eq!(stdout(&tags), "", "no local tag");
    assert_eq!(world.git.head_of("main"), head);
    assert!(world.s3.requests().is_empty());
}

#[test]
fn an_upload_that_broke_off_is_replaced_on_the_rerun() {
    let world = World::new();
    world.stage("v2.9.0", 0);
    world.api.interrupt_next_upload();
    let (out, report) = world.publish(&["--only", "github"]);
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    let message = target(&report, "github")["error"]["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(message.contains("502"), "{message}");
    let (out, _) = world.publish(&["--only", "github"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let assets = world.api.assets("v2.9.0");
    assert_eq!(
        assets[0],
        (
            "wordclock-v2.9.0.bin".to_owned(),
            world.staged("wordclock-v2.9.0.bin")
        )
    );
    assert_eq!(
        world.api.release("v2.9.0").unwrap()["assets"][0]["state"],
        "uploaded"
    );
}

/// Each target's steps as the JSON report lists them: the typed task of each.
fn tasks(report: &serde_json::Value) -> Vec<(String, serde_json::Value)> {
    report["targets"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|t| {
            let name = t["target"].as_str().unwrap().to_owned();
            t["steps"]
                .as_array()
                .unwrap()
                .iter()
                .map(move |s| (name.clone(), s["task"].clone()))
        })
        .collect()
}

#[test]
fn a_dry_run_lists_exactly_the_steps_a_real_run_then_records() {
    let world = World::new();
    world.stage("v2.9.0", 0);
    let (_, plan) = world.publish(&["--dry-run"]);
    assert_eq!(plan["verdict"], "planned");
    let planned = tasks(&plan);
    assert_eq!(planned.len(), 7 + 4, "{plan:#}");
    assert_eq!(planned[0].1["kind"], "commit");
    assert_eq!(planned[7].1["kind"], "check-bucket");

    let (out, report) = world.publish(&[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        tasks(&report),
        planned,
        "the run walked the plan, step by step"
    );

    // A failed run records every step too: done, failed with why, not reached.
    world.stage("v2.9.1", 0);
    world.s3.stop();
    let (_, plan) = world.publish(&["--dry-run"]);
    let (out, report) = world.publish(&[]);
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    assert_eq!(tasks(&report), tasks(&plan));
    assert_eq!(
        outcomes(target(&report, "r2")),
        ["failed", "not-reached", "not-reached", "not-reached"]
    );
    let failed = &target(&report, "r2")["steps"][0];
    assert!(
        failed["why"].as_str().unwrap().contains("cannot reach"),
        "{failed:#}"
    );

    // And the re-run that finishes it walks the same plan again.
    world.s3.restart();
    let (_, plan) = world.publish(&["--dry-run"]);
    let (out, report) = world.publish(&[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(tasks(&report), tasks(&plan));
    assert!(
        only(&outcomes(target(&report, "github")), &["already-there"]),
        "{report:#}"
    );
}

#[test]
fn verify_calls_a_broken_staging_bad_input_not_nothing_staged() {
    let world = World::new();
    world.stage("v2.9.0", 0);
    let (out, _) = world.publish(&[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let image = world.repo.root().join("ota_files/wordclock-v2.9.0.bin");
    std::fs::remove_file(&image).unwrap();
    let out = world.run(&["verify"], &[]);
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    let text = stderr(&out);
    assert!(
        text.contains("wordclock-v2.9.0.bin") && !text.contains("nothing is staged"),
        "{text}"
    );

    std::fs::remove_file(world.repo.root().join("ota_files/version.json")).unwrap();
    let out = world.run(&["verify"], &[]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "nothing staged: each source is checked on its own\n{}{}",
        stdout(&out),
        stderr(&out)
    );
}

#[test]
fn verify_says_what_differs_in_a_rewritten_manifest() {
    let world = World::new();
    world.stage("v2.9.0", 0);
    let (out, _) = world.publish(&[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    // The same manifest, compacted: every field as staged, the bytes not.
    let served = world.s3.object("version.json").unwrap();
    let value: serde_json::Value = serde_json::from_slice(&served).unwrap();
    world
        .s3
        .rewrite("version.json", &serde_json::to_vec(&value).unwrap());
    let out = world.run(&["verify", "--only", "r2"], &[]);
    assert_eq!(out.status.code(), Some(3), "{}", stdout(&out));
    assert!(
        stdout(&out).contains(
            "version.json holds the staged v2.9.0 but not its bytes: the server reformatted or rewrote it"
        ),
        "{}",
        stdout(&out)
    );
}

#[test]
fn verify_names_a_patch_a_source_serves_other_bytes_of() {
    let world = World::new();
    for version in ["2.9.0", "2.10.0"] {
        let elf = FirmwareElf::new(version).code_of("wordclock");
        let out = world.repo.stage(version, &elf);
        assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    }
    let name = "wordclock-v2.9.0-to-v2.10.0.patch";
    assert_eq!(world.repo.manifest().patches[0].file, name);
    let (out, _) = world.publish(&[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let mut patch = world.s3.object(name).unwrap();
    let last = patch.len() - 1;
    patch[last] ^= 0xff;
    world.s3.rewrite(name, &patch);
    let out = world.run(&["verify", "--only", "r2"], &[]);
    assert_eq!(out.status.code(), Some(3), "{}", stdout(&out));
    assert!(
        stdout(&out).contains(&format!("{name}: {} bytes with SHA-256", patch.len())),
        "{}",
        stdout(&out)
    );
    let out = world.run(&["verify", "--only", "github"], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert!(stdout(&out).contains("and its patch"), "{}", stdout(&out));
}

#[test]
fn a_remote_listing_a_ref_name_that_is_not_utf8_fails_github_and_keeps_the_report() {
    let world = World::new();
    world.stage("v2.9.0", 0);
    world.git.seed(&[("README.md", b"fleet")]);
    // git takes any bytes but a few in a ref's name; git2 unwraps them as UTF-8.
    let name = std::ffi::OsStr::from_bytes(b"refs/heads/caf\xe9");
    let made = std::process::Command::new("git")
        .arg("--git-dir")
        .arg(world.git.bare_path())
        .arg("update-ref")
        .arg(name)
        .arg("refs/heads/main")
        .status()
        .unwrap();
    assert!(made.success());
    let (out, report) = world.publish(&[]);
    assert_eq!(out.status.code(), Some(5), "{report:#}\n{}", stderr(&out));
    let github = target(&report, "github");
    let failed = github["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["outcome"] == "failed")
        .unwrap_or_else(|| panic!("no failed step: {github:#}"));
    // The commit made before stays recorded; the push that listed the refs failed.
    assert_eq!(
        outcomes(github),
        [
            "done",
            "failed",
            "not-reached",
            "not-reached",
            "not-reached",
            "not-reached",
            "not-reached"
        ]
    );
    assert_eq!(failed["task"]["kind"], "push-branch");
    assert!(
        failed["why"]
            .as_str()
            .unwrap()
            .contains("the remote's list of refs is malformed"),
        "{failed:#}"
    );
    assert_eq!(
        outcomes(target(&report, "r2")),
        ["checked", "done", "done", "done"]
    );
}
