//! Staged artifact directories: everything is written under a hidden sibling of the
//! final path and renamed into place only when complete, so a crash, a failure or a
//! Ctrl-C never leaves a half-written artifact where a finished one is expected.

use crate::{Error, IoContext, Result};
use std::fs;
use std::path::{Path, PathBuf};

/// A directory being written. Dropping it without [`StagedDir::commit`] removes it.
#[derive(Debug)]
pub struct StagedDir {
    staging: PathBuf,
    target: PathBuf,
    overwrite: bool,
    committed: bool,
}

impl StagedDir {
    /// Prepares to write `target`. Fails if `target` exists and `overwrite` is false,
    /// or if its parent directory cannot be written.
    ///
    /// The staging directory sits next to `target` (same filesystem) so the final
    /// rename is atomic.
    pub fn create(target: &Path, overwrite: bool) -> Result<Self> {
        if target.exists() && !overwrite {
            return Err(Error::OutputExists {
                path: target.to_path_buf(),
            });
        }
        let name = target
            .file_name()
            .ok_or_else(|| {
                Error::Spec(format!(
                    "output path {} has no final component",
                    target.display()
                ))
            })?
            .to_string_lossy()
            .into_owned();
        let parent = match target.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        fs::create_dir_all(&parent).at(&parent)?;
        remove_abandoned(&parent, &name);
        let staging = parent.join(format!(".{name}.temper-staging-{}", std::process::id()));
        if staging.exists() {
            fs::remove_dir_all(&staging).at(&staging)?;
        }
        fs::create_dir(&staging).at(&staging)?;
        Ok(StagedDir {
            staging,
            target: target.to_path_buf(),
            overwrite,
            committed: false,
        })
    }

    /// Where a replaced output waits until the new one is in place (unique per process, so
    /// concurrent or crashed runs never collide).
    fn aside_path(&self) -> PathBuf {
        let name = self
            .target
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        self.staging
            .with_file_name(format!(".{name}.temper-replaced-{}", std::process::id()))
    }

    /// Where files are written until commit.
    pub fn path(&self) -> &Path {
        &self.staging
    }

    /// The final location.
    pub fn target(&self) -> &Path {
        &self.target
    }

    /// Flushes every file written so far to disk (commit does it again for whatever came
    /// later; files already flushed cost almost nothing the second time).
    pub fn sync(&self) -> Result<()> {
        sync_tree(&self.staging)
    }

    /// Flushes every file to disk and renames the staging directory into place.
    /// An existing target (allowed by `overwrite`) is moved aside first and removed
    /// only after the new artifact is in place.
    pub fn commit(mut self) -> Result<PathBuf> {
        sync_tree(&self.staging)?;
        let mut old = None;
        if self.target.exists() {
            if !self.overwrite {
                return Err(Error::OutputExists {
                    path: self.target.clone(),
                });
            }
            let aside = self.aside_path();
            fs::rename(&self.target, &aside).at(&self.target)?;
            old = Some(aside);
        }
        if let Err(e) = fs::rename(&self.staging, &self.target) {
            if let Some(aside) = &old {
                // Put the previous artifact back: losing it would be worse than failing.
                let _ = fs::rename(aside, &self.target);
            }
            return Err(Error::io(&self.target, e));
        }
        self.committed = true;
        if let Some(parent) = self.target.parent() {
            if let Ok(dir) = fs::File::open(if parent.as_os_str().is_empty() {
                Path::new(".")
            } else {
                parent
            }) {
                let _ = dir.sync_all();
            }
        }
        if let Some(aside) = old {
            // The new artifact is in place: failing to delete the old copy must not turn
            // a finished job into a failed one. It stays beside the output, named clearly.
            if let Err(e) = fs::remove_dir_all(&aside) {
                eprintln!(
                    "warning: could not remove the replaced output {}: {e}",
                    aside.display()
                );
            }
        }
        Ok(self.target.clone())
    }
}

impl Drop for StagedDir {
    fn drop(&mut self) {
        if !self.committed {
            let _ = fs::remove_dir_all(&self.staging);
        }
    }
}

/// Removes staging and replaced-output directories of `name` left by runs that were
/// killed (a second Ctrl-C, SIGKILL, a power cut): their process no longer exists.
/// Only Linux exposes processes under /proc; elsewhere nothing is removed.
fn remove_abandoned(parent: &Path, name: &str) {
    if !Path::new("/proc/self").exists() {
        return;
    }
    let Ok(entries) = fs::read_dir(parent) else {
        return;
    };
    for entry in entries.filter_map(|e| e.ok()) {
        let file_name = entry.file_name().to_string_lossy().into_owned();
        let pid = [".temper-staging-", ".temper-replaced-"]
            .iter()
            .find_map(|tag| file_name.strip_prefix(&format!(".{name}{tag}")))
            .and_then(|pid| pid.parse::<u32>().ok());
        if let Some(pid) = pid {
            if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
                let _ = fs::remove_dir_all(entry.path());
            }
        }
    }
}

fn sync_tree(dir: &Path) -> Result<()> {
    for entry in fs::read_dir(dir).at(dir)? {
        let entry = entry.at(dir)?;
        let path = entry.path();
        if entry.file_type().at(&path)?.is_dir() {
            sync_tree(&path)?;
        } else {
            fs::File::open(&path).and_then(|f| f.sync_all()).at(&path)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dropped_stage_leaves_nothing() {
        let root = tempfile::tempdir().unwrap();
        let target = root.path().join("out");
        {
            let stage = StagedDir::create(&target, false).unwrap();
            fs::write(stage.path().join("a"), b"x").unwrap();
        }
        assert!(!target.exists());
        assert_eq!(fs::read_dir(root.path()).unwrap().count(), 0);
    }

    #[test]
    fn commit_renames_and_refuses_existing() {
        let root = tempfile::tempdir().unwrap();
        let target = root.path().join("out");
        let stage = StagedDir::create(&target, false).unwrap();
        fs::write(stage.path().join("a"), b"x").unwrap();
        stage.commit().unwrap();
        assert_eq!(fs::read(target.join("a")).unwrap(), b"x");
        let err = StagedDir::create(&target, false).unwrap_err();
        assert!(matches!(err, Error::OutputExists { .. }), "{err}");
    }

    #[test]
    fn leftovers_of_dead_processes_are_removed() {
        let root = tempfile::tempdir().unwrap();
        let target = root.path().join("out");
        // pid 0 never names a user process; our own pid is alive and must be kept.
        let dead = root.path().join(".out.temper-staging-0");
        let other = root.path().join(".other.temper-staging-0");
        fs::create_dir(&dead).unwrap();
        fs::create_dir(&other).unwrap();
        let stage = StagedDir::create(&target, false).unwrap();
        assert!(!dead.exists());
        assert!(
            other.exists(),
            "another output's staging must be left alone"
        );
        drop(stage);
    }

    #[test]
    fn overwrite_replaces_whole_directory() {
        let root = tempfile::tempdir().unwrap();
        let target = root.path().join("out");
        fs::create_dir(&target).unwrap();
        fs::write(target.join("stale"), b"old").unwrap();
        let stage = StagedDir::create(&target, true).unwrap();
        fs::write(stage.path().join("fresh"), b"new").unwrap();
        stage.commit().unwrap();
        assert!(!target.join("stale").exists());
        assert!(target.join("fresh").exists());
        assert_eq!(fs::read_dir(root.path()).unwrap().count(), 1);
    }
}
