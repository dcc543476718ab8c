//! The committed `manifests/` tree: one directory per environment, one object per file, plus a
//! `kustomization.yaml`. Writing is deterministic byte for byte (stable key order, no
//! timestamps) and leaves unchanged files alone; checking compares without writing, and asks
//! git whether the environment files and the tree are committed.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use similar::TextDiff;

use crate::env::Environment;
use crate::render::Manifest;

/// The files of one environment's directory: file name → content.
pub type EnvFiles = BTreeMap<String, String>;

/// Why the tree could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum TreeError {
    /// A file or directory operation failed.
    #[error("cannot {action} {path}: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The path.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// An object could not be written as YAML.
    #[error("cannot write {file} as YAML: {message}")]
    Yaml {
        /// File name.
        file: String,
        /// The serializer's message.
        message: String,
    },
}

fn io<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> TreeError + 'a {
    move |source| TreeError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

/// The header of every rendered file. Paths are relative to the repository root, so the
/// bytes do not depend on where the repository is checked out.
fn header(env: &Environment, note: Option<&str>) -> String {
    let file = |p: &Path| {
        format!(
            "environments/{}",
            p.file_name().and_then(|n| n.to_str()).unwrap_or_default()
        )
    };
    let mut source = file(&env.file);
    if let Some(defaults) = &env.defaults_file {
        source.push_str(&format!(" (over {})", file(defaults)));
    }
    let mut text = format!(
        "# Rendered by infra-gen from {source}.\n# Do not edit by hand: change the environment file, then run `infra-gen render`.\n"
    );
    if let Some(note) = note {
        text.push_str(&format!("# {note}\n"));
    }
    text
}

/// Turns an environment's objects into its files, `kustomization.yaml` included.
pub fn files(env: &Environment, manifests: &[Manifest]) -> Result<EnvFiles, TreeError> {
    let mut out = EnvFiles::new();
    for m in manifests {
        let file = m.file_name();
        let yaml = serde_saphyr::to_string(&m.body).map_err(|e| TreeError::Yaml {
            file: file.clone(),
            message: e.to_string(),
        })?;
        out.insert(file, format!("{}{yaml}", header(env, m.note)));
    }
    let resources: Vec<&String> = out.keys().collect();
    let kustomization = serde_json::json!({
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": resources,
    });
    let yaml = serde_saphyr::to_string(&kustomization).map_err(|e| TreeError::Yaml {
        file: KUSTOMIZATION.into(),
        message: e.to_string(),
    })?;
    let text = format!(
        "{}# `kubectl apply -k` works for rolling workloads; blue-green and stateful ones need `infra-gen apply`.\n{yaml}",
        header(env, None)
    );
    out.insert(KUSTOMIZATION.into(), text);
    Ok(out)
}

/// The kustomization file name.
pub const KUSTOMIZATION: &str = "kustomization.yaml";

/// What writing changed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct WriteReport {
    /// Files created or changed.
    pub written: Vec<PathBuf>,
    /// Files already up to date.
    pub unchanged: usize,
    /// Files and directories that no longer belong and were removed.
    pub removed: Vec<PathBuf>,
}

/// Writes `rendered` (environment → files) under `manifests_dir`. Files of a rendered
/// environment that are no longer produced are removed; with `all` (every environment was
/// rendered), directories of environments that no longer exist are removed too.
pub fn write(
    manifests_dir: &Path,
    rendered: &BTreeMap<String, EnvFiles>,
    all: bool,
) -> Result<WriteReport, TreeError> {
    let mut report = WriteReport::default();
    std::fs::create_dir_all(manifests_dir).map_err(io("create", manifests_dir))?;
    for (env, files) in rendered {
        let dir = manifests_dir.join(env);
        std::fs::create_dir_all(&dir).map_err(io("create", &dir))?;
        for (name, content) in files {
            let path = dir.join(name);
            if std::fs::read_to_string(&path).ok().as_deref() == Some(content.as_str()) {
                report.unchanged += 1;
                continue;
            }
            // Write next to the target, then rename: a reader never sees half a file.
            let tmp = dir.join(format!(".{name}.tmp"));
            std::fs::write(&tmp, content).map_err(io("write", &tmp))?;
            std::fs::rename(&tmp, &path).map_err(io("replace", &path))?;
            report.written.push(path);
        }
        for stale in list_files(&dir)?.difference(&files.keys().cloned().collect()) {
            let path = dir.join(stale);
            std::fs::remove_file(&path).map_err(io("remove", &path))?;
            report.removed.push(path);
        }
    }
    if all {
        for dir in list_dirs(manifests_dir)? {
            if !rendered.contains_key(&dir) {
                let path = manifests_dir.join(&dir);
                std::fs::remove_dir_all(&path).map_err(io("remove", &path))?;
                report.removed.push(path);
            }
        }
    }
    Ok(report)
}

