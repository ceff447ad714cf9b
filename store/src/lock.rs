//! Exclusive ownership of a data dir. sled locks its own file too, but its error is an
//! untyped I/O message; this lock comes first, so a second soup gets [`StoreError::Locked`]
//! with the holder's pid (written into the lock file) instead of a hang or a panic.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use fs2::FileExt;

use crate::StoreError;

/// Name of the lock file in the data dir; it holds the pid of the process that owns the dir.
pub const LOCK_FILE: &str = "soup.pid";

/// Holds the lock for as long as it lives: the OS releases it when the file is closed,
/// including when the process is killed, so a stale pid file never blocks anyone.
#[derive(Debug)]
pub struct DirLock {
    _file: File,
}

/// Takes the lock of `dir` (which must exist) and writes our pid into it.
pub fn acquire(dir: &Path) -> Result<DirLock, StoreError> {
    let path: PathBuf = dir.join(LOCK_FILE);
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|source| StoreError::DataDir {
            dir: dir.to_path_buf(),
            source,
        })?;
    if file.try_lock_exclusive().is_err() {
        let mut text = String::new();
        let pid = file
            .read_to_string(&mut text)
            .ok()
            .and_then(|_| text.trim().parse::<u32>().ok());
        return Err(StoreError::Locked {
            dir: dir.to_path_buf(),
            pid,
        });
    }
    let written = file
        .set_len(0)
        .and_then(|_| file.seek(SeekFrom::Start(0)))
        .and_then(|_| writeln!(file, "{}", std::process::id()))
        .and_then(|_| file.sync_all());
    written.map_err(|source| StoreError::DataDir {
        dir: dir.to_path_buf(),
        source,
    })?;
    Ok(DirLock { _file: file })
}
