//! Where soup writes what a user asked for: every `--out` folder or file goes through here, so
//! that no command deletes what soup did not write.
//!
//! Folders ([`StagedDir`]): written into a temporary sibling, then renamed into place, so a
//! failure leaves nothing half-written. The target must be new or empty; a non-empty one is
//! replaced only with `--force`, and never when it is `/`, the home or current directory, one
//! of the command's inputs, an ancestor of any of these, or inside the data dir: those are
//! refused whatever the flags say.
//!
//! Files ([`StagedFile`]): written to a temporary sibling and renamed over the target, and
//! refused when the target is one of the inputs. "The same file" is decided by device and
//! inode as well as by canonical path, so a hard link or a symlink to an input is caught.

use std::ffi::OsString;
use std::path::{Component, Path, PathBuf};

/// Why an output path was refused or could not be written.
#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    #[error(
        "{path} is not empty ({entries} entries): soup writes only to a new or empty folder, so \
         nothing of yours is deleted; choose another --out, or pass --force to replace it"
    )]
    NotEmpty { path: PathBuf, entries: usize },
    #[error("{path} is a file, not a folder: choose another --out, or pass --force to replace it")]
    NotAFolder { path: PathBuf },
    #[error("{path} is a folder: --out names the file to write")]
    IsAFolder { path: PathBuf },
    #[error("refusing to write to {path}: it is {what}; replacing it would delete it (--force does not change this): choose a new folder")]
    Protected { path: PathBuf, what: String },
    #[error("--out {path} is {what}: writing there would destroy it; write elsewhere")]
    SameAsInput { path: PathBuf, what: String },
    #[error("{path}: not a usable output path ({why})")]
    BadPath { path: PathBuf, why: &'static str },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

type Result<T, E = OutputError> = std::result::Result<T, E>;

fn io(path: &Path, source: std::io::Error) -> OutputError {
    OutputError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// What an output must not harm: the command's inputs (files or folders), the data dir, and
/// whether a non-empty target may be replaced.
#[derive(Debug, Clone, Default)]
pub struct OutputRules {
    /// `--force`: replace a non-empty folder (or a file where a folder goes).
    pub force: bool,
    /// Paths the command reads: the output may not be one of them nor an ancestor of one.
    pub inputs: Vec<PathBuf>,
    /// The data dir: the output may be neither it, inside it, nor an ancestor of it.
    pub data_dir: Option<PathBuf>,
}

impl OutputRules {
    pub fn new(force: bool) -> Self {
        OutputRules {
            force,
            ..Default::default()
        }
    }

    pub fn input(mut self, path: impl Into<PathBuf>) -> Self {
        self.inputs.push(path.into());
        self
    }

    pub fn data_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.data_dir = Some(dir.into());
        self
    }

    /// Each of `specs` that is a path on disk, as an input (the others are names of stored
    /// adapters or models, which an output cannot harm).
    pub fn existing_inputs<P: AsRef<Path>>(mut self, specs: impl IntoIterator<Item = P>) -> Self {
        for p in specs {
            let p = p.as_ref();
            if p.exists() {
                self.inputs.push(p.to_path_buf());
            }
        }
        self
    }
}

/// `path` made absolute and free of `.`, `..` and symlinks in the part that exists, without
/// requiring the path itself to exist.
pub fn resolve(path: &Path) -> Result<PathBuf> {
    let abs = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir().map_err(|e| io(path, e))?.join(path)
    };
    // The longest existing prefix, canonicalized; the rest appended lexically.
    let mut existing = abs.clone();
    let mut rest: Vec<OsString> = Vec::new();
    loop {
        if std::fs::symlink_metadata(&existing).is_ok() {
            break;
        }
        match (existing.file_name(), existing.parent()) {
            (Some(name), Some(parent)) => {
                rest.push(name.to_os_string());
                existing = parent.to_path_buf();
            }
            _ => break,
        }
    }
    let mut out = std::fs::canonicalize(&existing).unwrap_or(existing);
    for part in rest.iter().rev() {
        match Path::new(part).components().next() {
            Some(Component::ParentDir) => {
                out.pop();
            }
            Some(Component::CurDir) | None => {}
            _ => out.push(part),
        }
    }
    Ok(out)
}

