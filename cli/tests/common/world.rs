//! The world a publish runs in: a firmware repository cloned from a local git server,
//! GitHub's API and an R2 bucket beside it, and the commands run against them.

use std::process::Output;

use testkit::{FirmwareElf, GitServer, GithubApi, S3Server};

use super::repo::Repo;
use super::{stderr, stdout};

pub const TOKEN: &str = "test-token-0123456789abcdefghij";

/// A firmware repository cloned from a git server, with GitHub's API and an R2 bucket
/// beside it, all on this machine.
pub struct World {
    pub git: GitServer,
    pub api: GithubApi,
    pub s3: S3Server,
    pub repo: Repo,
}

impl World {
    pub fn new() -> World {
        World::with_api_token(TOKEN)
    }

    /// A world whose GitHub API accepts `api_token` (the git server always takes [`TOKEN`]).
    pub fn with_api_token(api_token: &str) -> World {
        let git = GitServer::start("acme", "wordclock", TOKEN);
        git.seed(&[("README.md", b"word clock firmware\n")]);
        let api = GithubApi::start("acme", "wordclock", api_token);
        let s3 = S3Server::start("wordclock-ota");
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("wordclock");
        git.working_clone(&root);
        let sources = format!(
            "[sources.github]\nrepository = \"acme/wordclock\"\ngit_url = \"{}\"\napi_url = \"{}\"\nraw_url = \"{}\"\n\n[sources.r2]\npublic_url = \"{}\"\nbucket = \"wordclock-ota\"\nendpoint = \"{}\"\n\n[verify]\ndeadline_seconds = 10\n",
            git.clone_url(),
            api.api_url(),
            git.raw_url(),
            s3.public_url(),
            s3.endpoint()
        );
        let repo = Repo::create(dir, root, &sources);
        World { git, api, s3, repo }
    }

    /// Stages `version` built with `secure_version`; panics unless it worked.
    pub fn stage(&self, version: &str, secure_version: u32) {
        let out = self.repo.stage(
            version,
            &FirmwareElf::new(version).secure_version(secure_version),
        );
        assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    }

    pub fn credentials(&self) -> Vec<(&'static str, String)> {
        vec![
            ("GITHUB_TOKEN", TOKEN.to_owned()),
            ("R2_ACCESS_KEY_ID", self.s3.access_key().to_owned()),
            ("R2_SECRET_ACCESS_KEY", self.s3.secret_key().to_owned()),
        ]
    }

    /// Runs clockrel with the credentials, overridden by `env`.
    pub fn run(&self, args: &[&str], env: &[(&'static str, &str)]) -> Output {
        let mut all = self.credentials();
        for (name, value) in env {
            all.retain(|(n, _)| n != name);
            all.push((name, (*value).to_owned()));
        }
        let borrowed: Vec<(&str, &str)> = all.iter().map(|(n, v)| (*n, v.as_str())).collect();
        let out = self.repo.run(args, &borrowed);
        self.assert_no_secret(&out);
        out
    }

    pub fn publish(&self, extra: &[&str]) -> (Output, serde_json::Value) {
        let mut args = vec!["--json", "publish"];
        args.extend_from_slice(extra);
        let out = self.run(&args, &[]);
        let report = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}):\n{}\n{}", stdout(&out), stderr(&out)));
        (out, report)
    }

    pub fn assert_no_secret(&self, out: &Output) {
        let text = stdout(out) + &stderr(out);
        for secret in [TOKEN, self.s3.secret_key(), self.s3.access_key()] {
            assert!(
                !text.contains(secret),
                "a secret appeared in the output:\n{text}"
            );
        }
    }

    /// Runs the git CLI in the repository, with the token for the HTTP remote.
    pub fn run_git(&self, args: &[&str]) -> Output {
        let helper = format!("!f() {{ echo username=x-access-token; echo password={TOKEN}; }}; f");
        let out = std::process::Command::new("git")
            .args([
                "-c",
                "credential.helper=",
                "-c",
                &format!("credential.helper={helper}"),
            ])
            .args(args)
            .current_dir(self.repo.root())
            .output()
            .unwrap();
        assert!(out.status.success(), "git {args:?}: {}", stderr(&out));
        out
    }

    pub fn staged(&self, name: &str) -> Vec<u8> {
        std::fs::read(self.repo.root().join("ota_files").join(name)).unwrap()
    }
}

pub fn target<'a>(report: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    report["targets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["target"] == name)
        .unwrap()
}

/// Whether `outcomes` has steps, each of them one of `allowed` (`all` alone holds for
/// none).
pub fn only(outcomes: &[String], allowed: &[&str]) -> bool {
    !outcomes.is_empty() && outcomes.iter().all(|o| allowed.contains(&o.as_str()))
}

pub fn outcomes(target: &serde_json::Value) -> Vec<String> {
    target["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["outcome"].as_str().unwrap().to_owned())
        .collect()
}
