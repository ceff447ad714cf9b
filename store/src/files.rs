//! The files a store keeps beside its sled database, and the disk-space rules for writing.
//!
//! Adapter tensors live in `<data dir>/tensors/<sha256>.safetensors`, one content-addressed
//! file per blob, not inside sled: sled checks its log as a whole when it opens, so one
//! flipped byte in a large value made the whole database refuse to open. As separate files, a
//! damaged blob fails its SHA-256 check when that one adapter is loaded and nothing else.
//!
//! Disk space: sled stalls (a hang at 0% CPU was seen) or leaves a 0-byte
//! `snap.*.generating` file when the disk fills under it, so every write that can grow the
//! database checks the free space first ([`HEADROOM`] beyond its own bytes) and fails with
//! [`StoreError::DiskFull`] instead. At open, a leftover `snap.*.generating` (only ever a
//! snapshot that was cut short: sled renames it when complete, and we hold the dir's lock) is
//! moved to `<data dir>/set-aside/` rather than deleted, and sled opens from its log.

use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::StoreError;

/// Folder of the adapter tensor files, under the data dir.
pub const TENSORS_DIR: &str = "tensors";
/// Folder that receives files soup moved out of its way (never deleted by soup).
pub const ASIDE_DIR: &str = "set-aside";
/// Free space a write must leave beyond its own bytes: sled grows its log by 512 KiB
/// segments and writes a snapshot when it closes; below this it may stall instead of failing.
pub const HEADROOM: u64 = 2 << 20;

/// How the store asks for the free bytes of the data dir's filesystem (statvfs); a field of
/// the store so tests can play a full disk deterministically.
pub type FreeSpaceProbe = fn(&Path) -> io::Result<u64>;

/// The real probe: bytes available to this user on the filesystem of `dir`.
pub fn statvfs_available(dir: &Path) -> io::Result<u64> {
    fs2::available_space(dir)
}

/// True for "no space left on device" (and a quota that is exhausted).
pub fn is_disk_full(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded
    )
}

/// Fails with [`StoreError::DiskFull`] unless `bytes` plus [`HEADROOM`] fit on the data dir's
/// disk. A probe that fails (an exotic filesystem) lets the write go ahead: the write's own
/// ENOSPC is still turned into the same error.
pub(crate) fn ensure_space(
    probe: FreeSpaceProbe,
    dir: &Path,
    what: &str,
    bytes: u64,
) -> Result<(), StoreError> {
    let needed = bytes.saturating_add(HEADROOM);
    match probe(dir) {
        Ok(available) if available < needed => Err(StoreError::DiskFull {
            dir: dir.to_path_buf(),
            what: what.to_string(),
            needed,
            available,
        }),
        _ => Ok(()),
    }
}

/// An I/O error of a write under the data dir, as the store reports it: ENOSPC becomes
/// [`StoreError::DiskFull`] naming the dir and the space needed.
pub(crate) fn write_error(
    probe: FreeSpaceProbe,
    dir: &Path,
    path: &Path,
    what: &str,
    bytes: u64,
    e: io::Error,
) -> StoreError {
    if is_disk_full(&e) {
        StoreError::DiskFull {
            dir: dir.to_path_buf(),
            what: what.to_string(),
            needed: bytes.saturating_add(HEADROOM),
            available: probe(dir).unwrap_or(0),
        }
    } else {
        StoreError::io(path, e)
    }
}

/// Where the tensors of the blob with SHA-256 `hex` live.
pub(crate) fn tensor_path(data_dir: &Path, hex: &str) -> PathBuf {
    data_dir
        .join(TENSORS_DIR)
        .join(format!("{hex}.safetensors"))
}

fn sha256_hex(bytes: &[u8]) -> String {
    crate::keys::hex(&Sha256::digest(bytes))
}