/// Device and inode of what `path` names (following symlinks), where the platform has them.
#[cfg(unix)]
fn file_id(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

#[cfg(not(unix))]
fn file_id(_path: &Path) -> Option<(u64, u64)> {
    None
}

/// True when `a` and `b` name the same file or folder: equal canonical paths, or the same
/// device and inode (hard links, bind mounts).
pub fn same_file(a: &Path, b: &Path) -> bool {
    if let (Ok(ra), Ok(rb)) = (resolve(a), resolve(b)) {
        if ra == rb {
            return true;
        }
    }
    matches!((file_id(a), file_id(b)), (Some(x), Some(y)) if x == y)
}

/// True when `dir` is `path` or one of its ancestors, by path or by device and inode.
fn is_at_or_above(dir: &Path, path: &Path) -> bool {
    let Ok(rp) = resolve(path) else { return false };
    let Ok(rd) = resolve(dir) else { return false };
    if rp.starts_with(&rd) {
        return true;
    }
    let Some(id) = file_id(&rd) else { return false };
    rp.ancestors().any(|a| file_id(a) == Some(id))
}

/// What soup itself keeps in a data dir; anything else there is the user's.
const DATA_DIR_ENTRIES: &[&str] = &[
    "db",
    "tensors",
    "set-aside",
    "soup.pid",
    "soup.log",
    "models",
    "jobs",
    "exports",
    "cache",
];

/// True when `path` is one of soup's own entries in the data dir, or inside one.
fn in_soups_own_files(data: &Path, path: &Path) -> bool {
    let (Ok(rd), Ok(rp)) = (resolve(data), resolve(path)) else {
        return false;
    };
    match rp
        .strip_prefix(&rd)
        .ok()
        .and_then(|r| r.components().next())
    {
        Some(Component::Normal(first)) => DATA_DIR_ENTRIES.iter().any(|e| first == *e),
        _ => false,
    }
}

/// The folders no output may replace, whatever the flags: the filesystem root, home, the
/// current directory, each with a word for the message.
fn always_protected() -> Vec<(PathBuf, String)> {
    let mut out = vec![(PathBuf::from("/"), "the filesystem root".to_string())];
    if let Some(home) = std::env::var_os("HOME").filter(|h| !h.is_empty()) {
        out.push((PathBuf::from(home), "your home folder".into()));
    }
    if let Ok(cwd) = std::env::current_dir() {
        out.push((cwd, "the current directory".into()));
    }
    out
}

/// Checks `target` as an output folder under `rules` without writing anything: what a
/// command calls before it records a job, so a refusal leaves no failed run behind.
pub fn check_dir(target: &Path, rules: &OutputRules) -> Result<()> {
    let resolved = resolve(target)?;
    if resolved.file_name().is_none() {
        return Err(OutputError::Protected {
            path: target.to_path_buf(),
            what: "the filesystem root".into(),
        });
    }
    for (p, what) in always_protected() {
        if is_at_or_above(&resolved, &p) {
            let what = if resolve(&p).ok() == Some(resolved.clone()) {
                what
            } else {
                format!("a folder that holds {what} ({})", p.display())
            };
            return Err(OutputError::Protected {
                path: target.to_path_buf(),
                what,
            });
        }
    }
    for input in &rules.inputs {
        if is_at_or_above(&resolved, input) {
            let what = if same_file(&resolved, input) {
                format!("one of the inputs ({})", input.display())
            } else {
                format!("a folder that holds the input {}", input.display())
            };
            return Err(OutputError::SameAsInput {
                path: target.to_path_buf(),
                what,
            });
        }
    }
    if let Some(data) = &rules.data_dir {
        if is_at_or_above(&resolved, data) || in_soups_own_files(data, &resolved) {
            return Err(OutputError::Protected {
                path: target.to_path_buf(),
                what: format!("the data dir {} or soup's own files in it", data.display()),
            });
        }
    }
    match std::fs::symlink_metadata(&resolved) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io(target, e)),
        Ok(m) if m.is_dir() => {
            let entries = std::fs::read_dir(&resolved)
                .map_err(|e| io(target, e))?
                .count();
            if entries > 0 && !rules.force {
                Err(OutputError::NotEmpty {
                    path: target.to_path_buf(),
                    entries,
                })
            } else {
                Ok(())
            }
        }
        Ok(_) if rules.force => Ok(()),
        Ok(_) => Err(OutputError::NotAFolder {
            path: target.to_path_buf(),
        }),
    }
}

