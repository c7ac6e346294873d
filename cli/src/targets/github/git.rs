//! The git half of the GitHub target, on git2: the release commit, its tag, and pushes
//! that report every ref the server refuses.

use std::cell::{Cell, RefCell};
use std::panic::AssertUnwindSafe;

use git2::{Oid, Repository};

use crate::guard::catch_panic;
use crate::plan::Outcome;
use crate::secrets::Secret;

/// GitHub's basic-auth user for a token.
const TOKEN_USER: &str = "x-access-token";

/// A failed remote operation: what happened, and a hint when the cause is known.
#[derive(Debug)]
pub struct RemoteError {
    pub message: String,
    pub hint: Option<String>,
}

impl RemoteError {
    fn new(message: impl Into<String>) -> RemoteError {
        RemoteError {
            message: message.into(),
            hint: None,
        }
    }
}

pub fn short(oid: Oid) -> String {
    oid.to_string()[..12].to_owned()
}

fn text(e: git2::Error) -> String {
    e.message().to_owned()
}

/// The commit that holds the release's `files` (paths in the repository and bytes),
/// found by [`find_release_commit`] (a re-run), else made on `branch`: on HEAD, which
/// must be on `branch`; or, when `tag` marks the release's source
/// (`release --from-tag`), on the branch's tip, which must contain that source.
/// Nothing else the user staged is committed.
pub fn release_commit(
    repo: &Repository,
    branch: &str,
    tag: &str,
    files: &[(String, &[u8])],
    message: &str,
    tag_marks_source: bool,
) -> Result<(Oid, Outcome), String> {
    if let Some(found) = find_release_commit(repo, branch, tag, files, tag_marks_source) {
        // A run stopped after the commit and before the index followed it.
        sync_index(repo, branch, files)?;
        return Ok((found, Outcome::AlreadyThere));
    }
    let tagged = tag_commit(repo, tag);
    let parent = match tagged {
        Some(source) if tag_marks_source => {
            let tip = branch_tip(repo, branch)?;
            if !contains(repo, Some(tip.id()), source) {
                return Err(format!(
                    "tag {tag} marks {}, which is not on {branch}: tag a commit of {branch}",
                    short(source)
                ));
            }
            tip
        }
        Some(at) => {
            return Err(format!(
                "tag {tag} already points at {}, which does not hold this release",
                short(at)
            ));
        }
        None if tag_marks_source => {
            return Err(format!("there is no tag {tag} to release from"));
        }
        None => {
            let head = repo.head().map_err(text)?;
            let on = head.shorthand().ok().filter(|_| head.is_branch());
            if on != Some(branch) {
                return Err(format!(
                    "the repository is on {}, but releases go on {branch}",
                    on.unwrap_or("a detached HEAD")
                ));
            }
            head.peel_to_commit().map_err(text)?
        }
    };
    commit_files(repo, branch, &parent, files, message).map(|oid| (oid, Outcome::Done))
}

/// The commit that already holds the release's `files`, made by an earlier run: the
/// tag's commit if it holds them. When the tag marks the source (`tag_marks_source`),
/// else the commit on `branch`, after the tag, that brought them; with no tag at all,
/// the commit on `branch` that brought them.
pub fn find_release_commit(
    repo: &Repository,
    branch: &str,
    tag: &str,
    files: &[(String, &[u8])],
    tag_marks_source: bool,
) -> Option<Oid> {
    let tagged = tag_commit(repo, tag);
    if let Some(at) = tagged
        && holds(repo, &repo.find_commit(at).ok()?, files)
    {
        return Some(at);
    }
    let made = || brought(repo, &branch_tip(repo, branch).ok()?, files);
    match tagged {
        Some(source) if tag_marks_source => made().filter(|&made| {
            made != source && repo.graph_descendant_of(made, source).unwrap_or(false)
        }),
        Some(_) => None,
        None => made(),
    }
}

/// What to push for the release commit `commit` to a remote whose branch is at
/// `theirs`: the commit itself, or, when the remote moved on and the branch has since
/// merged its work over the release (the hint's `git pull`), that merge.
pub fn commit_to_push(
    repo: &Repository,
    branch: &str,
    theirs: Option<Oid>,
    commit: Oid,
    files: &[(String, &[u8])],
) -> Oid {
    let behind = theirs.is_some_and(|theirs| !contains(repo, Some(commit), theirs));
    if !behind {
        return commit;
    }
    branch_tip(repo, branch)
        .ok()
        .and_then(|tip| brought(repo, &tip, files))
        .filter(|&merged| contains(repo, Some(merged), commit))
        .unwrap_or(commit)
}

