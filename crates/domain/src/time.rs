//! Unix timestamps and the textual forms the wire uses (ISO 8601 `Z`, `YYYY-MM-DD`).

/// Seconds since the Unix epoch, UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
pub struct Timestamp(pub i64);

/// A civil UTC date and time broken into fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Civil {
    year: i64,
    month: u32,
    day: u32,
    hour: u32,
    minute: u32,
    second: u32,
}

impl Timestamp {
    fn civil(self) -> Civil {
        let days = self.0.div_euclid(86_400);
        let secs = self.0.rem_euclid(86_400);
        // Howard Hinnant's days-to-civil algorithm.
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097);
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = doy - (153 * mp + 2) / 5 + 1;
        let month = if mp < 10 { mp + 3 } else { mp - 9 };
        let year = yoe + era * 400 + i64::from(month <= 2);
        // The casts below are of values bounded by the algorithm (day ≤ 31, month ≤ 12, secs < 86400).
        Civil {
            year,
            month: month as u32,
            day: day as u32,
            hour: (secs / 3600) as u32,
            minute: ((secs % 3600) / 60) as u32,
            second: (secs % 60) as u32,
        }
    }

    /// The UTC date as `YYYY-MM-DD`, as TC3 credential scopes carry it.
    pub fn utc_date(self) -> String {
        let c = self.civil();
        format!("{:04}-{:02}-{:02}", c.year, c.month, c.day)
    }

    /// Parses `YYYY-MM-DDTHH:MM:SSZ` (or with a space for the `T`, and the `Z` optional), the
    /// forms clients send in time filters.
    pub fn parse_iso8601(s: &str) -> Option<Self> {
        let b = s.as_bytes();
        if !(b.len() == 19 || (b.len() == 20 && b[19] == b'Z')) || !matches!(b[10], b'T' | b' ') {
            return None;
        }
        let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
        let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
        let (h, mi, se) = (num(11..13)?, num(14..16)?, num(17..19)?);
        if b[4] != b'-' || b[7] != b'-' || b[13] != b':' || b[16] != b':' {
            return None;
        }
        if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || se > 59 {
            return None;
        }
        // Howard Hinnant's days-from-civil algorithm.
        let y = if mo <= 2 { y - 1 } else { y };
        let era = y.div_euclid(400);
        let yoe = y - era * 400;
        let doy = (153 * (if mo > 2 { mo - 3 } else { mo + 9 }) + 2) / 5 + d - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        let days = era * 146_097 + doe - 719_468;
        Some(Self(days * 86_400 + h * 3600 + mi * 60 + se))
    }

    /// ISO 8601 in UTC with a `Z`, as the API's `Timestamp ISO8601` fields are emitted.
    pub fn iso8601(self) -> String {
        let c = self.civil();
        format!("{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z", c.year, c.month, c.day, c.hour, c.minute, c.second)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_date_of_the_reference_vector_timestamp() {
        assert_eq!(Timestamp(1_551_113_065).utc_date(), "2019-02-25");
        assert_eq!(Timestamp(1_551_113_065).iso8601(), "2019-02-25T16:44:25Z");
    }

    #[test]
    fn parsing_inverts_formatting() {
        for t in [0, 951_782_400, 1_551_113_065, 1_795_305_600, -1] {
            assert_eq!(Timestamp::parse_iso8601(&Timestamp(t).iso8601()), Some(Timestamp(t)));
        }
        assert_eq!(Timestamp::parse_iso8601("2019-02-25 16:44:25"), Some(Timestamp(1_551_113_065)));
        for bad in ["2019-02-25", "2019-13-01T00:00:00Z", "2019-02-25T16:44:25+08", "x019-02-25T16:44:25Z"] {
            assert_eq!(Timestamp::parse_iso8601(bad), None, "{bad}");
        }
    }

    #[test]
    fn epoch_leap_days_and_negative_times() {
        assert_eq!(Timestamp(0).iso8601(), "1970-01-01T00:00:00Z");
        assert_eq!(Timestamp(951_782_400).utc_date(), "2000-02-29");
        assert_eq!(Timestamp(-1).iso8601(), "1969-12-31T23:59:59Z");
        assert_eq!(Timestamp(1_795_305_600).utc_date(), "2026-11-22");
    }
}
