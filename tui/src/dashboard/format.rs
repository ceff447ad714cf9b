//! Small text formatters shared by the screens: dates (UTC, so screens and snapshots do not
//! depend on the machine's zone), byte sizes, short run ids, durations.

use soup_store::{AdapterMethod, AdapterRecord, RunId, RunKind, RunStatus, Timestamp};

/// `YYYY-MM-DD HH:MM` in UTC.
pub fn date_time(ms: Timestamp) -> String {
    let secs = ms / 1000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}",
        rem / 3600,
        (rem % 3600) / 60
    )
}

/// Days since 1970-01-01 to (year, month, day), Howard Hinnant's algorithm.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// `12.3 MB`-style sizes.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KB", "MB", "GB", "TB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit + 1 < UNITS.len() {
        value /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

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
    fn dates_are_utc_calendar_dates() {
        assert_eq!(date_time(0), "1970-01-01 00:00");
        // 2024-02-29 12:34:00 UTC
        assert_eq!(date_time(1_709_210_040_000), "2024-02-29 12:34");
    }

    #[test]
    fn sizes_and_durations_read_well() {
        assert_eq!(bytes(999), "999 B");
        assert_eq!(bytes(1_500_000), "1.5 MB");
        assert_eq!(duration_s(3725.0), "1h02m");
        assert_eq!(duration_s(65.0), "1m05s");
        assert_eq!(duration_s(f64::NAN), "?");
        assert_eq!(ellipsize("abcdef", 4), "abc…");
    }
}