/// The commit `tag` marks, if the tag exists.
pub fn tag_commit(repo: &Repository, tag: &str) -> Option<Oid> {
    repo.revparse_single(&format!("refs/tags/{tag}"))
        .and_then(|o| o.peel_to_commit())
        .map(|c| c.id())
        .ok()
}

/// The tip of `branch`: the local branch or `origin/branch`, whichever contains the
/// other (a CI checkout of a tag has only the remote's; a local one may be behind it).
/// Diverged, they are an error: which one the release goes on is the user's to say.
pub fn branch_tip<'r>(repo: &'r Repository, branch: &str) -> Result<git2::Commit<'r>, String> {
    let tip = |name: &str, kind| {
        repo.find_branch(name, kind)
            .and_then(|b| b.get().peel_to_commit())
            .ok()
    };
    let local = tip(branch, git2::BranchType::Local);
    let remote = tip(&format!("origin/{branch}"), git2::BranchType::Remote);
    match (local, remote) {
        (Some(local), Some(remote)) => {
            if contains(repo, Some(local.id()), remote.id()) {
                Ok(local)
            } else if contains(repo, Some(remote.id()), local.id()) {
                Ok(remote)
            } else {
                Err(format!(
                    "{branch} and origin/{branch} have diverged: bring {branch} up to date with `git pull` first"
                ))
            }
        }
        (Some(one), None) | (None, Some(one)) => Ok(one),
        (None, None) => Err(format!("there is no branch {branch}, nor origin/{branch}")),
    }
}

/// Whether HEAD is on `branch` (not detached, not another branch).
fn head_on(repo: &Repository, branch: &str) -> bool {
    let branch_ref = format!("refs/heads/{branch}");
    repo.head()
        .ok()
        .is_some_and(|h| h.is_branch() && h.name().ok() == Some(branch_ref.as_str()))
}

/// When HEAD is on `branch` and holds `files`, makes the work tree and index hold them
/// too, for these paths only: a release commit must not leave `git status` showing its
/// own revert.
fn sync_index(repo: &Repository, branch: &str, files: &[(String, &[u8])]) -> Result<(), String> {
    let head_holds = head_on(repo, branch)
        && repo
            .head()
            .and_then(|h| h.peel_to_commit())
            .is_ok_and(|head| holds(repo, &head, files));
    if !head_holds {
        return Ok(());
    }
    let workdir = repo
        .workdir()
        .ok_or("the repository has no work tree")?
        .to_owned();
    let mut index = repo.index().map_err(text)?;
    for (path, bytes) in files {
        let on_disk = workdir.join(path);
        if std::fs::read(&on_disk).ok().as_deref() != Some(*bytes) {
            crate::ota_files::write_atomic(&on_disk, bytes).map_err(|e| e.to_string())?;
        }
        index.add_path(std::path::Path::new(path)).map_err(text)?;
    }
    index.write().map_err(text)
}

/// Commits `files` over `parent`'s tree on `branch`. When HEAD is on `branch` it must be
/// `parent`, and the work tree and index follow the commit for these paths, and only
/// these; else (a detached HEAD at a tagged source) only the branch moves.
fn commit_files(
    repo: &Repository,
    branch: &str,
    parent: &git2::Commit<'_>,
    files: &[(String, &[u8])],
    message: &str,
) -> Result<Oid, String> {
    let on_branch = head_on(repo, branch);
    if on_branch
        && repo
            .head()
            .and_then(|h| h.peel_to_commit())
            .map(|h| h.id())
            .ok()
            != Some(parent.id())
    {
        return Err(format!(
            "{branch} is behind origin/{branch}: bring it up to date with `git pull --ff-only` first"
        ));
    }
    let mut tree = git2::Index::new().map_err(text)?;
    tree.read_tree(&parent.tree().map_err(text)?)
        .map_err(text)?;
    for (path, bytes) in files {
        let blob = repo.blob(bytes).map_err(text)?;
        tree.add(&index_entry(path, blob, bytes.len()))
            .map_err(text)?;
    }
    let tree = repo
        .find_tree(tree.write_tree_to(repo).map_err(text)?)
        .map_err(text)?;
    let signature = signature(repo)?;
    let branch_ref = format!("refs/heads/{branch}");
    let update = if on_branch { "HEAD" } else { &branch_ref };
    let commit = repo
        .commit(
            Some(update),
            &signature,
            &signature,
            message,
            &tree,
            &[parent],
        )
        .map_err(text)?;
    sync_index(repo, branch, files)?;
    Ok(commit)
}

