//! Times as an operator reads them: "3m ago", "in 40s", "now". Pure: the
//! caller passes the time it is now.

use chrono::{DateTime, Utc};

/// A length of time in its largest unit: "40s", "14m", "3h", "2d".
pub fn span(d: chrono::Duration) -> String {
    let s = d.num_seconds().abs();
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m", s / 60),
        3600..86400 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86400),
    }
}

/// "3m ago", "in 40s", "now".
pub fn relative(t: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let d = now - t;
    if d.num_milliseconds().abs() < 1000 {
        "now".into()
    } else if d > chrono::Duration::zero() {
        format!("{} ago", span(d))
    } else {
        format!("in {}", span(d))
    }
}

/// [`relative`], or "-" for no time.
pub fn rel(t: Option<DateTime<Utc>>, now: DateTime<Utc>) -> String {
    t.map(|t| relative(t, now)).unwrap_or_else(|| "-".into())
}

#[cfg(test)]
mod tests {
    use chrono::{Duration, TimeZone};

    use super::*;

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 1, 1, 12, 0, 0).unwrap()
    }

    #[test]
    fn relative_times() {
        assert_eq!(relative(now() - Duration::minutes(3), now()), "3m ago");
        assert_eq!(relative(now() + Duration::seconds(40), now()), "in 40s");
        assert_eq!(relative(now(), now()), "now");
        assert_eq!(relative(now() - Duration::hours(26), now()), "1d ago");
        assert_eq!(span(Duration::minutes(14)), "14m");
        assert_eq!(span(Duration::seconds(7200)), "2h");
        assert_eq!(rel(None, now()), "-");
    }
}
