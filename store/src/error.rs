//! The store's error type: one variant per thing a user can act on, each message saying what
//! to do next.

use std::path::PathBuf;

use crate::envelope::EnvelopeError;

/// Everything that can go wrong in the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "data dir {dir} exists but is not a directory; remove or rename it, or pass --data-dir \
         (or set SOUP_HOME) to a directory"
    )]
    NotADirectory { dir: PathBuf },

    #[error(
        "cannot use data dir {dir}: {source}; check that it is writable and the disk has free \
         space, or pass --data-dir (or set SOUP_HOME) to another directory"
    )]
    DataDir {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error(
        "data dir {dir} is in use by another soup process{}; close that process first, or \
         pass --data-dir to use another directory",
        pid.map(|p| format!(" (pid {p})")).unwrap_or_default()
    )]
    Locked { dir: PathBuf, pid: Option<u32> },

    #[error(
        "the database in {dir} has schema version {found}, newer than the {supported} this soup \
         understands; upgrade soup (nothing was changed)"
    )]
    NewerSchema {
        dir: PathBuf,
        found: u32,
        supported: u32,
    },

    #[error(
        "corrupt value in tree `{tree}` at {key}: {reason}; the rest of the database is \
         readable: export it with `soup export`, then delete this entry"
    )]
    Corrupt {
        tree: &'static str,
        key: String,
        #[source]
        reason: EnvelopeError,
    },

    #[error("{what} `{name}` not found; list what exists with `soup {what}s list`")]
    NotFound { what: &'static str, name: String },

    #[error("invalid {what} `{name}`: {why}")]
    InvalidName {
        what: &'static str,
        name: String,
        why: &'static str,
    },

    /// sled refused to open its files. Nothing was deleted, and the advice keeps it that way:
    /// a full disk or a stray file is far more common than lost data.
    #[error(
        "the database in {dir} cannot be opened ({detail}); soup changed nothing. Keep a copy \
         of {dir}/db before anything else; if the disk was full, free some space and retry; if \
         it still fails, open a copy of your last `soup export` with `soup import` under a new \
         --data-dir and keep {dir}/db for recovery"
    )]
    Damaged { dir: PathBuf, detail: String },

    /// The filesystem of the data dir is (about to be) full. Raised before a write when
    /// statvfs shows too little room, or when a write fails with ENOSPC.
    #[error(
        "the disk holding data dir {dir} is full: {available} bytes free, about {needed} bytes \
         needed for {what}; nothing was half-written. Free some space (or pass --data-dir to a \
         disk with room) and retry"
    )]
    DiskFull {
        dir: PathBuf,
        what: String,
        needed: u64,
        available: u64,
    },

    /// An adapter's tensor file is missing or does not match its recorded SHA-256: only that
    /// adapter is lost, everything else in the store stays usable.
    #[error(
        "the tensors of adapter `{name}` are damaged ({reason}; file {path}); the rest of the \
         store is fine: delete it with `soup adapter delete {name}` and import or train it again"
    )]
    DamagedTensors {
        name: String,
        path: PathBuf,
        reason: String,
    },

    #[error(
        "database error: {0}; if the disk is full, free some space and retry (acknowledged \
         writes are safe)"
    )]
    Db(#[from] sled::Error),

    #[error("cannot encode a {what} for the database: {source}")]
    Encode {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },

    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("cannot import {path}: {reason}; fix or remove that file and import again")]
    Import { path: PathBuf, reason: String },
}

impl StoreError {
    /// True for the errors that lose one item (a value, an adapter's tensors) but leave the
    /// rest of the store readable: listings and exports skip and report them.
    pub fn is_item_damage(&self) -> bool {
        matches!(
            self,
            StoreError::Corrupt { .. } | StoreError::DamagedTensors { .. }
        )
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        StoreError::Io {
            path: path.into(),
            source,
        }
    }
}