fn index_entry(path: &str, blob: Oid, len: usize) -> git2::IndexEntry {
    git2::IndexEntry {
        ctime: git2::IndexTime::new(0, 0),
        mtime: git2::IndexTime::new(0, 0),
        dev: 0,
        ino: 0,
        mode: 0o100644,
        uid: 0,
        gid: 0,
        file_size: u32::try_from(len).unwrap_or(u32::MAX),
        id: blob,
        flags: 0,
        flags_extended: 0,
        path: path.as_bytes().to_vec(),
    }
}

/// When `tip` holds `files`, the commit that brought them: the oldest on the first-parent
/// line down from `tip` that still holds them all, but never past a merge, which is how
/// a release the remote refused as behind joins the remote's work. Work committed on
/// top of a release (after a failed push, say) is not the release, and must not be
/// tagged or pushed as it.
fn brought(repo: &Repository, tip: &git2::Commit<'_>, files: &[(String, &[u8])]) -> Option<Oid> {
    if !holds(repo, tip, files) {
        return None;
    }
    let mut at = tip.clone();
    while at.parent_count() == 1
        && let Ok(parent) = at.parent(0)
    {
        if !holds(repo, &parent, files) {
            break;
        }
        at = parent;
    }
    Some(at.id())
}

/// Whether `commit`'s tree has every file with exactly these bytes.
fn holds(repo: &Repository, commit: &git2::Commit<'_>, files: &[(String, &[u8])]) -> bool {
    let Ok(tree) = commit.tree() else {
        return false;
    };
    files.iter().all(|(path, bytes)| {
        tree.get_path(std::path::Path::new(path))
            .and_then(|entry| repo.find_blob(entry.id()))
            .is_ok_and(|blob| blob.content() == *bytes)
    })
}

fn signature(repo: &Repository) -> Result<git2::Signature<'static>, String> {
    repo.signature()
        .or_else(|_| git2::Signature::now("clockrel", "clockrel@localhost"))
        .map(|s| s.to_owned())
        .map_err(text)
}

/// Makes the annotated tag at `commit`; a tag already there is fine, one elsewhere is not.
pub fn ensure_tag(
    repo: &Repository,
    tag: &str,
    commit: Oid,
    title: &str,
) -> Result<Outcome, String> {
    if let Ok(existing) = repo.revparse_single(&format!("refs/tags/{tag}")) {
        let at = existing.peel_to_commit().map_err(text)?.id();
        return if at == commit {
            Ok(Outcome::AlreadyThere)
        } else {
            Err(format!(
                "tag {tag} already points at {}, not at the release commit {}",
                short(at),
                short(commit)
            ))
        };
    }
    let target = repo.find_object(commit, None).map_err(text)?;
    repo.tag(tag, &target, &signature(repo)?, title, false)
        .map_err(text)?;
    Ok(Outcome::Done)
}

/// Whether the remote's `branch` (at `remote`, if it has it) already contains `commit`.
pub fn contains(repo: &Repository, remote: Option<Oid>, commit: Oid) -> bool {
    remote
        .is_some_and(|tip| tip == commit || repo.graph_descendant_of(tip, commit).unwrap_or(false))
}

/// A remote reached with a token, offered once per connection: libgit2 would otherwise
/// ask again forever.
pub struct Remote<'r> {
    repo: &'r Repository,
    url: String,
    token: &'r Secret,
}

/// How long libgit2 may wait to connect, and then for each answer of the server: a
/// remote that stops answering must fail the push (and so release R2, which waits for
/// it), not hold the release until CI's time runs out.
const CONNECT_TIMEOUT_MS: i32 = 15_000;
const SERVER_TIMEOUT_MS: i32 = 120_000;

/// Sets libgit2's network timeouts once, before the first remote operation.
#[allow(unsafe_code)] // libgit2's global options; see SAFETY
fn set_network_timeouts() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // SAFETY: git_libgit2_opts with these options only stores two integers that
        // network operations read; the Once runs it before this process's first one.
        unsafe {
            let _ = git2::opts::set_server_connect_timeout_in_milliseconds(CONNECT_TIMEOUT_MS);
            let _ = git2::opts::set_server_timeout_in_milliseconds(SERVER_TIMEOUT_MS);
        }
    });
}