/// A folder being written: fill [`StagedDir::path`], then [`StagedDir::commit`] renames it
/// into place. Dropped without commit, it is removed and the target is untouched.
#[derive(Debug)]
pub struct StagedDir {
    target: PathBuf,
    force: bool,
    staging: tempfile::TempDir,
}

impl StagedDir {
    /// Checks `target` ([`check_dir`]) and creates the temporary sibling to fill.
    pub fn new(target: &Path, rules: &OutputRules) -> Result<StagedDir> {
        check_dir(target, rules)?;
        let resolved = resolve(target)?;
        let parent = resolved
            .parent()
            .ok_or(OutputError::BadPath {
                path: target.to_path_buf(),
                why: "it has no parent folder",
            })?
            .to_path_buf();
        std::fs::create_dir_all(&parent).map_err(|e| io(&parent, e))?;
        let name = resolved
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let staging = tempfile::Builder::new()
            .prefix(&format!(".{name}.soup-"))
            .tempdir_in(&parent)
            .map_err(|e| io(&parent, e))?;
        Ok(StagedDir {
            target: resolved,
            force: rules.force,
            staging,
        })
    }

    /// The folder to write into.
    pub fn path(&self) -> &Path {
        self.staging.path()
    }

    /// Moves the written folder to the target; returns the target. A target that became
    /// non-empty meanwhile is refused (the rename itself checks, atomically) unless `--force`,
    /// which moves the old one aside first and removes it only once the new one is in place.
    pub fn commit(self) -> Result<PathBuf> {
        let StagedDir {
            target,
            force,
            staging,
        } = self;
        let staged = staging.keep();
        let undo = |e: OutputError| {
            let _ = std::fs::remove_dir_all(&staged);
            e
        };
        match std::fs::rename(&staged, &target) {
            Ok(()) => return Ok(target),
            Err(e) if !force => {
                let entries = std::fs::read_dir(&target).map(|d| d.count()).unwrap_or(0);
                return Err(undo(if entries > 0 {
                    OutputError::NotEmpty {
                        path: target.clone(),
                        entries,
                    }
                } else {
                    io(&target, e)
                }));
            }
            Err(_) => {}
        }
        // --force: the old target aside, the new one in, then the old one gone.
        let parent = target.parent().unwrap_or(Path::new("/"));
        let aside = tempfile::Builder::new()
            .prefix(".soup-replaced-")
            .tempdir_in(parent)
            .map_err(|e| undo(io(parent, e)))?;
        let old = aside.path().join("old");
        std::fs::rename(&target, &old).map_err(|e| undo(io(&target, e)))?;
        if let Err(e) = std::fs::rename(&staged, &target) {
            let _ = std::fs::rename(&old, &target);
            return Err(undo(io(&target, e)));
        }
        drop(aside); // removes the replaced folder (or file), which --force asked for
        Ok(target)
    }
}

