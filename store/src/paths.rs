//! Where the data lives: every soup binary resolves its data dir the same way, so the rule is
//! kept here, beside the database it locates.

use std::ffi::OsString;
use std::path::PathBuf;

/// The data dir: the `--data-dir` flag if given, else `$SOUP_HOME`, else the platform data dir
/// (`$XDG_DATA_HOME/soup`, else `~/.local/share/soup`; `~/Library/Application Support/soup` on
/// macOS), else `./soup-data` when not even `$HOME` is set.
pub fn data_dir(flag: Option<PathBuf>) -> PathBuf {
    resolve(
        flag,
        std::env::var_os("SOUP_HOME"),
        std::env::var_os("XDG_DATA_HOME"),
        std::env::var_os("HOME"),
    )
}

fn non_empty(v: Option<OsString>) -> Option<OsString> {
    v.filter(|s| !s.is_empty())
}

/// [`data_dir`] with the environment passed in, so it is testable without touching it.
fn resolve(
    flag: Option<PathBuf>,
    soup_home: Option<OsString>,
    xdg_data_home: Option<OsString>,
    home: Option<OsString>,
) -> PathBuf {
    if let Some(flag) = flag {
        return flag;
    }
    if let Some(dir) = non_empty(soup_home) {
        return PathBuf::from(dir);
    }
    if cfg!(target_os = "macos") {
        if let Some(home) = non_empty(home) {
            return PathBuf::from(home)
                .join("Library")
                .join("Application Support")
                .join("soup");
        }
        return PathBuf::from("soup-data");
    }
    // XDG says a relative XDG_DATA_HOME is invalid and must be ignored.
    if let Some(dir) = non_empty(xdg_data_home).map(PathBuf::from) {
        if dir.is_absolute() {
            return dir.join("soup");
        }
    }
    match non_empty(home) {
        Some(home) => PathBuf::from(home)
            .join(".local")
            .join("share")
            .join("soup"),
        None => PathBuf::from("soup-data"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(s: &str) -> Option<OsString> {
        Some(OsString::from(s))
    }

    #[test]
    fn flag_beats_soup_home_beats_platform() {
        assert_eq!(
            resolve(Some("/f".into()), os("/s"), os("/x"), os("/h")),
            PathBuf::from("/f")
        );
        assert_eq!(
            resolve(None, os("/s"), os("/x"), os("/h")),
            PathBuf::from("/s")
        );
        if !cfg!(target_os = "macos") {
            assert_eq!(
                resolve(None, os(""), os("/x"), os("/h")),
                PathBuf::from("/x/soup")
            );
            assert_eq!(
                resolve(None, None, os("rel"), os("/h")),
                PathBuf::from("/h/.local/share/soup")
            );
            assert_eq!(resolve(None, None, None, None), PathBuf::from("soup-data"));
        }
    }
}
