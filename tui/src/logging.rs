//! Where the `tracing` events of soup's crates go (warnings such as a damaged cached download
//! or a GGUF tensor converted with a caveat). Commands write them to stderr beside their own
//! messages; the dashboard writes them to `soup.log` in the data dir, because a line on stderr
//! would be painted over its screen. Which events pass: `RUST_LOG` when it is set (the usual
//! env-filter syntax, e.g. `RUST_LOG=soup_core=debug`), else `-v` (info), `-vv` (debug),
//! `-vvv` (trace), else warnings and errors only.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use tracing_subscriber::EnvFilter;

/// Where the events are written.
pub enum Sink {
    Stderr,
    /// Appended to this file; nothing is written if it cannot be opened.
    File(PathBuf),
}

/// The log file of the dashboard in a data dir.
pub fn dashboard_log(data_dir: &Path) -> PathBuf {
    data_dir.join("soup.log")
}

/// The filter directives: `RUST_LOG` when it holds any, else the level `-v` asks for.
pub fn directives(verbose: u8, rust_log: Option<&str>) -> String {
    match rust_log.map(str::trim) {
        Some(env) if !env.is_empty() => env.to_string(),
        _ => level(verbose).to_string(),
    }
}

fn level(verbose: u8) -> &'static str {
    match verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    }
}

/// The filter for `directives`; a `RUST_LOG` it cannot parse falls back to the `-v` level
/// with a note on stderr rather than silencing the warnings.
pub fn filter(verbose: u8, rust_log: Option<&str>) -> EnvFilter {
    let wanted = directives(verbose, rust_log);
    EnvFilter::try_new(&wanted).unwrap_or_else(|e| {
        eprintln!(
            "warning: RUST_LOG={wanted:?} is not a valid filter ({e}); logging at {} instead",
            level(verbose)
        );
        EnvFilter::new(level(verbose))
    })
}

/// Installs the global subscriber. Called once, first thing in `main`.
pub fn init(verbose: u8, sink: Sink) {
    let rust_log = std::env::var("RUST_LOG").ok();
    let filter = filter(verbose, rust_log.as_deref());
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    let installed = match sink {
        Sink::Stderr => builder
            .without_time()
            .with_ansi(std::io::stderr().is_terminal())
            .with_writer(std::io::stderr)
            .try_init(),
        Sink::File(path) => {
            let file = path
                .parent()
                .map_or(Ok(()), std::fs::create_dir_all)
                .and_then(|()| {
                    std::fs::OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(&path)
                });
            match file {
                Ok(f) => builder
                    .with_ansi(false)
                    .with_writer(Mutex::new(f))
                    .try_init(),
                // The dashboard runs without a log rather than not at all.
                Err(_) => Ok(()),
            }
        }
    };
    // Only fails if a subscriber is already installed, which `main` never does twice.
    let _ = installed;
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn rust_log_wins_over_verbose_and_warn_is_the_default() {
        assert_eq!(directives(0, None), "warn");
        assert_eq!(directives(1, None), "info");
        assert_eq!(directives(2, None), "debug");
        assert_eq!(directives(7, None), "trace");
        assert_eq!(directives(0, Some("  ")), "warn");
        assert_eq!(directives(2, Some("soup_core=trace")), "soup_core=trace");
    }

    #[test]
    fn an_unparsable_rust_log_falls_back_to_the_verbose_level() {
        assert_eq!(filter(1, Some("=[")).to_string(), "info");
    }

    /// A writer into a shared buffer, to see what the subscriber lets through.
    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buffer {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn the_default_filter_passes_warnings_and_drops_info() {
        let buf = Buffer::default();
        let writer = buf.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter(filter(0, None))
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            tracing::warn!("cached wheel unusable");
            tracing::info!("chatty detail");
        });
        let out = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        assert!(
            out.contains("WARN") && out.contains("cached wheel unusable"),
            "{out}"
        );
        assert!(!out.contains("chatty detail"), "{out}");
    }
}
