//! Timestamps: milliseconds since the Unix epoch, RFC 3339 in JSON.

use std::fmt;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A point in time with millisecond precision, UTC.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(pub i64);

impl Timestamp {
    /// The current time.
    pub fn now() -> Self {
        Timestamp(Utc::now().timestamp_millis())
    }

    /// Milliseconds since the Unix epoch.
    pub fn millis(self) -> i64 {
        self.0
    }

    fn to_datetime(self) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(self.0).unwrap_or_default()
    }

    /// `2026-11-22T06:01:54.123Z`.
    pub fn to_rfc3339(self) -> String {
        self.to_string()
    }

    /// `2026-11-22 06:01 UTC`, for pages.
    pub fn to_display(self) -> String {
        self.human().to_string()
    }

    /// Writes `2026-11-22 06:01 UTC` without allocating (templates).
    pub fn human(self) -> Human {
        Human(self)
    }

    /// Parses any RFC 3339 time, whatever its offset.
    pub fn parse_rfc3339(s: &str) -> Result<Self, chrono::ParseError> {
        if let Some(t) = parse_canonical(s) {
            return Ok(t);
        }
        DateTime::parse_from_rfc3339(s).map(|t| Timestamp(t.timestamp_millis()))
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
/// `days_from_civil`).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// (year, month, day, hour, minute, second, milli) of a time in years 0-9999.
fn civil(millis: i64) -> Option<(i64, i64, i64, i64, i64, i64, i64)> {
    let days = millis.div_euclid(86_400_000);
    let in_day = millis.rem_euclid(86_400_000);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (0..=9_999).contains(&y).then_some((
        y,
        m,
        d,
        in_day / 3_600_000,
        in_day / 60_000 % 60,
        in_day / 1_000 % 60,
        in_day % 1_000,
    ))
}

/// The canonical `YYYY-MM-DDTHH:MM:SS.mmmZ` form, or `None` for anything else
/// (which the general parser then handles).
fn parse_canonical(s: &str) -> Option<Timestamp> {
    let b = s.as_bytes();
    if b.len() != 24
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b'T'
        || b[13] != b':'
        || b[16] != b':'
        || b[19] != b'.'
        || b[23] != b'Z'
    {
        return None;
    }
    let num = |from: usize, to: usize| -> Option<i64> {
        b[from..to].iter().try_fold(0i64, |acc, c| {
            c.is_ascii_digit().then(|| acc * 10 + i64::from(c - b'0'))
        })
    };
    let (y, mo, d) = (num(0, 4)?, num(5, 7)?, num(8, 10)?);
    let (h, mi, sec, ms) = (num(11, 13)?, num(14, 16)?, num(17, 19)?, num(20, 23)?);
    let month_days = [
        31,
        if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 {
            29
        } else {
            28
        },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    if !(1..=12).contains(&mo)
        || d < 1
        || d > month_days[(mo - 1) as usize]
        || h > 23
        || mi > 59
        || sec > 59
    {
        return None;
    }
    let days = days_from_civil(y, mo, d);
    Some(Timestamp(
        ((days * 24 + h) * 60 + mi) * 60_000 + sec * 1_000 + ms,
    ))
}

/// RFC 3339 with milliseconds, UTC: `2026-11-22T06:01:54.123Z`.
/// The canonical `YYYY-MM-DDTHH:MM:SS.mmmZ` form of years 0-9999, written
/// digit by digit: every task written formats three of these, every task
/// read and served two, and `write!` with padded fields cost a fifth of a
/// batch's writer time.
fn canonical(millis: i64) -> Option<[u8; 24]> {
    let (y, mo, d, h, mi, s, ms) = civil(millis)?;
    let mut out = *b"0000-00-00T00:00:00.000Z";
    let mut put = |at: usize, width: usize, mut n: i64| {
        for i in (at..at + width).rev() {
            // Each field is within 0..10^width, so each digit is 0-9.
            out[i] = b'0' + (n % 10) as u8;
            n /= 10;
        }
    };
    put(0, 4, y);
    put(5, 2, mo);
    put(8, 2, d);
    put(11, 2, h);
    put(14, 2, mi);
    put(17, 2, s);
    put(20, 3, ms);
    Some(out)
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match canonical(self.0) {
            // Only ASCII digits and separators: always UTF-8.
            Some(b) => f.write_str(std::str::from_utf8(&b).map_err(|_| fmt::Error)?),
            None => f.write_str(
                &self
                    .to_datetime()
                    .to_rfc3339_opts(SecondsFormat::Millis, true),
            ),
        }
    }
}

/// A timestamp as people read it: `2026-11-22 06:01 UTC`.
#[derive(Clone, Copy, Debug)]
pub struct Human(Timestamp);

impl fmt::Display for Human {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match civil(self.0.0) {
            Some((y, mo, d, h, mi, _, _)) => write!(f, "{y:04}-{mo:02}-{d:02} {h:02}:{mi:02} UTC"),
            None => write!(f, "{}", self.0.to_datetime().format("%Y-%m-%d %H:%M UTC")),
        }
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match canonical(self.0) {
            Some(b) => s.serialize_str(std::str::from_utf8(&b).map_err(serde::ser::Error::custom)?),
            None => s.serialize_str(&self.to_rfc3339()),
        }
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = std::borrow::Cow::<str>::deserialize(d)?;
        Timestamp::parse_rfc3339(&s)
            .map_err(|e| serde::de::Error::custom(format!("invalid timestamp {s:?}: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_and_parses_rfc3339() -> Result<(), chrono::ParseError> {
        let t = Timestamp(1_795_327_314_123);
        assert_eq!(t.to_rfc3339(), "2026-11-22T06:01:54.123Z");
        assert_eq!(t.to_display(), "2026-11-22 06:01 UTC");
        assert_eq!(Timestamp::parse_rfc3339("2026-11-22T06:01:54.123Z")?, t);
        assert_eq!(
            Timestamp::parse_rfc3339("2026-11-22T07:01:54.123+01:00")?,
            t
        );
        Ok(())
    }

    #[test]
    fn fast_paths_agree_with_chrono() -> Result<(), chrono::ParseError> {
        // From 1900 to 2200 in uneven steps, plus the edges of the fast path.
        let mut t = -2_208_988_800_000_i64;
        let mut samples = vec![0, -1, 1, -62_167_219_200_000, 253_402_300_799_999];
        while t < 7_258_118_400_000 {
            samples.push(t);
            t += 86_399_999 * 7 + 12_345;
        }
        for ms in samples {
            let ts = Timestamp(ms);
            let want = DateTime::from_timestamp_millis(ms)
                .unwrap_or_default()
                .to_rfc3339_opts(SecondsFormat::Millis, true);
            assert_eq!(ts.to_rfc3339(), want, "{ms}");
            assert_eq!(
                serde_json::to_string(&ts).ok(),
                Some(format!("\"{want}\"")),
                "{ms}"
            );
            let display = DateTime::from_timestamp_millis(ms)
                .unwrap_or_default()
                .format("%Y-%m-%d %H:%M UTC")
                .to_string();
            assert_eq!(ts.to_display(), display, "{ms}");
            assert_eq!(parse_canonical(&want), Some(ts), "{want}");
            assert_eq!(Timestamp::parse_rfc3339(&want)?, ts);
        }
        // Outside years 0-9999 the general path still answers.
        assert_eq!(
            Timestamp(-62_167_219_200_001).to_rfc3339(),
            "-0001-12-31T23:59:59.999Z"
        );
        Ok(())
    }

    #[test]
    fn canonical_parser_leaves_odd_forms_to_chrono() {
        for odd in [
            "2026-02-30T00:00:00.000Z",
            "2026-13-01T00:00:00.000Z",
            "2026-11-22T24:00:00.000Z",
            "2026-11-22T06:01:54Z",
            "2026-11-22t06:01:54.123z",
        ] {
            assert_eq!(parse_canonical(odd), None, "{odd}");
        }
        assert!(Timestamp::parse_rfc3339("2026-02-30T00:00:00.000Z").is_err());
    }

    #[test]
    fn rejects_garbage() {
        assert!(Timestamp::parse_rfc3339("yesterday").is_err());
    }
}