fn list_files(dir: &Path) -> Result<BTreeSet<String>, TreeError> {
    if !dir.exists() {
        return Ok(BTreeSet::new());
    }
    Ok(std::fs::read_dir(dir)
        .map_err(io("list", dir))?
        .filter_map(Result::ok)
        .filter(|e| e.path().is_file())
        .filter_map(|e| e.file_name().into_string().ok())
        .collect())
}

fn list_dirs(dir: &Path) -> Result<BTreeSet<String>, TreeError> {
    if !dir.exists() {
        return Ok(BTreeSet::new());
    }
    Ok(std::fs::read_dir(dir)
        .map_err(io("list", dir))?
        .filter_map(Result::ok)
        .filter(|e| e.path().is_dir())
        .filter_map(|e| e.file_name().into_string().ok())
        .collect())
}

/// How the tree on disk differs from what the environment files render.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Drift {
    /// Files whose content differs, with a short unified diff (disk → rendered).
    pub differing: Vec<(PathBuf, String)>,
    /// Files that should exist but do not.
    pub missing: Vec<PathBuf>,
    /// Files or directories that exist but are no longer produced.
    pub stale: Vec<PathBuf>,
}

impl Drift {
    /// Whether the tree matches.
    pub fn is_clean(&self) -> bool {
        self.differing.is_empty() && self.missing.is_empty() && self.stale.is_empty()
    }
}

/// Compares `rendered` with the tree under `manifests_dir` without writing anything.
pub fn check(
    manifests_dir: &Path,
    rendered: &BTreeMap<String, EnvFiles>,
    all: bool,
) -> Result<Drift, TreeError> {
    let mut drift = Drift::default();
    for (env, files) in rendered {
        let dir = manifests_dir.join(env);
        for (name, content) in files {
            let path = dir.join(name);
            match std::fs::read_to_string(&path) {
                Ok(on_disk) if on_disk == *content => {}
                Ok(on_disk) => drift
                    .differing
                    .push((path.clone(), short_diff(&path, &on_disk, content))),
                Err(_) => drift.missing.push(path),
            }
        }
        for stale in list_files(&dir)?.difference(&files.keys().cloned().collect()) {
            drift.stale.push(dir.join(stale));
        }
    }
    if all {
        for dir in list_dirs(manifests_dir)? {
            if !rendered.contains_key(&dir) {
                drift.stale.push(manifests_dir.join(dir));
            }
        }
    }
    Ok(drift)
}

/// At most 40 lines of unified diff.
fn short_diff(path: &Path, old: &str, new: &str) -> String {
    let name = path.display().to_string();
    let diff = TextDiff::from_lines(old, new)
        .unified_diff()
        .context_radius(2)
        .header(
            &format!("{name} (committed)"),
            &format!("{name} (rendered)"),
        )
        .to_string();
    let lines: Vec<&str> = diff.lines().collect();
    if lines.len() > 40 {
        format!(
            "{}\n… {} more lines",
            lines[..40].join("\n"),
            lines.len() - 40
        )
    } else {
        diff
    }
}

/// Paths under `root` that git does not have committed as they are: untracked, modified or
/// staged-but-uncommitted. `None` when `root` is not in a git repository.
pub fn uncommitted(root: &Path, prefixes: &[&str]) -> Option<Vec<(String, &'static str)>> {
    let repo = git2::Repository::discover(root).ok()?;
    let workdir = repo.workdir()?.to_path_buf();
    let root = root.canonicalize().ok()?;
    let workdir = workdir.canonicalize().ok()?;
    let relative_root = root.strip_prefix(&workdir).ok()?.to_path_buf();
    let mut options = git2::StatusOptions::new();
    options
        .include_untracked(true)
        .recurse_untracked_dirs(true)
        .include_ignored(false);
    let statuses = repo.statuses(Some(&mut options)).ok()?;
    let mut out = Vec::new();
    for entry in statuses.iter() {
        let Ok(path) = entry.path() else { continue };
        let Ok(inside) = Path::new(path).strip_prefix(&relative_root) else {
            continue;
        };
        let inside = inside.to_string_lossy().to_string();
        if !prefixes.iter().any(|p| inside.starts_with(p)) {
            continue;
        }
        let status = entry.status();
        let what = if status.is_wt_new() {
            "untracked"
        } else if status.is_index_new() || status.is_index_modified() || status.is_index_deleted() {
            "staged, not committed"
        } else if status.is_wt_deleted() {
            "deleted, not committed"
        } else {
            "modified, not committed"
        };
        out.push((inside, what));
    }
    out.sort();
    Some(out)
}
