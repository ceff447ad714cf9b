//! Small text formatters shared by the screens: short run ids, durations, names of kinds and
//! states; dates and byte sizes come from `crate::format`, which the command line uses too.

use soup_store::{AdapterMethod, AdapterRecord, RunId, RunKind, RunStatus};

pub use crate::format::{bytes, date_time};

/// The last 6 characters of a run id: the random part of the ULID, enough to tell runs
/// apart on screen (`soup runs` accepts suffixes too).
pub fn short_id(id: RunId) -> String {
    let s = id.to_string();
    s[s.len().saturating_sub(6)..].to_string()
}

/// `1h02m`, `3m05s`, `12s`.
pub fn duration_s(secs: f64) -> String {
    if !secs.is_finite() || secs < 0.0 {
        return "?".into();
    }
    let s = secs.round() as u64;
    if s >= 3600 {
        format!("{}h{:02}m", s / 3600, (s % 3600) / 60)
    } else if s >= 60 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{s}s")
    }
}

/// The rank of an adapter as one figure, or `min-max` when its modules differ.
pub fn rank(adapter: &AdapterRecord) -> String {
    let min = adapter.modules.iter().map(|m| m.rank).min();
    let max = adapter.modules.iter().map(|m| m.rank).max();
    match (min, max) {
        (Some(a), Some(b)) if a == b => a.to_string(),
        (Some(a), Some(b)) => format!("{a}-{b}"),
        _ => "-".into(),
    }
}

pub fn method(m: AdapterMethod) -> &'static str {
    match m {
        AdapterMethod::Trained => "trained",
        AdapterMethod::Cat => "cat",
        AdapterMethod::Merge => "merge",
        AdapterMethod::Import => "import",
    }
}

pub fn status(s: RunStatus) -> &'static str {
    match s {
        RunStatus::Queued => "queued",
        RunStatus::Running => "running",
        RunStatus::Done => "done",
        RunStatus::Failed => "failed",
        RunStatus::Cancelled => "cancelled",
    }
}

pub fn kind(k: RunKind) -> &'static str {
    match k {
        RunKind::Train => "train",
        RunKind::Cat => "cat",
        RunKind::Merge => "merge",
        RunKind::Eval => "eval",
    }
}

/// Cuts `text` to at most `width` characters, marking the cut with `…`.
pub fn ellipsize(text: &str, width: usize) -> String {
    if text.chars().count() <= width {
        return text.to_string();
    }
    if width == 0 {
        return String::new();
    }
    let mut out: String = text.chars().take(width - 1).collect();
    out.push('…');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_cuts_read_well() {
        assert_eq!(duration_s(3725.0), "1h02m");
        assert_eq!(duration_s(65.0), "1m05s");
        assert_eq!(duration_s(f64::NAN), "?");
        assert_eq!(ellipsize("abcdef", 4), "abc…");
    }
}
