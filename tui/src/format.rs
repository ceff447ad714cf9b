//! Text formatters that the command line and the dashboard share, so that a size or a date
//! reads the same in `soup adapter list` and on the Adapters screen.

use soup_store::Timestamp;

/// `YYYY-MM-DD HH:MM` in UTC, so that output and snapshots do not depend on the machine's zone.
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

/// `YYYY-MM-DDTHH-MM-SS.ffffff` in UTC: Python's `datetime.isoformat()` with the colons made
/// dashes, the date part of lm-evaluation-harness's output file names.
pub fn file_date_id(ms: Timestamp) -> String {
    let secs = ms / 1000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}-{:02}-{:02}.{:06}",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60,
        (ms % 1000) * 1000
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

/// `12.3 MB`-style sizes in decimal (SI) units: 1 kB = 1,000 bytes. Decimal because the
/// sizes users compare ours with are decimal too: the Hugging Face Hub's file sizes (a
/// "269 MB" model there is 269 MB here) and the disk sizes that `df -H` and file managers show.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_utc_calendar_dates() {
        assert_eq!(date_time(0), "1970-01-01 00:00");
        assert_eq!(date_time(1_732_792_800_000), "2024-11-28 11:20");
        // 2024-02-29 12:34:00 UTC
        assert_eq!(date_time(1_709_210_040_000), "2024-02-29 12:34");
        assert_eq!(
            file_date_id(1_709_210_041_007),
            "2024-02-29T12-34-01.007000"
        );
    }

    #[test]
    fn sizes_are_decimal_with_si_labels() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(999), "999 B");
        assert_eq!(bytes(2048), "2.0 kB");
        assert_eq!(bytes(1_500_000), "1.5 MB");
        assert_eq!(bytes(3_686_400), "3.7 MB");
    }
}
