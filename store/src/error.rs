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

    #[error(
        "the database in {dir} is damaged ({detail}); move {dir}/db aside and import your last \
         export (`soup import`), or start afresh"
    )]
    Damaged { dir: PathBuf, detail: String },

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
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        StoreError::Io {
            path: path.into(),
            source,
        }
    }
}