impl<'r> Remote<'r> {
    pub fn new(repo: &'r Repository, url: &str, token: &'r Secret) -> Remote<'r> {
        set_network_timeouts();
        Remote {
            repo,
            url: url.to_owned(),
            token,
        }
    }

    fn bad_credentials(&self, message: String) -> RemoteError {
        RemoteError {
            message,
            hint: Some(format!(
                "the remote refused the credentials: check {} (it needs Contents: write)",
                super::ENV_TOKEN.join(" or ")
            )),
        }
    }

    /// The remote's refs and where they point.
    pub fn refs(&self) -> Result<Vec<(String, Oid)>, RemoteError> {
        let mut remote = self
            .repo
            .remote_anonymous(&self.url)
            .map_err(|e| RemoteError::new(text(e)))?;
        let refused = Cell::new(false);
        let connection = remote.connect_auth(
            git2::Direction::Push,
            Some(self.callbacks(&refused, None)),
            None,
        );
        match connection {
            // git2 unwraps each ref name as UTF-8: a remote that lists another is
            // answered with an error, not a crash that loses the report.
            Ok(connection) => catch_panic(
                "the remote's list of refs",
                AssertUnwindSafe(|| {
                    connection.list().map(|heads| {
                        heads
                            .iter()
                            .map(|h| (h.name().to_owned(), h.oid()))
                            .collect()
                    })
                }),
            )
            .map_err(|panicked| RemoteError::new(panicked.to_string()))?
            .map_err(|e| RemoteError::new(text(e))),
            Err(e) if refused.get() || e.message().contains("401") => {
                Err(self.bad_credentials(text(e)))
            }
            Err(e) => Err(RemoteError::new(text(e))),
        }
    }

    /// Pushes `refspecs`; a ref the server refuses is an error with its reason (git2
    /// returns Ok for those and reports them per ref).
    pub fn push(&self, refspecs: &[String]) -> Result<(), RemoteError> {
        let mut remote = self
            .repo
            .remote_anonymous(&self.url)
            .map_err(|e| RemoteError::new(text(e)))?;
        let refused = Cell::new(false);
        let rejected = RefCell::new(Vec::new());
        let pushed = {
            let mut options = git2::PushOptions::new();
            options.remote_callbacks(self.callbacks(&refused, Some(&rejected)));
            // git2 unwraps the server's reason for refusing a ref as UTF-8.
            catch_panic(
                "the remote's answer to the push",
                AssertUnwindSafe(|| remote.push(refspecs, Some(&mut options))),
            )
            .map_err(|panicked| RemoteError::new(panicked.to_string()))?
        };
        let rejected = rejected.into_inner();
        match pushed {
            Err(e) if refused.get() => Err(self.bad_credentials(text(e))),
            Err(e) => Err(RemoteError {
                hint: behind_hint(e.message()),
                message: text(e),
            }),
            Ok(()) if !rejected.is_empty() => {
                let reasons = rejected.join("; ");
                Err(RemoteError {
                    hint: behind_hint(&reasons),
                    message: format!("the remote rejected {reasons}"),
                })
            }
            Ok(()) => Ok(()),
        }
    }

    fn callbacks<'a>(
        &'a self,
        refused: &'a Cell<bool>,
        rejected: Option<&'a RefCell<Vec<String>>>,
    ) -> git2::RemoteCallbacks<'a> {
        let mut callbacks = git2::RemoteCallbacks::new();
        let offered = Cell::new(false);
        callbacks.credentials(move |_, _, _| {
            if offered.replace(true) {
                refused.set(true);
                return Err(git2::Error::from_str("authentication failed"));
            }
            git2::Cred::userpass_plaintext(TOKEN_USER, self.token.expose())
        });
        if let Some(rejected) = rejected {
            callbacks.push_update_reference(move |name, status| {
                if let Some(reason) = status {
                    rejected.borrow_mut().push(format!("{name} ({reason})"));
                }
                Ok(())
            });
        }
        callbacks
    }
}

fn behind_hint(message: &str) -> Option<String> {
    // libgit2 finds it before sending ("... not present locally"); a server says "non-fast-forward".
    (message.contains("fast-forward")
        || message.contains("fastforward")
        || message.contains("not present locally"))
    .then(|| "the remote branch has commits this one lacks: pull, then publish again".to_owned())
}