/// Checks `target` as an output file: not a folder, not one of the inputs (device and inode
/// or canonical path), not inside the data dir.
pub fn check_file(target: &Path, rules: &OutputRules) -> Result<()> {
    let resolved = resolve(target)?;
    if resolved.is_dir() {
        return Err(OutputError::IsAFolder {
            path: target.to_path_buf(),
        });
    }
    for input in &rules.inputs {
        if same_file(target, input) {
            return Err(OutputError::SameAsInput {
                path: target.to_path_buf(),
                what: format!("the input {} itself", input.display()),
            });
        }
    }
    if let Some(data) = &rules.data_dir {
        if in_soups_own_files(data, &resolved) {
            return Err(OutputError::Protected {
                path: target.to_path_buf(),
                what: format!("one of soup's own files in the data dir {}", data.display()),
            });
        }
    }
    Ok(())
}

/// A file being written: write to [`StagedFile::path`], then [`StagedFile::commit`] renames it
/// over the target (so a hard link to the target keeps its old bytes). Dropped without
/// commit, the temporary file is removed.
#[derive(Debug)]
pub struct StagedFile {
    target: PathBuf,
    tmp: tempfile::TempPath,
}

impl StagedFile {
    pub fn new(target: &Path, rules: &OutputRules) -> Result<StagedFile> {
        check_file(target, rules)?;
        let resolved = resolve(target)?;
        let parent = resolved.parent().unwrap_or(Path::new("/")).to_path_buf();
        std::fs::create_dir_all(&parent).map_err(|e| io(&parent, e))?;
        let name = resolved
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let tmp = tempfile::Builder::new()
            .prefix(&format!(".{name}.soup-"))
            .tempfile_in(&parent)
            .map_err(|e| io(&parent, e))?
            .into_temp_path();
        Ok(StagedFile {
            target: resolved,
            tmp,
        })
    }

    /// The file to write.
    pub fn path(&self) -> &Path {
        &self.tmp
    }

