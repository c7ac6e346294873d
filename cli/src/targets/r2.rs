//! Cloudflare R2 through its S3 API: one PUT per file, each checked against what the
//! bucket already holds.

use std::time::Duration;

use aws_sdk_s3::Client;
use aws_sdk_s3::config::{
    BehaviorVersion, Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
};
use aws_sdk_s3::error::{ProvideErrorMetadata as _, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use md5::Digest as _;

use super::{FileSpec, Ran, TargetError, Upload};
use crate::config::R2Source;
use crate::ota_files::MANIFEST;
use crate::plan::{Outcome, Record, Task};
use crate::progress::TargetProgress;
use crate::secrets::{self, Redactor, Secret};
use ota_core::Manifest;

/// The access key id, first name found wins.
pub const ENV_ACCESS_KEY: [&str; 2] = ["R2_ACCESS_KEY_ID", "AWS_ACCESS_KEY_ID"];
/// The secret access key, first name found wins.
pub const ENV_SECRET_KEY: [&str; 2] = ["R2_SECRET_ACCESS_KEY", "AWS_SECRET_ACCESS_KEY"];

/// An R2 bucket ready to publish to.
#[derive(Debug)]
pub struct R2 {
    client: Client,
    bucket: String,
    prefix: String,
    redactor: Redactor,
}

/// A failed request: one line, and a hint when the cause is known.
type Failed = (String, Option<String>);

/// What an object key holds now.
enum Existing {
    Missing,
    Same,
    Different,
}

impl R2 {
    /// Connects with credentials from the environment. Makes no request.
    pub fn from_env(source: &R2Source) -> Result<R2, TargetError> {
        let missing = |names: &[&str]| {
            TargetError::new("credentials", format!("{} is not set", names.join(" or ")))
                .hint("export the R2 API token's access key id and secret (Cloudflare dashboard, R2, Manage API tokens)")
        };
        let (access, _) =
            secrets::from_env(&ENV_ACCESS_KEY).ok_or_else(|| missing(&ENV_ACCESS_KEY))?;
        let (secret, _) =
            secrets::from_env(&ENV_SECRET_KEY).ok_or_else(|| missing(&ENV_SECRET_KEY))?;
        R2::new(source, access, secret)
    }

    pub fn new(source: &R2Source, access: Secret, secret: Secret) -> Result<R2, TargetError> {
        let endpoint = source.endpoint().ok_or_else(|| {
            TargetError::new("config", "sources.r2 has neither account_id nor endpoint")
        })?;
        let bucket = source
            .bucket
            .clone()
            .ok_or_else(|| TargetError::new("config", "sources.r2.bucket is not set"))?;
        let mut redactor = Redactor::default();
        redactor.add(&access);
        redactor.add(&secret);
        let credentials =
            Credentials::new(access.expose(), secret.expose(), None, None, "clockrel");
        let config = aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("auto"))
            .endpoint_url(endpoint)
            .force_path_style(true)
            .credentials_provider(credentials)
            // R2 rejects the CRC32 checksum headers the SDK sends by default.
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
            .timeout_config(
                aws_sdk_s3::config::timeout::TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(10))
                    .operation_attempt_timeout(Duration::from_secs(120))
                    .build(),
            )
            .retry_config(aws_sdk_s3::config::retry::RetryConfig::standard().with_max_attempts(4))
            .build();
        Ok(R2 {
            client: Client::from_conf(config),
            bucket,
            prefix: source.prefix.clone(),
            redactor,
        })
    }

    fn key(&self, name: &str) -> String {
        object_key(&self.prefix, name)
    }

    /// Walks `tasks` (from [`tasks`]): the rollback check, then every put in order,
    /// skipping those already there with the same bytes. Stops at the first failure:
    /// the manifest is never put before its image.
    pub async fn publish(
        &self,
        release: &Manifest,
        uploads: &[Upload],
        tasks: &[Task],
        after_push: tokio::sync::oneshot::Receiver<bool>,
        progress: &TargetProgress,
    ) -> Ran {
        let mut record = Record::new(tasks);
        let mut after_push = Some(after_push);
        while let Some(task) = record.next().cloned() {
            let what = task.to_string();
            progress.step(&what);
            let done = match &task {
                Task::AwaitPush { source } => match after_push.take() {
                    Some(pushed) => match pushed.await {
                        Ok(true) => Ok(Outcome::Checked),
                        Ok(false) | Err(_) => Err((
                            format!("{source}'s push did not succeed, so nothing is put on R2"),
                            Some(format!(
                                "run the same command again once {source} takes the push: R2 then gets the same build"
                            )),
                        )),
                    },
                    None => Err((format!("nothing reports {source}'s push"), None)),
                },
                Task::CheckBucket { .. } => self
                    .refuse_rollback(release)
                    .await
                    .map(|()| Outcome::Checked),
                Task::Put { key, .. } => {
                    match uploads.iter().find(|u| self.key(u.name()) == *key) {
                        Some(upload) => {
                            let outcome = self.put(upload).await;
                            progress.advance(upload.bytes.len() as u64);
                            outcome
                        }
                        None => match super::unstaged_patch(key) {
                            Some(why) => Ok(Outcome::Skipped(why)),
                            None => Err((format!("no staged file for {key}"), None)),
                        },
                    }
                }
                other => Err((format!("not an R2 task: {other:?}"), None)),
            };
            match done {
                Ok(outcome) => record.finish(outcome, None),
                Err((message, hint)) => {
                    let error = TargetError::new(what, message);
                    let error = match hint {
                        Some(hint) => error.hint(hint),
                        None => error,
                    };
                    record.fail(error.message.clone());
                    return Ran::failed(record, error);
                }
            }
        }
        Ran::ok(record)
    }

    /// Refuses to replace a newer release, or another build of this version, that the
    /// bucket already serves: that would roll devices back.
    async fn refuse_rollback(&self, release: &Manifest) -> Result<(), Failed> {
        let got = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(self.key(MANIFEST))
            .send()
            .await;
        let body = match got {
            // Longer than any manifest a device reads: unreadable, and not read.
            Ok(object)
                if object
                    .content_length()
                    .is_some_and(|len| len > ota_core::manifest::MAX_MANIFEST_LEN as i64) =>
            {
                return Ok(());
            }
            Ok(object) => object
                .body
                .collect()
                .await
                .map_err(|e| (self.redactor.scrub(&e.to_string()), None))?,
            Err(SdkError::ServiceError(e)) if e.err().is_no_such_key() => return Ok(()),
            Err(e) => return Err(self.explain(e)),
        };
        // An unreadable manifest protects nothing: the new one replaces it.
        let Ok(served) = Manifest::from_json(&body.into_bytes()) else {
            return Ok(());
        };
        match served.version.precedence(&release.version) {
            std::cmp::Ordering::Greater => Err((
                format!(
                    "the bucket serves {}, newer than {}: publishing would roll devices back",
                    served.version.tag(),
                    release.version.tag()
                ),
                Some("stage a version above the published one".to_owned()),
            )),
            std::cmp::Ordering::Equal if served.sha256 != release.sha256 => Err((
                format!(
                    "the bucket serves another build of {} (SHA-256 {})",
                    release.version.tag(),
                    served.sha256
                ),
                Some("a version is published once: stage a new version".to_owned()),
            )),
            _ => Ok(()),
        }
    }

    async fn put(&self, upload: &Upload) -> Result<Outcome, Failed> {
        let md5 = md5::Md5::digest(&upload.bytes);
        let immutable_taken = || {
            (
                format!(
                    "the bucket already holds other bytes under {}; a published name is never overwritten",
                    self.key(upload.name())
                ),
                Some("a versioned image is immutable: stage a new version instead".to_owned()),
            )
        };
        match self.existing(upload, &md5).await? {
            Existing::Same => return Ok(Outcome::AlreadyThere),
            Existing::Different if upload.spec.immutable => return Err(immutable_taken()),
            Existing::Different | Existing::Missing => {}
        }
        let sha256 = ota_core::Sha256::of(&upload.bytes);
        let mut put = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(self.key(upload.name()))
            .body(ByteStream::from(upload.bytes.to_vec()))
            .content_type(upload.spec.content_type)
            .cache_control(upload.spec.cache_control)
            // The server checks the bytes it stored against this before it answers.
            .content_md5(base64_md5(&md5))
            .metadata("sha256", sha256.to_string());
        if upload.spec.immutable {
            // Create only: another publisher racing us cannot be overwritten.
            put = put.if_none_match("*");
        }
        match put.send().await {
            Ok(_) => Ok(Outcome::Done),
            Err(e) if e.raw_response().is_some_and(|r| r.status().as_u16() == 412) => {
                match self.existing(upload, &md5).await? {
                    Existing::Same => Ok(Outcome::AlreadyThere),
                    _ => Err(immutable_taken()),
                }
            }
            Err(e) => Err(self.explain(e)),
        }
    }

    /// Compares the object under the upload's key with `md5` through its ETag, which R2
    /// sets to the MD5 of the bytes for a single-part upload.
    async fn existing(&self, upload: &Upload, md5: &[u8]) -> Result<Existing, Failed> {
        let head = self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(self.key(upload.name()))
            .send()
            .await;
        match head {
            Ok(head) if head.e_tag().is_some_and(|t| t.contains('-')) => {
                // A multipart upload's ETag is no MD5 of the bytes: compare the bytes.
                self.same_bytes(upload).await
            }
            Ok(head) => {
                let etag = head
                    .e_tag()
                    .unwrap_or_default()
                    .trim_matches('"')
                    .to_ascii_lowercase();
                let same_size = head.content_length() == Some(upload.bytes.len() as i64);
                let ours = ota_core::hex::Hex(md5).to_string();
                Ok(if same_size && etag == ours {
                    Existing::Same
                } else {
                    Existing::Different
                })
            }
            Err(SdkError::ServiceError(e)) if e.err().is_not_found() => Ok(Existing::Missing),
            Err(e) => Err(self.explain(e)),
        }
    }

    async fn same_bytes(&self, upload: &Upload) -> Result<Existing, Failed> {
        let object = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(self.key(upload.name()))
            .send()
            .await
            .map_err(|e| self.explain(e))?;
        // Another length is other bytes: not read, whatever its size.
        if object
            .content_length()
            .is_some_and(|len| len != upload.bytes.len() as i64)
        {
            return Ok(Existing::Different);
        }
        let body = object
            .body
            .collect()
            .await
            .map_err(|e| (self.redactor.scrub(&e.to_string()), None))?;
        Ok(if body.into_bytes().as_ref() == upload.bytes.as_ref() {
            Existing::Same
        } else {
            Existing::Different
        })
    }

    /// One line for an SDK failure, with a hint when the cause is known. Scrubbed.
    fn explain<E: aws_sdk_s3::error::ProvideErrorMetadata + std::error::Error + 'static>(
        &self,
        error: SdkError<E, aws_sdk_s3::config::http::HttpResponse>,
    ) -> Failed {
        let status = error.raw_response().map(|r| r.status().as_u16());
        let code = error.code().map(str::to_owned);
        let (message, hint) = match (&error, status) {
            (SdkError::DispatchFailure(e), _) => (
                format!(
                    "cannot reach the endpoint ({})",
                    if e.is_timeout() {
                        "timed out"
                    } else if e.is_io() {
                        "connection failed"
                    } else {
                        "transport error"
                    }
                ),
                Some("check sources.r2.account_id (or endpoint) and the network".to_owned()),
            ),
            (SdkError::TimeoutError(_), _) => ("the request timed out".to_owned(), None),
            (_, Some(401 | 403)) => (
                format!(
                    "access denied (HTTP {}{})",
                    status.unwrap_or_default(),
                    code.map(|c| format!(", {c}")).unwrap_or_default()
                ),
                Some(format!(
                    "check {} and {}: the R2 API token must allow Object Read & Write on this bucket",
                    ENV_ACCESS_KEY[0], ENV_SECRET_KEY[0]
                )),
            ),
            (_, Some(status)) => (
                format!(
                    "HTTP {status}{}{}",
                    code.map(|c| format!(" {c}")).unwrap_or_default(),
                    error
                        .message()
                        .map(|m| format!(": {m}"))
                        .unwrap_or_default()
                ),
                None,
            ),
            _ => (
                aws_sdk_s3::error::DisplayErrorContext(&error).to_string(),
                None,
            ),
        };
        (self.redactor.scrub(&message), hint)
    }
}

/// The R2 plan: what `publish` does there, in order, worked out without credentials
/// or a request. `--dry-run` prints it; [`R2::publish`] walks it.
pub fn tasks(source: &R2Source, files: &[FileSpec]) -> Vec<Task> {
    let bucket = source
        .bucket
        .clone()
        .unwrap_or_else(|| "<sources.r2.bucket unset>".to_owned());
    let key = |name: &str| object_key(&source.prefix, name);
    std::iter::once(Task::CheckBucket {
        bucket: bucket.clone(),
        key: key(MANIFEST),
    })
    .chain(files.iter().map(|file| Task::Put {
        bucket: bucket.clone(),
        key: key(&file.name),
        cache_control: file.cache_control.to_owned(),
        immutable: file.immutable,
    }))
    .collect()
}

/// The object key of a release file: the configured prefix, then the file's name.
fn object_key(prefix: &str, name: &str) -> String {
    format!("{prefix}{name}")
}

/// Content-MD5 is the base64 of the raw digest.
fn base64_md5(md5: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(md5)
}