/// Writes a blob's file (temp file, fsync, rename, fsync of the folder), unless an intact one
/// is there already (content-addressed: same name, same bytes). A failed write leaves no
/// file under the final name.
pub(crate) fn write_tensors(
    probe: FreeSpaceProbe,
    data_dir: &Path,
    hex: &str,
    bytes: &[u8],
    what: &str,
) -> Result<(), StoreError> {
    let path = tensor_path(data_dir, hex);
    if read_checked(&path, hex, bytes.len() as u64).is_ok() {
        return Ok(());
    }
    let len = bytes.len() as u64;
    ensure_space(probe, data_dir, what, len)?;
    let folder = data_dir.join(TENSORS_DIR);
    let fail = |p: &Path, e: io::Error| write_error(probe, data_dir, p, what, len, e);
    std::fs::create_dir_all(&folder).map_err(|e| fail(&folder, e))?;
    let tmp = folder.join(format!(".{hex}.{}.partial", std::process::id()));
    let written = write_synced(&tmp, bytes).and_then(|()| std::fs::rename(&tmp, &path));
    if let Err(e) = written {
        // Our own partial file: removing it gives the space back.
        let _ = std::fs::remove_file(&tmp);
        return Err(fail(&path, e));
    }
    if let Ok(d) = std::fs::File::open(&folder) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Writes `bytes` to a new file at `path` and waits until they are on disk.
fn write_synced(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut f = std::fs::File::create(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

/// Reads a blob's file and checks its length and SHA-256; the error says which check failed.
pub(crate) fn read_checked(path: &Path, hex: &str, len: u64) -> Result<Vec<u8>, String> {
    let mut f = std::fs::File::open(path).map_err(|e| format!("cannot open: {e}"))?;
    let mut out = Vec::with_capacity(len.min(1 << 32) as usize);
    f.read_to_end(&mut out)
        .map_err(|e| format!("cannot read: {e}"))?;
    if out.len() as u64 != len {
        return Err(format!("{} bytes, {len} recorded", out.len()));
    }
    if sha256_hex(&out) != hex {
        return Err("the bytes do not match their recorded SHA-256".into());
    }
    Ok(out)
}

/// Moves sled's leftover snapshot files out of `db_dir` into `<data dir>/set-aside/`: every
/// `snap.*.generating` (a snapshot cut short; sled would read it as the newest and call the
/// database corrupt) and every `snap.*` too short to hold a snapshot's length and checksum.
/// Returns where each went. The caller holds the data dir's lock, so no sled is writing them.
pub(crate) fn set_aside_broken_snapshots(
    data_dir: &Path,
    db_dir: &Path,
) -> Result<Vec<PathBuf>, StoreError> {
    let Ok(entries) = std::fs::read_dir(db_dir) else {
        return Ok(Vec::new());
    };
    let mut moved = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if !name.starts_with("snap.") {
            continue;
        }
        let short = entry.metadata().map(|m| m.len() <= 12).unwrap_or(false);
        if !(name.ends_with(".generating") || short) {
            continue;
        }
        let aside = data_dir.join(ASIDE_DIR);
        std::fs::create_dir_all(&aside).map_err(|e| StoreError::io(&aside, e))?;
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0);
        let dest = aside.join(format!("{name}.{stamp}"));
        std::fs::rename(entry.path(), &dest).map_err(|e| StoreError::io(entry.path(), e))?;
        moved.push(dest);
    }
    Ok(moved)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_disk_is_refused_before_writing() {
        let dir = tempfile::tempdir().unwrap();
        let err = write_tensors(|_| Ok(1000), dir.path(), "ab", b"bytes", "adapter x").unwrap_err();
        match &err {
            StoreError::DiskFull {
                available, needed, ..
            } => {
                assert_eq!(*available, 1000);
                assert_eq!(*needed, 5 + HEADROOM);
            }
            other => panic!("{other:?}"),
        }
        let msg = err.to_string();
        assert!(msg.contains(&dir.path().display().to_string()), "{msg}");
        assert!(
            msg.contains("adapter x") && msg.contains("bytes needed"),
            "{msg}"
        );
        assert!(!dir.path().join(TENSORS_DIR).exists());
    }

    #[test]
    fn a_damaged_file_fails_its_check() {
        let dir = tempfile::tempdir().unwrap();
        let hex = sha256_hex(b"tensors");
        write_tensors(statvfs_available, dir.path(), &hex, b"tensors", "x").unwrap();
        let path = tensor_path(dir.path(), &hex);
        assert_eq!(read_checked(&path, &hex, 7).unwrap(), b"tensors");
        std::fs::write(&path, b"tensorz").unwrap();
        assert!(read_checked(&path, &hex, 7)
            .unwrap_err()
            .contains("SHA-256"));
        std::fs::write(&path, b"tensor").unwrap();
        assert!(read_checked(&path, &hex, 7)
            .unwrap_err()
            .contains("6 bytes"));
        // Rewriting repairs it.
        write_tensors(statvfs_available, dir.path(), &hex, b"tensors", "x").unwrap();
        assert!(read_checked(&path, &hex, 7).is_ok());
    }

    #[test]
    fn leftover_snapshots_are_moved_not_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("db");
        std::fs::create_dir_all(&db).unwrap();
        std::fs::write(db.join("snap.00000000000000A1.generating"), b"").unwrap();
        std::fs::write(
            db.join("snap.00000000000000A2.generating"),
            b"partial bytes",
        )
        .unwrap();
        std::fs::write(db.join("snap.00000000000000A0"), b"a whole snapshot, long").unwrap();
        std::fs::write(db.join("conf"), b"x").unwrap();
        let moved = set_aside_broken_snapshots(dir.path(), &db).unwrap();
        assert_eq!(moved.len(), 2, "{moved:?}");
        assert!(db.join("snap.00000000000000A0").is_file());
        assert!(db.join("conf").is_file());
        let aside: Vec<_> = std::fs::read_dir(dir.path().join(ASIDE_DIR))
            .unwrap()
            .flatten()
            .collect();
        assert_eq!(aside.len(), 2);
    }
}