    /// Renames the written file over the target.
    pub fn commit(self) -> Result<PathBuf> {
        let target = self.target;
        self.tmp
            .persist(&target)
            .map_err(|e| io(&target, e.error))?;
        Ok(target)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(p: &Path, text: &str) {
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    #[test]
    fn a_new_or_empty_folder_is_written_and_a_full_one_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let rules = OutputRules::default();
        let new = tmp.path().join("new");
        let s = StagedDir::new(&new, &rules).unwrap();
        write(&s.path().join("a.txt"), "a");
        assert_eq!(s.commit().unwrap(), resolve(&new).unwrap());
        assert!(new.join("a.txt").is_file());

        let empty = tmp.path().join("empty");
        std::fs::create_dir(&empty).unwrap();
        let s = StagedDir::new(&empty, &rules).unwrap();
        write(&s.path().join("b.txt"), "b");
        s.commit().unwrap();
        assert!(empty.join("b.txt").is_file());

        // Non-empty: refused, and what it held is untouched.
        let err = StagedDir::new(&new, &rules).unwrap_err();
        assert!(
            matches!(err, OutputError::NotEmpty { entries: 1, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("--force"), "{err}");
        assert_eq!(std::fs::read_to_string(new.join("a.txt")).unwrap(), "a");

        // With --force: replaced.
        let s = StagedDir::new(&new, &OutputRules::new(true)).unwrap();
        write(&s.path().join("c.txt"), "c");
        s.commit().unwrap();
        assert!(!new.join("a.txt").exists() && new.join("c.txt").is_file());
        // No temporary siblings left behind.
        let names: Vec<String> = std::fs::read_dir(tmp.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
    }

    #[test]
    fn a_folder_filled_meanwhile_is_not_overwritten() {
        let tmp = tempfile::tempdir().unwrap();
        let target = tmp.path().join("out");
        let s = StagedDir::new(&target, &OutputRules::default()).unwrap();
        write(&target.join("theirs.txt"), "theirs");
        write(&s.path().join("ours.txt"), "ours");
        assert!(matches!(s.commit(), Err(OutputError::NotEmpty { .. })));
        assert_eq!(
            std::fs::read_to_string(target.join("theirs.txt")).unwrap(),
            "theirs"
        );
        assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 1);
    }

    #[test]
    fn inputs_their_ancestors_and_the_data_dir_are_refused_even_with_force() {
        let tmp = tempfile::tempdir().unwrap();
        let input = tmp.path().join("adapters/a");
        write(&input.join("adapter_config.json"), "{}");
        let data = tmp.path().join("data");
        std::fs::create_dir_all(data.join("db")).unwrap();
        let rules = OutputRules::new(true).input(&input).data_dir(&data);
        for bad in [
            input.clone(),
            tmp.path().join("adapters"),
            tmp.path().join("adapters/a/../a"),
            tmp.path().to_path_buf(),
            data.clone(),
            data.join("db"),
            data.join("tensors/x"),
        ] {
            let err = check_dir(&bad, &rules).unwrap_err();
            assert!(
                matches!(
                    err,
                    OutputError::SameAsInput { .. } | OutputError::Protected { .. }
                ),
                "{}: {err}",
                bad.display()
            );
        }
        // A symlink to the input is the input.
        #[cfg(unix)]
        {
            let link = tmp.path().join("link");
            std::os::unix::fs::symlink(&input, &link).unwrap();
            assert!(check_dir(&link, &rules).is_err());
        }
        assert!(input.join("adapter_config.json").is_file());
        check_dir(&tmp.path().join("elsewhere"), &rules).unwrap();
        // Beside soup's files in the data dir is the user's business.
        check_dir(&data.join("merged"), &rules).unwrap();
    }

    #[test]
    fn root_home_and_current_dir_are_refused() {
        let rules = OutputRules::new(true);
        for bad in [PathBuf::from("/"), PathBuf::from("."), PathBuf::from("..")] {
            let err = check_dir(&bad, &rules).unwrap_err();
            assert!(
                matches!(err, OutputError::Protected { .. }),
                "{bad:?}: {err}"
            );
        }
        if let Some(home) = std::env::var_os("HOME") {
            assert!(check_dir(Path::new(&home), &rules).is_err());
        }
    }

    #[cfg(unix)]
    #[test]
    fn a_hard_link_of_an_input_file_is_the_same_file() {
        let tmp = tempfile::tempdir().unwrap();
        let input = tmp.path().join("pred.jsonl");
        write(&input, "{\"id\":1}\n");
        let link = tmp.path().join("sub/link.jsonl");
        std::fs::create_dir_all(link.parent().unwrap()).unwrap();
        std::fs::hard_link(&input, &link).unwrap();
        let rules = OutputRules::default().input(&input);
        let err = check_file(&link, &rules).unwrap_err();
        assert!(matches!(err, OutputError::SameAsInput { .. }), "{err}");
        let sym = tmp.path().join("sym.jsonl");
        std::os::unix::fs::symlink(&input, &sym).unwrap();
        assert!(check_file(&sym, &rules).is_err());
        assert!(check_file(&tmp.path().join("./sub/../pred.jsonl"), &rules).is_err());
        assert!(matches!(
            check_file(tmp.path(), &rules),
            Err(OutputError::IsAFolder { .. })
        ));
        // A staged file replaces the target's name, never its bytes through a link.
        let out = tmp.path().join("out.jsonl");
        std::fs::hard_link(&input, &out).unwrap();
        let s = StagedFile::new(&out, &OutputRules::default()).unwrap();
        std::fs::write(s.path(), "new").unwrap();
        s.commit().unwrap();
        assert_eq!(std::fs::read_to_string(&out).unwrap(), "new");
        assert_eq!(std::fs::read_to_string(&input).unwrap(), "{\"id\":1}\n");
    }
}
